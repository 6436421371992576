"""The last resort for records the server did not take: ``logs/cairn_unsent_<run_id>.jsonl``.

Each line is one JSON object per unsent batch::

    {"run_id": …, "workspace": …, "tracking_uri": …, "time": <ms>, "reason": "…",
     "records": <count>, "batch": {"metrics": […], "params": […], "tags": […]}}

``batch`` is exactly the ``log-batch`` body that failed (NaN and infinities as strings), so a
line can be posted again as is. The job runner keeps ``./logs``. If even this file cannot be
written, the lines go to stderr: records are never dropped without a trace.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from typing import Any, Dict

from ._records import now_ms


def spill_path(directory: str, run_id: str) -> str:
    """Absolute path of the spill file of ``run_id`` in ``directory`` (resolved against the cwd now)."""
    safe_id = re.sub(r"[^A-Za-z0-9._-]", "_", run_id) or "run"
    return os.path.abspath(os.path.join(directory, f"cairn_unsent_{safe_id}.jsonl"))


class SpillFile:
    """Appends unsent batches to a JSON-lines file; thread-safe; the file is created on first use."""

    def __init__(self, path: str, run_id: str, workspace: str, tracking_uri: str) -> None:
        self.path = path
        self._header = {"run_id": run_id, "workspace": workspace, "tracking_uri": tracking_uri}
        self._lock = threading.Lock()

    def write(self, batch: Dict[str, Any], records: int, reason: str) -> bool:
        """Append one batch; return False (after printing the line to stderr) if the file failed."""
        entry = dict(self._header, time=now_ms(), reason=reason, records=records, batch=batch)
        line = json.dumps(entry, allow_nan=False, separators=(",", ":")) + "\n"
        with self._lock:
            try:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as out:
                    out.write(line)
                return True
            except OSError as error:
                _stderr(
                    f"cairn: cannot write {self.path} ({error}); the unsent batch follows on stderr\n"
                    + line
                )
                return False


def _stderr(text: str) -> None:
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass
