"""``cairn.Run``: the object a training script logs to, modelled on ``azureml.core.Run``.

Typical use inside a job (the runner sets ``CAIRN_*`` variables and puts this package on
``PYTHONPATH``)::

    from cairn import Run
    run = Run.get_context()
    run.log("rmse", 0.61)
    run.complete()

The Run validates arguments and numbers steps in the script's thread (so mistakes raise where
they are made), then hands records to a backend: the online one buffers them for the
background sender (``_batcher.py``); the offline one, used outside any job, prints them and
keeps them in memory. This module does no I/O of its own.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import uuid
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

from ._config import (
    ENV_EXPERIMENT,
    ENV_RUN_ID,
    ENV_RUN_MANAGED,
    ENV_RUN_TOKEN,
    ENV_TRACKING_URI,
    ENV_WORKSPACE,
    Settings,
)
from ._offline import OfflineBackend
from ._online import OnlineBackend
from ._records import (
    Metric,
    Param,
    Record,
    Tag,
    check_key,
    check_param_value,
    now_ms,
    to_metric_value,
    to_step,
    to_text,
)

#: Run tag listing the names of the tables logged with ``log_row``/``log_table`` (a JSON list).
TABLES_TAG = "cairn.tables"
from ._upload import PathOrStream, check_artifact_name

#: Longest ``fail()`` explanation stored in the ``cairn.error`` tag.
_MAX_ERROR_TAG = 1000

_context: Optional["Run"] = None
_context_lock = threading.Lock()


class Run:
    """One run (job execution): log metrics, params and tags, upload files, finish it.

    Obtain it with :meth:`Run.get_context`; do not construct it directly.

    Attributes:
        id: the run id (``OfflineRun_<uuid>`` outside a job).
        experiment: the experiment's name.
        workspace: the workspace's name.
    """

    def __init__(
        self,
        run_id: str,
        experiment: str,
        workspace: str,
        backend: Union[OnlineBackend, OfflineBackend],
        settings: Settings,
        managed: bool = False,
    ) -> None:
        self.id = run_id
        self.experiment = experiment
        self.workspace = workspace
        self._backend = backend
        self._settings = settings
        self._managed = managed
        self._lock = threading.Lock()
        self._next_step: Dict[str, int] = {}
        self._next_row: Dict[str, int] = {}
        #: Names of the tables logged with log_row/log_table, in order: the run's ``cairn.tables``
        #: tag, which tells the studio which ``NAME.COLUMN`` metrics form a table.
        self._tables: List[str] = []

    # -- obtaining a run --------------------------------------------------------------------

    @classmethod
    def get_context(cls, allow_offline: bool = True) -> "Run":
        """The run of the current job, built once per process from the ``CAIRN_*`` variables.

        Outside a job (no ``CAIRN_RUN_ID``) this is an offline run that prints what it would log,
        unless ``allow_offline`` is False, which raises ``RuntimeError`` instead.
        """
        global _context
        with _context_lock:
            if _context is None:
                _context = cls._from_environ(os.environ)
            run = _context
        if run.is_offline and not allow_offline:
            raise RuntimeError(
                f"not inside a Cairn job ({ENV_RUN_ID} is not set) and allow_offline=False"
            )
        return run

    @classmethod
    def _from_environ(
        cls, environ: Mapping[str, str], *, register_atexit: bool = True, spill_dir: str = "logs"
    ) -> "Run":
        """Build a run from job variables (online) or without them (offline)."""
        settings = Settings.from_env(environ)
        run_id = environ.get(ENV_RUN_ID, "")
        if not run_id:
            experiment = environ.get(ENV_EXPERIMENT) or "offline"
            workspace = environ.get(ENV_WORKSPACE) or "offline"
            run_id = f"OfflineRun_{uuid.uuid4()}"
            return cls(run_id, experiment, workspace, OfflineBackend(run_id, experiment, workspace), settings)
        missing = [name for name in (ENV_TRACKING_URI, ENV_WORKSPACE, ENV_RUN_TOKEN) if not environ.get(name)]
        if missing:
            raise RuntimeError(
                f"{ENV_RUN_ID} is set but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                "not: the job runner sets all of them; unset CAIRN_RUN_ID to run offline"
            )
        backend = OnlineBackend(
            environ[ENV_TRACKING_URI],
            environ[ENV_WORKSPACE],
            run_id,
            environ[ENV_RUN_TOKEN],
            settings,
            spill_dir=spill_dir,
            register_atexit=register_atexit,
        )
        return cls(
            run_id,
            environ.get(ENV_EXPERIMENT, ""),
            environ[ENV_WORKSPACE],
            backend,
            settings,
            managed=environ.get(ENV_RUN_MANAGED) == "1",
        )

    def child_run(self, name: Optional[str] = None, run_id: Optional[str] = None, outputs: Any = None) -> "Run":
        """Create and return a child run of this run (``azureml.core.Run.child_run``).

        The child logs like any run, with this job's token; finish it with ``complete()`` (or
        ``fail()``): unlike the job's own run, nobody else ends it. ``run_id`` and ``outputs`` are
        accepted for Azure ML compatibility; the server chooses the id.

        Raises:
            TypeError: ``name`` is not a string.
            CairnError: the server refused or stayed unreachable.
        """
        if name is not None and not isinstance(name, str):
            raise TypeError(f"child_run name must be a string, not {type(name).__name__}")
        experiment = self.experiment or str(self.get_details().get("experiment") or "")
        child_id, backend = self._backend.create_child(experiment, name or "")
        return Run(child_id, experiment, self.workspace, backend, self._settings, managed=False)

    @property
    def is_offline(self) -> bool:
        """True outside a Cairn job (nothing is sent to a server)."""
        return self._backend.offline

    def __repr__(self) -> str:
        return (
            f"Run(id={self.id!r}, experiment={self.experiment!r}, workspace={self.workspace!r}, "
            f"offline={self.is_offline})"
        )

    # -- metrics ----------------------------------------------------------------------------

    def log(self, name: str, value: Any, description: str = "", step: Optional[int] = None) -> None:
        """Log one numeric value of the metric ``name``.

        Args:
            name: the metric's key (at most 250 characters).
            value: a number (int, float, bool, numpy scalar …); NaN and infinities are allowed.
            description: accepted for Azure ML compatibility; not stored.
            step: the point's step; by default one more than the last step of this key, from 0.

        Raises:
            TypeError: ``value`` is not numeric (or ``step`` not an integer).
            ValueError: ``name`` is empty or too long.
        """
        check_key(name)
        number = to_metric_value(name, value)
        explicit = None if step is None else to_step(name, step)
        with self._lock:
            point = self._claim_steps(name, 1, explicit)
        shown = f"log {name}={_show(value)}" + ("" if explicit is None else f" step={explicit}")
        self._backend.put([Metric(name, number, point, now_ms())], shown)

    def log_list(self, name: str, value: Sequence[Any], description: str = "") -> None:
        """Log each element of ``value`` as a point of the metric ``name``.

        Steps continue the key's counter, so a first call numbers them 0 … n-1. All elements are
        checked before any is logged.
        """
        check_key(name)
        if isinstance(value, (str, bytes)) or not _is_iterable(value):
            raise TypeError(f"log_list {name!r}: expected a list of numbers, not {type(value).__name__}")
        items = list(value)
        numbers = [to_metric_value(f"{name}[{i}]", item) for i, item in enumerate(items)]
        with self._lock:
            first = self._claim_steps(name, len(numbers), None)
        stamp = now_ms()
        records: List[Record] = [Metric(name, n, first + i, stamp) for i, n in enumerate(numbers)]
        self._backend.put(records, f"log_list {name}={_show(items)}")

    def log_row(self, name: str, description: Optional[str] = None, **kwargs: Any) -> None:
        """Log one row of the table ``name``: column ``c`` becomes metric ``name.c``, step = row index.

        Example: ``run.log_row("epoch", loss=0.3, acc=0.9)`` logs ``epoch.loss`` and ``epoch.acc``.
        """
        self._log_rows(name, [kwargs], f"log_row {name} {_show_columns(kwargs)}")

    def log_table(self, name: str, value: Mapping[str, Sequence[Any]], description: str = "") -> None:
        """Log a table given as ``{column: [values…]}`` (all columns equally long), row by row."""
        if not isinstance(value, Mapping) or not value:
            raise TypeError(f"log_table {name!r}: expected a non-empty dict of column -> list of numbers")
        columns = {col: list(values) for col, values in value.items()}
        lengths = {len(values) for values in columns.values()}
        if len(lengths) != 1:
            shown = ", ".join(f"{c}: {len(v)}" for c, v in columns.items())
            raise ValueError(f"log_table {name!r}: columns must have the same length ({shown})")
        rows = [{col: values[i] for col, values in columns.items()} for i in range(lengths.pop())]
        self._log_rows(name, rows, f"log_table {name} {len(rows)} rows ({', '.join(columns)})")

    def _log_rows(self, name: str, rows: List[Dict[str, Any]], shown: str) -> None:
        check_key(name, "table name")
        if not rows or not all(rows):
            raise ValueError(f"table {name!r}: a row needs at least one column")
        checked = []
        for row in rows:
            values = {}
            for column, value in row.items():
                key = check_key(f"{name}.{column}")
                values[key] = to_metric_value(key, value)
            checked.append(values)
        with self._lock:
            first = self._next_row.get(name, 0)
            self._next_row[name] = first + len(checked)
            for values in checked:
                for key in values:
                    self._next_step[key] = max(self._next_step.get(key, 0), first + len(checked))
            new_table = name not in self._tables
            if new_table:
                self._tables.append(name)
            tables = json.dumps(self._tables)
        stamp = now_ms()
        records: List[Record] = [
            Metric(key, number, first + i, stamp)
            for i, values in enumerate(checked)
            for key, number in values.items()
        ]
        if new_table:
            records.append(Tag(TABLES_TAG, tables))
        self._backend.put(records, shown)

    def _claim_steps(self, name: str, count: int, explicit: Optional[int]) -> int:
        """Reserve ``count`` consecutive steps of ``name`` (or record an explicit one). Lock held."""
        following = self._next_step.get(name, 0)
        first = following if explicit is None else explicit
        self._next_step[name] = max(following, first + count)
        return first

    def get_metrics(self, name: Optional[str] = None) -> Dict[str, Any]:
        """The run's metrics (after a flush): ``{key: value}`` for one point, ``{key: [values]}`` else.

        With ``name``, only that metric (an empty dict if it was never logged).
        """
        self.flush()
        series = self._backend.metric_series()
        if name is not None:
            series = {name: series[name]} if name in series else {}
        result: Dict[str, Any] = {}
        for key, points in series.items():
            values = [point["value"] for point in points]
            result[key] = values[0] if len(values) == 1 else values
        return result

    # -- params and tags --------------------------------------------------------------------

    def log_param(self, key: str, value: Any) -> None:
        """Record a parameter (hyper-parameter); the value is stored as a string."""
        check_key(key, "param name")
        text = check_param_value(key, to_text(value))
        self._backend.put([Param(key, text)], f"log_param {key}={_show(text)}")

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record several parameters at once."""
        if not isinstance(params, Mapping):
            raise TypeError(f"log_params expects a dict, not {type(params).__name__}")
        records: List[Record] = [
            Param(check_key(k, "param name"), check_param_value(k, to_text(v))) for k, v in params.items()
        ]
        self._backend.put(records, "log_params " + _show_columns(params))

    def set_tags(self, tags: Union[Mapping[str, Any], str, Iterable[str]]) -> None:
        """Set tags from ``{key: value}``; a string or a list of strings sets tags with empty values."""
        if isinstance(tags, str):
            pairs = {tags: ""}
        elif isinstance(tags, Mapping):
            pairs = dict(tags)
        elif _is_iterable(tags):
            pairs = {key: "" for key in tags}
        else:
            raise TypeError(f"set_tags expects a dict of tags, not {type(tags).__name__}")
        records: List[Record] = [Tag(check_key(k, "tag name"), to_text(v)) for k, v in pairs.items()]
        self._backend.put(records, "set_tags " + _show_columns(pairs))

    def tag(self, key: str, value: Any = "") -> None:
        """Set one tag (``value`` defaults to the empty string)."""
        check_key(key, "tag name")
        text = to_text(value)
        self._backend.put([Tag(key, text)], f"tag {key}={_show(text)}")

    def get_tags(self) -> Dict[str, str]:
        """The run's tags (after a flush)."""
        return dict(self.get_details().get("tags") or {})

    def add_properties(self, properties: Mapping[str, Any]) -> None:
        """Add immutable properties (values stored as strings), as ``azureml.core.Run.add_properties``.

        Sent at once rather than batched, so that a refused change raises here. Adding a property
        again with the same value is accepted.

        Raises:
            TypeError: ``properties`` is not a dict.
            ValueError: a key is empty or too long, or (offline) a property would change.
            CairnError: the server refused (HTTP 409 when a property already has another value).
        """
        if not isinstance(properties, Mapping):
            raise TypeError(f"add_properties expects a dict, not {type(properties).__name__}")
        checked = {
            check_key(k, "property name"): check_param_value(k, to_text(v)) for k, v in properties.items()
        }
        if not checked:
            return
        self._backend.add_properties(checked, "add_properties " + _show_columns(checked))

    def get_properties(self) -> Dict[str, str]:
        """The run's properties (after a flush)."""
        return dict(self.get_details().get("properties") or {})

    # -- artifacts --------------------------------------------------------------------------

    def upload_file(self, name: str, path_or_stream: PathOrStream) -> Dict[str, Any]:
        """Upload a file (a path or a readable stream) as the run artifact ``name``.

        The content is streamed in chunks with its SHA-256; connection failures and 5xx are
        retried with back-off. Files in ``./outputs`` are uploaded by the runner anyway.

        Returns:
            ``{"name", "size", "sha256"}`` of what was uploaded.

        Raises:
            ValueError: ``name`` is not a relative path.
            CairnError: the server refused the upload or stayed unreachable.
        """
        name = check_artifact_name(name)
        shown = f"upload_file {name} <- {_show(path_or_stream)}"
        return self._backend.upload(name, path_or_stream, shown)

    # -- models -----------------------------------------------------------------------------

    def register_model(
        self,
        model_name: str,
        model_path: str,
        tags: Optional[Mapping[str, Any]] = None,
        description: Optional[str] = None,
        properties: Optional[Mapping[str, Any]] = None,
        model_framework: Optional[str] = None,
        model_framework_version: Optional[str] = None,
    ) -> "RegisteredModel":
        """Register the run's artifact ``model_path`` (a file or a folder) as the next version of
        model ``model_name`` (created on first registration), as ``azureml.core.Run.register_model``.

        Logged records are flushed first, and if ``model_path`` exists locally (e.g.
        ``outputs/model.pkl`` written by this script) it is uploaded as that artifact first, so
        the registered bytes are the ones on disk now. The framework is detected from an MLflow
        ``MLmodel`` file at the folder's root unless given.

        Returns:
            a :class:`RegisteredModel` with ``name``, ``id`` (``name:version``) and ``version``.

        Raises:
            ValueError: ``model_path`` is not a relative path.
            ServerError: the server refused (e.g. 404 when the path is not among the run's
                artifacts, 400 for a name that breaks the naming rule).
            CairnError: the run is offline.
        """
        path = check_artifact_name(model_path.rstrip("/") if isinstance(model_path, str) else model_path)
        if not isinstance(model_name, str) or not model_name:
            raise ValueError(f"model_name must be a non-empty string, not {model_name!r}")
        self.flush()
        if not self.is_offline and os.path.exists(path):
            for local, name in _files_under(path):
                self._backend.upload(name, local, f"upload_file {name} <- {local}")
        body: Dict[str, Any] = {
            "run_id": self.id,
            "path": path,
            "description": to_text(description) if description is not None else "",
            "tags": {check_key(k, "tag key"): to_text(v) for k, v in (tags or {}).items()},
            "properties": {check_key(k, "property key"): to_text(v) for k, v in (properties or {}).items()},
        }
        if model_framework:
            body["framework"] = to_text(model_framework)
        if model_framework_version:
            body["framework_version"] = to_text(model_framework_version)
        return RegisteredModel(self._backend.register_model(model_name, body))

    # -- reading the run --------------------------------------------------------------------

    def get_details(self) -> Dict[str, Any]:
        """The run as the server describes it (id, status, experiment, params, tags, …), after a flush."""
        self.flush()
        return self._backend.details()

    def get_status(self) -> str:
        """The run's status (``Running``, ``Completed`` …)."""
        return str(self.get_details().get("status", ""))

    # -- finishing --------------------------------------------------------------------------

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Send everything logged so far; return True once it is sent or spilled (False on timeout)."""
        return self._backend.flush(timeout)

    def complete(self) -> None:
        """Flush, and mark the run Completed (inside a runner-managed job the runner does that)."""
        self._finish("Completed")

    def fail(self, error_details: Any = None, error_code: Optional[str] = None) -> None:
        """Flush, record why the run failed (tag ``cairn.error``) and mark it Failed (unless managed)."""
        if error_details is not None:
            text = _describe_error(error_details)
            _stderr(f"cairn: run {self.id} failed: {text}")
            self.tag("cairn.error", text[:_MAX_ERROR_TAG])
        if error_code is not None:
            self.tag("cairn.error_code", error_code)
        self._finish("Failed")

    def cancel(self) -> None:
        """Flush, and mark the run Canceled (unless managed: the runner decides then)."""
        self._finish("Canceled")

    def _finish(self, status: str) -> None:
        self.flush(self._settings.exit_timeout_seconds)
        if not self._managed:
            self._backend.set_status(status)

    def _close(self, timeout: Optional[float] = None) -> None:
        """Flush and stop the background sender (what the at-exit handler does)."""
        self._backend.close(timeout)


class RegisteredModel:
    """A registered model version, as ``register_model`` returns it.

    Attributes:
        name: the model's name.
        version: the version number (1, 2, …).
        id: ``name:version``.
        details: the whole answer of the server (tags, properties, framework, size, …).
    """

    def __init__(self, details: Dict[str, Any]) -> None:
        self.details = dict(details)
        self.name: str = str(details.get("name", ""))
        self.version: int = int(details.get("version", 0))
        self.id: str = str(details.get("id") or f"{self.name}:{self.version}")
        self.tags: Dict[str, str] = dict(details.get("tags") or {})
        self.properties: Dict[str, str] = dict(details.get("properties") or {})
        self.description: str = str(details.get("description", ""))

    def __repr__(self) -> str:
        return f"RegisteredModel(id={self.id!r})"


def _files_under(path: str) -> List[Any]:
    """``[(local path, artifact name)]`` of a file, or of every file under a folder."""
    if os.path.isfile(path):
        return [(path, path)]
    found = []
    for root, _dirs, names in os.walk(path):
        for n in sorted(names):
            local = os.path.join(root, n)
            found.append((local, path + "/" + "/".join(os.path.relpath(local, path).split(os.sep))))
    return sorted(found, key=lambda f: f[1])


def _is_iterable(value: Any) -> bool:
    try:
        iter(value)
    except TypeError:
        return False
    return True


def _show(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show_columns(values: Mapping[str, Any]) -> str:
    return _show(" ".join(f"{k}={_show(v, 30)}" for k, v in values.items()), 200)


def _describe_error(error: Any) -> str:
    if isinstance(error, BaseException):
        return f"{type(error).__name__}: {error}"
    return str(error)


def _stderr(line: str) -> None:
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass
