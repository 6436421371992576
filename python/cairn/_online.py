"""The backend of a run inside a Cairn job: records go to the server through the batcher.

Reads (metrics, details) and writes that the script waits for anyway (status, artifacts) go
straight through the client, with the same retry policy as log batches.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from ._batcher import Batcher
from ._client import Client
from ._config import Settings
from ._records import Record, decode_value
from ._retry import RetryPolicy, call_with_retries
from ._spill import SpillFile, spill_path
from ._upload import PathOrStream, Source


class OnlineBackend:
    """Sends a run's records to ``{tracking_uri}/api/v1/workspaces/{ws}/runs/{run_id}``."""

    offline = False

    def __init__(
        self,
        tracking_uri: str,
        workspace: str,
        run_id: str,
        token: str,
        settings: Settings,
        *,
        spill_dir: str = "logs",
        register_atexit: bool = True,
    ) -> None:
        self._spill_dir = spill_dir
        self._register_atexit = register_atexit
        self.client = Client(tracking_uri, workspace, run_id, token, timeout=settings.http_timeout_seconds)
        self._policy = RetryPolicy(settings.retry_initial_seconds, settings.retry_total_seconds)
        self._settings = settings
        spill = SpillFile(spill_path(spill_dir, run_id), run_id, workspace, tracking_uri)
        self.batcher = Batcher(
            self.client.log_batch,
            spill,
            settings,
            target=tracking_uri,
            register_atexit=register_atexit,
        )

    def put(self, records: List[Record], summary: str) -> None:
        """Buffer records; ``summary`` (the human description) is only for offline runs."""
        self.batcher.put(records)

    def flush(self, timeout: Optional[float]) -> bool:
        return self.batcher.flush(timeout)

    def close(self, timeout: Optional[float] = None) -> None:
        self.batcher.close(timeout)

    def metric_series(self) -> Dict[str, List[Dict[str, Any]]]:
        """``{key: [{"value", "step", "timestamp"}, …]}`` with NaN/infinities decoded."""
        answer = call_with_retries(self.client.get_metrics, self._policy)
        series = answer.get("metrics", {}) if isinstance(answer, dict) else {}
        return {
            key: [dict(point, value=decode_value(point.get("value"))) for point in points]
            for key, points in series.items()
        }

    def details(self) -> Dict[str, Any]:
        return call_with_retries(self.client.get_run, self._policy)

    def add_properties(self, properties: Dict[str, str], summary: str) -> None:
        """Sent at once, not batched: a refused change must raise in the script's thread."""
        call_with_retries(lambda: self.client.add_properties(properties), self._policy)

    def create_child(self, experiment: str, display_name: str) -> Tuple[str, "OnlineBackend"]:
        """Create a child run on the server; its backend logs with this run's token."""
        answer = call_with_retries(
            lambda: self.client.create_child_run(experiment, display_name), self._policy
        )
        child_id = str(answer["id"])
        backend = OnlineBackend(
            self.client.tracking_uri,
            self.client.workspace,
            child_id,
            self.client.token,
            self._settings,
            spill_dir=self._spill_dir,
            register_atexit=self._register_atexit,
        )
        return child_id, backend

    def set_status(self, status: str) -> None:
        call_with_retries(lambda: self.client.set_status(status), self._policy)

    def upload(self, name: str, path_or_stream: PathOrStream, summary: str) -> Dict[str, Any]:
        """Stream the content to the artifact ``name``; retried like batches, then raised."""
        with Source(path_or_stream) as source:
            call_with_retries(
                lambda: self.client.put_artifact(name, source.rewind(), source.size, source.sha256),
                self._policy,
            )
            return {"name": name, "size": source.size, "sha256": source.sha256}

    def register_model(self, name: str, body: Dict[str, Any]) -> Dict[str, Any]:
        """One attempt, not retried: a retry after a lost answer would register a second version."""
        return self.client.register_model(name, body)
