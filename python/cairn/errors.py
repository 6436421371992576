"""The exceptions the SDK raises, in one place.

Every server error carries the server's own message (``{"error": {"code", "message"}}``) and is
raised as the subclass that matches its status, so callers can catch ``NotFound`` or
``Conflict`` without looking at numbers. The runtime's errors (``_client.py``) are the base.
"""

from __future__ import annotations

from ._client import (
    BadRequest,
    CairnError,
    Conflict,
    ConnectionFailed,
    Forbidden,
    NotFound,
    ServerError,
    Unauthorized,
)


class ServerUnreachable(ConnectionFailed):
    """No Cairn server answers at the URL; the message names it and how to start one."""

    def __init__(self, url: str, detail: str) -> None:
        self.url = url
        super().__init__(
            f"no Cairn server is reachable at {url} ({detail}). Start one with `cairn server` "
            "(its URL and admin token are then found automatically on this machine), or point "
            "CAIRN_URL (or Workspace(url=...)) at a running server"
        )


class RunFailed(CairnError):
    """A run ended ``Failed`` or ``Canceled`` while :meth:`SubmittedRun.wait_for_completion` waited.

    Attributes:
        run_id: the run.
        status: its final status.
        error: the server's explanation (exit code, signal, timeout …).
        log_tail: the last lines of the run's log.
    """

    def __init__(self, run_id: str, status: str, error: str, log_tail: str) -> None:
        self.run_id = run_id
        self.status = status
        self.error = error
        self.log_tail = log_tail
        last = log_tail.strip().rsplit("\n", 1)[-1]
        # The runner's error usually quotes the log's end already; do not print it twice.
        shown = log_tail.strip() and last not in error
        tail = f"\n--- last lines of the log ---\n{log_tail}" if shown else ""
        super().__init__(f"run {run_id} ended {status}: {error or 'no error was recorded'}{tail}")


__all__ = [
    "BadRequest",
    "CairnError",
    "Conflict",
    "ConnectionFailed",
    "Forbidden",
    "NotFound",
    "RunFailed",
    "ServerError",
    "ServerUnreachable",
    "Unauthorized",
]
