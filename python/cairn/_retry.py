"""Exponential back-off for calls to the tracking server.

Only errors the client marks as retryable (connection failures, timeouts, 5xx, 408, 429)
are retried; anything else is raised at once. The clock and the sleep are injectable so that
the policy can be tested without waiting.
"""

from __future__ import annotations

import time
from typing import Callable, NamedTuple, Optional, TypeVar

from ._client import CairnError

T = TypeVar("T")


class RetryPolicy(NamedTuple):
    """Delays start at ``initial_seconds`` and double; no new attempt starts after ``total_seconds``."""

    initial_seconds: float = 0.5
    total_seconds: float = 30.0


def call_with_retries(
    call: Callable[[], T],
    policy: RetryPolicy,
    *,
    single_attempt: bool = False,
    deadline: Callable[[], Optional[float]] = lambda: None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Run ``call`` until it succeeds, a non-retryable error occurs, or the time budget is spent.

    Args:
        call: the request to make.
        policy: initial delay and total budget.
        single_attempt: make one attempt only (used while the server is known to be down).
        deadline: returns an absolute ``clock()`` time after which no attempt may start
            (e.g. the at-exit deadline), or ``None``; consulted before every sleep.
        sleep: waits the given number of seconds (may return early; the budget is re-checked).
        clock: monotonic time source.

    Returns:
        What ``call`` returned.

    Raises:
        CairnError: the last error, when it is not retryable or the budget is exhausted.
    """
    budget_end = clock() + policy.total_seconds
    delay = policy.initial_seconds
    while True:
        try:
            return call()
        except CairnError as error:
            if not error.retryable or single_attempt:
                raise
            end = budget_end
            hard = deadline()
            if hard is not None:
                end = min(end, hard)
            remaining = end - clock()
            if remaining <= 0:
                raise
            sleep(min(delay, remaining))
            delay = delay * 2 if delay > 0 else 0.001
