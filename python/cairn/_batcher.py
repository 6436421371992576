"""Buffered, batched delivery of records to the tracking server by a background thread.

``Batcher.put`` only appends to an in-memory buffer, so logging never waits for the network.
A daemon thread sends what is buffered when 1000 records have accumulated, every
``flush_seconds``, when ``flush()`` asks, and at interpreter exit (``atexit``, bounded by
``exit_timeout_seconds``). Records are sent in order, in batches within the server's limits
(1000 metrics, 100 params, 100 tags).

Failures never lose records silently: a batch the server rejects (4xx) is not retried; a batch
that cannot be delivered (connection errors, 5xx) is retried with exponential back-off within a
time budget. Either way it then goes to the spill file (``_spill.py``) with a note on stderr.
Once a batch has exhausted its retries the server is considered down and later batches get a
single attempt each, so that a dead server does not make the buffer (and the exit) wait 30 s per
batch; the first success clears that state.

This module knows nothing about HTTP (it is given a ``send`` function) or about the Run API.
"""

from __future__ import annotations

import atexit
import collections
import os
import sys
import threading
import time
import weakref
from typing import Any, Callable, Deque, Dict, Iterable, List, NamedTuple, Optional

from ._client import CairnError
from ._config import Settings
from ._records import Metric, Param, Record, Tag, metric_json
from ._retry import RetryPolicy, call_with_retries
from ._spill import SpillFile

#: Server limits for one ``log-batch`` request.
MAX_METRICS = 1000
MAX_PARAMS = 100
MAX_TAGS = 100

#: Buffered records that make the background thread send without waiting for its timer.
SEND_THRESHOLD = 1000

#: Spill notices printed before they are rate-limited to one per ``_NOTICE_INTERVAL`` seconds.
_FREE_NOTICES = 5
_NOTICE_INTERVAL = 30.0


class Batch(NamedTuple):
    """A ``log-batch`` body and the number of records it carries (params/tags may be merged)."""

    body: Dict[str, Any]
    records: int


def make_batches(records: Iterable[Record]) -> List[Batch]:
    """Split records, in order, into bodies within the server's per-batch limits.

    Within one batch a param or tag logged twice is sent once, with its last value (the records
    are still counted, so flush accounting stays exact).
    """
    batches: List[Batch] = []
    metrics: List[Dict[str, Any]] = []
    params: Dict[str, str] = {}
    tags: Dict[str, str] = {}
    count = 0

    def close() -> None:
        nonlocal metrics, params, tags, count
        if count:
            body = {
                "metrics": metrics,
                "params": [{"key": k, "value": v} for k, v in params.items()],
                "tags": [{"key": k, "value": v} for k, v in tags.items()],
            }
            batches.append(Batch(body, count))
        metrics, params, tags, count = [], {}, {}, 0

    for record in records:
        if isinstance(record, Metric):
            if len(metrics) >= MAX_METRICS:
                close()
            metrics.append(metric_json(record))
        elif isinstance(record, Param):
            if record.key not in params and len(params) >= MAX_PARAMS:
                close()
            params[record.key] = record.value
        elif isinstance(record, Tag):
            if record.key not in tags and len(tags) >= MAX_TAGS:
                close()
            tags[record.key] = record.value
        else:  # pragma: no cover - a programming error inside the package
            raise TypeError(f"not a record: {record!r}")
        count += 1
    close()
    return batches


class Batcher:
    """Owns the buffer, the background sender thread and the spill file of one run."""

    def __init__(
        self,
        send: Callable[[Dict[str, Any]], None],
        spill: SpillFile,
        settings: Settings,
        *,
        target: str = "the tracking server",
        register_atexit: bool = True,
    ) -> None:
        """
        Args:
            send: posts one ``log-batch`` body; raises ``CairnError`` on failure.
            spill: where undeliverable batches go.
            settings: flush interval, retry budget, exit timeout.
            target: how to name the server in messages.
            register_atexit: flush at interpreter exit (off in some tests).
        """
        self._send = send
        self._spill = spill
        self._settings = settings
        self._policy = RetryPolicy(settings.retry_initial_seconds, settings.retry_total_seconds)
        self._target = target
        self._init_state()
        _live_batchers.add(self)
        if register_atexit:
            atexit.register(_close_at_exit, weakref.ref(self))

    def _init_state(self) -> None:
        """(Re)create the locks, buffer and counters (also in a forked child)."""
        self._cond = threading.Condition(threading.Lock())
        self._pending: Deque[Record] = collections.deque()
        self._held: Deque[Batch] = collections.deque()  # taken by the sender, not yet finished
        self._current: Optional[Batch] = None  # being sent right now
        self._enqueued = 0  # records ever accepted
        self._done = 0  # records sent or spilled
        self._flush_target = 0  # records up to this count must be sent without waiting
        self._closed = False
        self._abandoned = False
        self._exit_deadline: Optional[float] = None
        self._wake = threading.Event()  # interrupts back-off sleeps when closing
        self._thread: Optional[threading.Thread] = None
        self._server_down = False
        self.sent_records = 0
        self.spilled_records = 0
        self._unreported = 0
        self._notices = 0
        self._last_notice = 0.0

    # -- the script's side ------------------------------------------------------------------

    def put(self, records: List[Record]) -> None:
        """Buffer records for sending; returns at once (no network round trip)."""
        if not records:
            return
        with self._cond:
            self._enqueued += len(records)
            if not self._closed:
                self._pending.extend(records)
                self._ensure_sender()
                if len(self._pending) >= SEND_THRESHOLD:
                    self._cond.notify_all()
                return
        # Logged after the at-exit flush (from another at-exit handler): one direct attempt.
        for batch in make_batches(records):
            reason = self._deliver(batch, single_attempt=True)
            with self._cond:
                self._finish(batch, reason)

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Send everything buffered so far; wait until it is sent or spilled, at most ``timeout`` s.

        Returns True if every record logged before the call was handled (sent or spilled).
        """
        with self._cond:
            target = self._enqueued
            if self._done >= target:
                return True
            self._flush_target = max(self._flush_target, target)
            sender_running = self._ensure_sender()
            self._cond.notify_all()
        if not sender_running:  # e.g. threads can no longer start at interpreter shutdown
            self._drain_here()
        with self._cond:
            self._cond.wait_for(lambda: self._done >= target or self._abandoned, timeout)
            return self._done >= target

    def close(self, timeout: Optional[float] = None) -> None:
        """Flush and stop: wait at most ``timeout`` s (default: the exit timeout), then spill the rest."""
        if timeout is None:
            timeout = self._settings.exit_timeout_seconds
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._exit_deadline = time.monotonic() + timeout
            thread = self._thread
            self._cond.notify_all()
        self._wake.set()
        if thread is not None and thread.is_alive():
            # One request may still be under way when the deadline passes: allow its timeout.
            thread.join(timeout + self._settings.http_timeout_seconds + 1.0)
            if thread.is_alive():
                self._abandon()
        else:
            self._drain_here()
        self._summary()

    def stats(self) -> Dict[str, int]:
        """Counters for tests and diagnostics: records sent, spilled and still buffered."""
        with self._cond:
            return {
                "sent": self.sent_records,
                "spilled": self.spilled_records,
                "pending": self._enqueued - self._done,
            }

    # -- the sender thread ------------------------------------------------------------------

    def _ensure_sender(self) -> bool:
        """Start the sender thread if it is not running (lazily, and again after a fork). Lock held."""
        if self._thread is not None and self._thread.is_alive():
            return True
        thread = threading.Thread(target=self._run_sender, name="cairn-log-sender", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # interpreter shutting down: flush()/close() drain in their own thread
            self._thread = None
            return False
        self._thread = thread
        return True

    def _run_sender(self) -> None:
        try:
            self._sender_loop()
        except BaseException as error:  # pragma: no cover - a bug; say so rather than go quiet
            _stderr(f"cairn: the log sender stopped unexpectedly ({error!r}); the next log call restarts it")

    def _sender_loop(self) -> None:
        next_tick = time.monotonic() + self._settings.flush_seconds
        while True:
            with self._cond:
                while not self._due(next_tick):
                    self._cond.wait(max(0.0, next_tick - time.monotonic()))
                if self._abandoned or (self._closed and not self._pending):
                    return
                self._take_pending()
            next_tick = time.monotonic() + self._settings.flush_seconds
            self._deliver_held()

    def _due(self, next_tick: float) -> bool:
        """Whether the sender should send now. Lock held."""
        return (
            self._closed
            or self._abandoned
            or len(self._pending) >= SEND_THRESHOLD
            or (bool(self._pending) and self._flush_target > self._done)
            or time.monotonic() >= next_tick
        )

    def _take_pending(self) -> None:
        """Move the buffer into batches owned by the sender. Lock held."""
        if self._pending:
            self._held.extend(make_batches(self._pending))
            self._pending.clear()

    def _drain_here(self) -> None:
        """Send the buffer from the calling thread (when no sender thread can run)."""
        with self._cond:
            self._take_pending()
        self._deliver_held()

    def _deliver_held(self) -> None:
        while True:
            with self._cond:
                if self._abandoned or not self._held:
                    return
                batch = self._held.popleft()
                self._current = batch
            reason = self._deliver(batch)
            with self._cond:
                if self._abandoned:  # the closer gave up waiting and spilled this batch already
                    return
                self._current = None
                self._finish(batch, reason)

    def _deliver(self, batch: Batch, single_attempt: bool = False) -> Optional[str]:
        """Send one batch with retries; None when it arrived, else why it did not."""
        once = single_attempt or self._server_down
        try:
            call_with_retries(
                lambda: self._send(batch.body),
                self._policy,
                single_attempt=once,
                deadline=lambda: self._exit_deadline,
                sleep=self._sleep,
            )
        except CairnError as error:
            if not error.retryable:
                return f"the server rejected the batch, not retried: {error}"
            self._server_down = True
            if once:
                return f"the server is still unreachable: {error}"
            return f"gave up after retrying: {error}"
        except Exception as error:  # a bug must neither stop the sender nor lose the batch
            return f"unexpected error while sending: {error!r}"
        self._server_down = False
        return None

    def _sleep(self, seconds: float) -> None:
        """Back-off sleep that close() cuts short (the retry loop then re-checks the exit deadline)."""
        if self._wake.is_set():
            time.sleep(seconds)
        else:
            self._wake.wait(seconds)

    def _finish(self, batch: Batch, reason: Optional[str]) -> None:
        """Account for a batch that was sent (reason None) or must be spilled. Lock held."""
        if reason is None:
            self.sent_records += batch.records
        else:
            self._spill.write(batch.body, batch.records, reason)
            self.spilled_records += batch.records
            self._notice(batch.records, reason)
        self._done += batch.records
        self._cond.notify_all()

    def _abandon(self) -> None:
        """The exit deadline passed with the sender still busy: spill whatever it has not finished."""
        with self._cond:
            self._abandoned = True
            if self._current is not None:
                self._finish(
                    self._current,
                    "the exit deadline passed while this batch was being sent; "
                    "it may also have reached the server",
                )
                self._current = None
            self._take_pending()
            while self._held:
                self._finish(self._held.popleft(), "the exit deadline passed before it could be sent")

    # -- telling the user -------------------------------------------------------------------

    def _notice(self, records: int, reason: str) -> None:
        """One stderr line per spill, rate-limited after the first few. Lock held."""
        self._unreported += records
        now = time.monotonic()
        if self._notices >= _FREE_NOTICES and now - self._last_notice < _NOTICE_INTERVAL:
            return
        _stderr(
            f"cairn: {self._unreported} records not sent ({reason}); saved in {self._spill.path} "
            f"({self.spilled_records} there in all)"
        )
        self._unreported = 0
        self._notices += 1
        self._last_notice = now

    def _summary(self) -> None:
        with self._cond:
            if self.spilled_records:
                _stderr(
                    f"cairn: {self.spilled_records} records of this run could not be sent to "
                    f"{self._target}; they are in {self._spill.path}"
                )
                self._unreported = 0

    def _after_fork_in_child(self) -> None:
        """A forked child starts with an empty buffer (the parent sends its own records)."""
        self._init_state()


def _stderr(line: str) -> None:
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass


_live_batchers: "weakref.WeakSet[Batcher]" = weakref.WeakSet()


def _close_at_exit(ref: "weakref.ref[Batcher]") -> None:
    batcher = ref()
    if batcher is not None:
        batcher.close()


def _reset_after_fork() -> None:
    for batcher in list(_live_batchers):
        batcher._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
