"""The backend of a run outside any Cairn job: print what would be logged, keep it in memory.

This lets a training script run unchanged on a laptop (``python train.py``): every call prints
a ``[cairn offline] …`` line and ``get_metrics()`` answers from memory. Nothing is sent anywhere
and nothing is written to disk.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any, Dict, List, Optional, Tuple

from ._client import CairnError
from ._records import Metric, Param, Record, Tag
from ._upload import PathOrStream

PREFIX = "[cairn offline]"


class OfflineBackend:
    """In-memory stand-in for the server."""

    offline = True

    def __init__(self, run_id: str, experiment: str, workspace: str) -> None:
        self._lock = threading.Lock()
        self._series: Dict[str, List[Dict[str, Any]]] = {}
        self._params: Dict[str, str] = {}
        self._tags: Dict[str, str] = {}
        self._properties: Dict[str, str] = {}
        self._details = {"id": run_id, "experiment": experiment, "workspace": workspace}
        self._children = 0
        self._status = "Running"

    def put(self, records: List[Record], summary: str) -> None:
        with self._lock:
            for record in records:
                if isinstance(record, Metric):
                    point = {"value": record.value, "step": record.step, "timestamp": record.timestamp}
                    self._series.setdefault(record.key, []).append(point)
                elif isinstance(record, Param):
                    self._params[record.key] = record.value
                elif isinstance(record, Tag):
                    self._tags[record.key] = record.value
        say(summary)

    def flush(self, timeout: Optional[float]) -> bool:
        return True

    def close(self, timeout: Optional[float] = None) -> None:
        pass

    def metric_series(self) -> Dict[str, List[Dict[str, Any]]]:
        with self._lock:
            return {key: [dict(p) for p in points] for key, points in self._series.items()}

    def details(self) -> Dict[str, Any]:
        with self._lock:
            return dict(
                self._details,
                status=self._status,
                params=dict(self._params),
                tags=dict(self._tags),
                properties=dict(self._properties),
                offline=True,
            )

    def add_properties(self, properties: Dict[str, str], summary: str) -> None:
        """Like the server: all or nothing, and a property never changes."""
        with self._lock:
            for key, value in properties.items():
                old = self._properties.get(key)
                if old is not None and old != value:
                    raise ValueError(f"property {key!r} is already {old!r}; properties cannot change")
            self._properties.update(properties)
        say(summary)

    def create_child(self, experiment: str, display_name: str) -> Tuple[str, "OfflineBackend"]:
        with self._lock:
            self._children += 1
            child_id = f"{self._details['id']}_child{self._children}"
        say(f"child_run {child_id}" + (f" ({display_name})" if display_name else ""))
        backend = OfflineBackend(child_id, str(self._details["experiment"]), str(self._details["workspace"]))
        backend._details["parent_id"] = self._details["id"]
        return child_id, backend

    def set_status(self, status: str) -> None:
        with self._lock:
            self._status = status
        say(f"status {status}")

    def upload(self, name: str, path_or_stream: PathOrStream, summary: str) -> Dict[str, Any]:
        size: Optional[int] = None
        if isinstance(path_or_stream, (str, bytes, os.PathLike)):
            path = os.fsdecode(path_or_stream)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"upload_file: {path!r} is not a file")
            size = os.path.getsize(path)
        say(summary + (f" ({size} bytes)" if size is not None else ""))
        return {"name": name, "size": size, "sha256": None}


    def register_model(self, name: str, body: Dict[str, Any]) -> Dict[str, Any]:
        raise CairnError(
            f"register_model({name!r}) needs a run inside a Cairn job; this run is offline "
            "(outside a job, use `cairn model register --name NAME --path LOCAL_PATH`)"
        )


def say(summary: str) -> None:
    """Print one ``[cairn offline] …`` line on stdout."""
    try:
        print(f"{PREFIX} {summary}", file=sys.stdout, flush=True)
    except (OSError, ValueError):
        pass
