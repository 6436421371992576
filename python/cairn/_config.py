"""Settings of the in-job runtime, read from the environment the job runner sets.

This module only reads and validates environment variables; it does no I/O beyond
reporting a malformed value on stderr (a bad tuning knob must never crash a training
script, so the default is used instead).
"""

from __future__ import annotations

import sys
from typing import Mapping, NamedTuple, Optional

# Identity of the run, set by the job runner.
ENV_TRACKING_URI = "CAIRN_TRACKING_URI"
ENV_WORKSPACE = "CAIRN_WORKSPACE"
ENV_RUN_ID = "CAIRN_RUN_ID"
ENV_RUN_TOKEN = "CAIRN_RUN_TOKEN"
ENV_EXPERIMENT = "CAIRN_EXPERIMENT"
# "1" when the runner owns the run's final status (complete() then only flushes).
ENV_RUN_MANAGED = "CAIRN_RUN_MANAGED"

# Tuning knobs (all in seconds).
ENV_FLUSH_SECONDS = "CAIRN_LOG_FLUSH_SECONDS"
ENV_RETRY_SECONDS = "CAIRN_LOG_RETRY_SECONDS"
ENV_RETRY_INITIAL_SECONDS = "CAIRN_LOG_RETRY_INITIAL_SECONDS"
ENV_EXIT_TIMEOUT_SECONDS = "CAIRN_LOG_EXIT_TIMEOUT_SECONDS"
ENV_HTTP_TIMEOUT_SECONDS = "CAIRN_HTTP_TIMEOUT_SECONDS"


class Settings(NamedTuple):
    """How the background logger batches, retries and gives up.

    Attributes:
        flush_seconds: the background thread sends what is buffered at least this often.
        retry_initial_seconds: first back-off delay after a failed send; it doubles each time.
        retry_total_seconds: time budget for one batch (attempts and sleeps) before it is
            written to the spill file.
        exit_timeout_seconds: how long the at-exit flush (and ``complete()``) may wait for
            the server before the remaining records are spilled.
        http_timeout_seconds: socket timeout of one HTTP request.
    """

    flush_seconds: float = 1.0
    retry_initial_seconds: float = 0.5
    retry_total_seconds: float = 30.0
    exit_timeout_seconds: float = 30.0
    http_timeout_seconds: float = 10.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> "Settings":
        """Read the ``CAIRN_LOG_*`` / ``CAIRN_HTTP_*`` variables, defaulting what is unset or invalid."""
        defaults = cls()
        return cls(
            flush_seconds=_seconds(environ, ENV_FLUSH_SECONDS, defaults.flush_seconds, minimum=0.001),
            retry_initial_seconds=_seconds(
                environ, ENV_RETRY_INITIAL_SECONDS, defaults.retry_initial_seconds, minimum=0.0
            ),
            retry_total_seconds=_seconds(
                environ, ENV_RETRY_SECONDS, defaults.retry_total_seconds, minimum=0.0
            ),
            exit_timeout_seconds=_seconds(
                environ, ENV_EXIT_TIMEOUT_SECONDS, defaults.exit_timeout_seconds, minimum=0.0
            ),
            http_timeout_seconds=_seconds(
                environ, ENV_HTTP_TIMEOUT_SECONDS, defaults.http_timeout_seconds, minimum=0.001
            ),
        )


def _seconds(environ: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    """Parse a duration in seconds; warn on stderr and use ``default`` if it is not a number >= minimum."""
    raw: Optional[str] = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (value >= minimum) or value == float("inf"):
        _warn(f"ignoring {name}={raw!r}: expected a number of seconds >= {minimum}; using {default}")
        return default
    return value


def _warn(message: str) -> None:
    try:
        sys.stderr.write(f"cairn: {message}\n")
    except (OSError, ValueError):  # stderr closed: nothing better to do
        pass
