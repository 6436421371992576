"""``cairn.Experiment``, ``cairn.ScriptRunConfig`` and ``cairn.SubmittedRun``: training jobs.

Submitting follows the CLI (``crates/cairn/src/cmd/jobs.rs``): the source directory becomes a
code snapshot (hidden files and what ``.amlignore``/``.gitignore`` list are left out, 300 MB at
most) whose manifest is posted to ``…/snapshots``; only the content-addressed blobs the server
lacks are uploaded (``PUT …/blobs/SHA256``); then the job is posted to ``…/jobs``. Data
references among the arguments become job inputs (``${{inputs.NAME}}`` in the command), which
the server mounts or downloads into the run's folder.

A :class:`SubmittedRun` is the client's handle on a run: status, logs, metrics, files, cancel.
Inside a job, the script's own run is ``cairn.Run.get_context()`` (the in-job runtime).
"""

from __future__ import annotations

import fnmatch
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union
from urllib.parse import quote

from ._records import decode_value
from .compute import ComputeTarget
from .datastore import DataReference, check_relative, download_all, download_to, sha256_file
from .environment import Environment
from .errors import RunFailed
from .workspace import Workspace

#: Largest code snapshot (as the CLI).
SNAPSHOT_LIMIT = 300 * 1024 * 1024
#: Statuses after which a run does not change.
TERMINAL = frozenset({"Completed", "Failed", "Canceled"})
#: Lines of log quoted when a run fails.
LOG_TAIL_LINES = 40


class ScriptRunConfig:
    """What to run: a script (or a shell command) from a source directory, with its arguments,
    on a compute target, in an environment.

    Args:
        source_directory: the folder snapshotted and made the job's working directory.
        script: the entry script, run as ``python SCRIPT ARGUMENTS…``.
        arguments: command-line arguments; a :class:`DataReference` (``ds.as_mount()``) becomes
            the local path of that input.
        compute_target: a :class:`ComputeTarget` or its name.
        environment: an :class:`Environment` (registered on submit if it is not yet) or a name.
        command: instead of ``script``, a whole shell command (a string or a list of words,
            which may hold data references).
        environment_variables: set in the job's process.
        max_run_duration_seconds: the job is stopped and failed after this long.
        display_name: the run's name in listings.
    """

    def __init__(
        self,
        source_directory: Union[str, Path, None] = None,
        script: Optional[str] = None,
        arguments: Optional[Sequence[Any]] = None,
        compute_target: Union[ComputeTarget, str, None] = None,
        environment: Union[Environment, str, None] = None,
        command: Union[str, Sequence[Any], None] = None,
        environment_variables: Optional[Dict[str, str]] = None,
        max_run_duration_seconds: Optional[int] = None,
        display_name: Optional[str] = None,
    ) -> None:
        if script and command:
            raise ValueError("give either script or command, not both")
        if not script and not command:
            raise ValueError("a ScriptRunConfig needs a script (or a command)")
        if script:
            check_relative(script, "script")
        self.source_directory = source_directory
        self.script = script
        self.arguments = list(arguments or [])
        self.compute_target = compute_target
        self.environment = environment
        self.command = command
        self.environment_variables = dict(environment_variables or {})
        self.max_run_duration_seconds = max_run_duration_seconds
        self.display_name = display_name

    def command_line(self) -> Tuple[str, Dict[str, Dict[str, str]]]:
        """The shell command and the inputs it refers to (``{name: {"path", "mode"}}``)."""
        inputs: Dict[str, Dict[str, str]] = {}

        def word(value: Any) -> str:
            if isinstance(value, DataReference):
                for name, existing in inputs.items():
                    if existing == value.to_input():
                        return "${{inputs.%s}}" % name
                name = "data" if not inputs else f"data_{len(inputs)}"
                inputs[name] = value.to_input()
                return "${{inputs.%s}}" % name
            if isinstance(value, bool):
                value = str(value)
            return shlex.quote(str(value))

        if self.command is not None:
            if isinstance(self.command, str):
                if self.arguments:
                    return self.command + " " + " ".join(word(a) for a in self.arguments), inputs
                return self.command, inputs
            words = [word(w) for w in self.command] + [word(a) for a in self.arguments]
            return " ".join(words), inputs
        words = ["python", shlex.quote(str(self.script))] + [word(a) for a in self.arguments]
        return " ".join(words), inputs


class Experiment:
    """A named group of runs in a workspace (created on the first submit)."""

    def __init__(self, workspace: Workspace, name: str) -> None:
        if not name:
            raise ValueError("an experiment needs a name")
        self.workspace = workspace
        self.name = name

    def __repr__(self) -> str:
        return f"Experiment(workspace={self.workspace.name!r}, name={self.name!r})"

    def submit(self, config: ScriptRunConfig, tags: Optional[Dict[str, str]] = None) -> "SubmittedRun":
        """Snapshot the code, submit the job and return its run (queued; see ``wait_for_completion``)."""
        if not isinstance(config, ScriptRunConfig):
            raise TypeError(f"submit expects a ScriptRunConfig, not {type(config).__name__}")
        if config.compute_target is None:
            raise ValueError("the ScriptRunConfig has no compute_target")
        if config.environment is None:
            raise ValueError("the ScriptRunConfig has no environment")
        ws = self.workspace
        compute = config.compute_target.name if isinstance(config.compute_target, ComputeTarget) else str(config.compute_target)
        env = config.environment
        if isinstance(env, Environment):
            if env.version is None:
                env.register(ws)
            env_ref = env.ref
        else:
            env_ref = str(env)
        command, inputs = config.command_line()
        snapshot = upload_snapshot(ws, Path(config.source_directory)) if config.source_directory else None
        body: Dict[str, Any] = {
            "experiment": self.name,
            "command": command,
            "environment": env_ref,
            "compute": compute,
            "inputs": inputs,
            "environment_variables": config.environment_variables,
            "tags": dict(tags or {}),
        }
        if snapshot:
            body["snapshot"] = snapshot
        if config.display_name:
            body["display_name"] = config.display_name
        if config.max_run_duration_seconds:
            body["timeout"] = int(config.max_run_duration_seconds)
        answer = ws.call("POST", "jobs", body=body)
        return SubmittedRun(self, answer["id"], _details=answer)

    def get_runs(self, limit: int = 100) -> List["SubmittedRun"]:
        """The experiment's runs, newest first."""
        answer = self.workspace.call("GET", "runs", query={"experiment": self.name, "limit": limit})
        return [SubmittedRun(self, r["id"], _details=r) for r in answer]

    def get_run(self, run_id: str) -> "SubmittedRun":
        return SubmittedRun(self, run_id)

    @classmethod
    def list(cls, workspace: Workspace) -> List["Experiment"]:
        answer = workspace.call("GET", "experiments")
        items = answer.get("items", []) if isinstance(answer, dict) else answer
        return [cls(workspace, e["name"]) for e in items]


class SubmittedRun:
    """A run seen from outside the job: status, logs, metrics, files, cancel.

    ``SubmittedRun(experiment, run_id)`` attaches to an existing run.
    """

    def __init__(self, experiment: Experiment, run_id: str, *, _details: Optional[Dict[str, Any]] = None) -> None:
        self.experiment = experiment
        self.id = run_id
        self._details = _details if _details is not None else experiment.workspace.call("GET", "runs", run_id)

    @property
    def workspace(self) -> Workspace:
        return self.experiment.workspace

    def __repr__(self) -> str:
        return (
            f"Run(experiment={self.experiment.name!r}, id={self.id!r}, status={self._details.get('status')!r}, "
            f"url={self.get_portal_url()!r})"
        )

    def get_portal_url(self) -> str:
        """The run's page in the studio."""
        return f"{self.workspace.url}/w/{quote(self.workspace.name, safe='')}/runs/{quote(self.id, safe='')}"

    @property
    def display_name(self) -> str:
        return str(self._details.get("display_name") or "")

    # -- reading -----------------------------------------------------------------------------

    def get_details(self) -> Dict[str, Any]:
        """The run as the server describes it: status, times, params, tags, latest metrics, job, error."""
        self._details = self.workspace.call("GET", "runs", self.id)
        return dict(self._details)

    def get_status(self) -> str:
        return str(self.get_details().get("status", ""))

    @property
    def status(self) -> str:
        return self.get_status()

    def get_metrics(self, name: Optional[str] = None) -> Dict[str, Any]:
        """``{key: value}`` for single-point metrics, ``{key: [values]}`` for series (Azure ML's shape)."""
        series = self.workspace.call("GET", "runs", self.id, "metrics").get("metrics", {})
        result: Dict[str, Any] = {}
        for key, points in series.items():
            if name is not None and key != name:
                continue
            values = [decode_value(p.get("value")) for p in sorted(points, key=lambda p: p.get("step", 0))]
            result[key] = values[0] if len(values) == 1 else values
        return result

    def get_tags(self) -> Dict[str, str]:
        return dict(self.get_details().get("tags") or {})

    def get_properties(self) -> Dict[str, str]:
        """The run's properties (set once with ``add_properties``, never changed)."""
        return dict(self.get_details().get("properties") or {})

    def get_file_names(self) -> List[str]:
        """The run's artifact paths (``outputs/…``, ``logs/…``)."""
        return [f["path"] for f in self.workspace.call("GET", "runs", self.id, "artifacts")]

    def download_file(self, name: str, output_file_path: Union[str, Path, None] = None) -> Path:
        """Download one artifact; to ``output_file_path`` (a file, or a folder to put it in) or to
        its base name in the current folder."""
        rel = check_relative(name, "name")
        if not rel:
            raise ValueError("download_file needs a file name")
        target = Path(output_file_path) if output_file_path else Path(rel.split("/")[-1])
        if target.is_dir():
            target = target / rel.split("/")[-1]
        download_to(self.workspace, ("runs", self.id, "artifacts", *rel.split("/")), target)
        return target

    def download_files(
        self, prefix: Optional[str] = None, output_directory: Union[str, Path, None] = None, append_prefix: bool = True
    ) -> List[Path]:
        """Download every artifact under ``prefix`` (all when None) into ``output_directory`` (the
        current folder by default), keeping their paths (without the prefix unless ``append_prefix``)."""
        base = Path(output_directory or ".")
        wanted = check_relative(prefix or "", "prefix")
        targets = []
        for entry in self.workspace.call("GET", "runs", self.id, "artifacts"):
            rel = check_relative(entry["path"], "artifact path sent by the server")
            if wanted and not (rel == wanted or rel.startswith(wanted.rstrip("/") + "/")):
                continue
            local_rel = rel if append_prefix or not wanted else rel[len(wanted) :].lstrip("/") or rel.split("/")[-1]
            targets.append((rel, base.joinpath(*local_rel.split("/")), int(entry.get("size", 0))))
        download_all(self.workspace, ("runs", self.id), ("artifacts",), targets)
        return [local for _, local, _ in targets]

    def register_model(
        self,
        model_name: str,
        model_path: str,
        tags: Optional[Dict[str, Any]] = None,
        description: Optional[str] = None,
        **kwargs: Any,
    ) -> "Model":
        """Register this run's artifact ``model_path`` (a file or folder, e.g. ``outputs/model.pkl``)
        as the next version of ``model_name``; ``properties``, ``model_framework`` and
        ``model_framework_version`` are accepted as keywords."""
        from .model import register_from_run

        return register_from_run(self.workspace, self.id, model_name, model_path, tags, description, **kwargs)

    def get_children(self) -> List["SubmittedRun"]:
        """Runs whose parent is this run (among the experiment's latest 1000)."""
        answer = self.workspace.call("GET", "runs", query={"experiment": self.experiment.name, "limit": 1000})
        return [SubmittedRun(self.experiment, r["id"], _details=r) for r in answer if r.get("parent_id") == self.id]

    def get_logs(self, offset: int = 0) -> Tuple[str, int]:
        """``(text, next_offset)`` of the job's log from byte ``offset``."""
        chunk = self.workspace.call("GET", "runs", self.id, "logs", query={"offset": offset})
        return str(chunk.get("text", "")), int(chunk.get("next_offset", offset))

    # -- acting ------------------------------------------------------------------------------

    def cancel(self) -> str:
        """Cancel the run (its whole process tree is stopped); returns the new status."""
        answer = self.workspace.call("POST", "runs", self.id, "cancel", body={})
        self._details = answer
        return str(answer.get("status", ""))

    def wait_for_completion(
        self, show_output: bool = False, wait_post_processing: bool = False, raise_on_error: bool = True,
        poll_seconds: float = 0.5,
    ) -> Dict[str, Any]:
        """Wait until the run ends; with ``show_output`` print its log as it grows.

        Returns:
            The run's details.

        Raises:
            RunFailed: the run ended Failed or Canceled (and ``raise_on_error``); carries the
                server's error and the log's last lines.
        """
        offset = 0
        if show_output:
            print(f"RunId: {self.id}\nStatus: {self._details.get('status')}", flush=True)
        while True:
            if show_output:
                text, offset = self.get_logs(offset)
                if text:
                    sys.stdout.write(text)
                    sys.stdout.flush()
            details = self.get_details()
            if details.get("status") in TERMINAL:
                break
            time.sleep(poll_seconds)
        if show_output:
            text, offset = self.get_logs(offset)
            sys.stdout.write(text)
            print(f"\nExecution Summary\n=================\nRunId: {self.id}\nStatus: {details.get('status')}", flush=True)
        if details.get("status") != "Completed" and raise_on_error:
            raise RunFailed(self.id, str(details.get("status")), str(details.get("error") or ""), self._log_tail())
        return details

    def _log_tail(self) -> str:
        try:
            text, _ = self.get_logs(0)
        except Exception:  # the error itself matters more than its log
            return ""
        return "\n".join(text.rstrip("\n").split("\n")[-LOG_TAIL_LINES:])


# -- code snapshots --------------------------------------------------------------------------


def _ignore_patterns(root: Path) -> List[str]:
    patterns: List[str] = []
    for name in (".gitignore", ".amlignore"):
        try:
            lines = (root / name).read_text(encoding="utf-8").splitlines()
        except OSError:
            continue
        patterns.extend(line.strip() for line in lines if line.strip() and not line.startswith("#"))
    return patterns


def _ignored(rel: str, patterns: Iterable[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    for p in patterns:
        if p.startswith("!"):
            continue  # negations are not supported: keeping a file is the safe side
        p = p.rstrip("/")
        anchored = p.startswith("/")
        p = p.lstrip("/")
        if fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(rel, p + "/*") or (not anchored and fnmatch.fnmatch(name, p)):
            return True
        if not anchored and any(fnmatch.fnmatch(part, p) for part in rel.split("/")[:-1]):
            return True
    return False


def snapshot_files(root: Path) -> List[Tuple[Path, Dict[str, Any]]]:
    """``(local, {"path", "size", "sha256"})`` of the files a snapshot of ``root`` holds."""
    if not root.is_dir():
        raise NotADirectoryError(f"source_directory {root} is not a folder")
    patterns = _ignore_patterns(root)
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            local = Path(dirpath) / name
            rel = local.relative_to(root).as_posix()
            if name.startswith(".") or not local.is_file() or _ignored(rel, patterns):
                continue
            files.append((local, {"path": rel, "size": local.stat().st_size, "sha256": sha256_file(local)}))
    files.sort(key=lambda item: item[1]["path"])
    total = sum(f["size"] for _, f in files)
    if total > SNAPSHOT_LIMIT:
        biggest = sorted(files, key=lambda x: -x[1]["size"])[:5]
        raise ValueError(
            f"the code folder {root} holds {total} bytes (limit {SNAPSHOT_LIMIT}); the biggest files: "
            + ", ".join(f"{f['path']} ({f['size']} bytes)" for _, f in biggest)
            + ". Move data to a datastore or list it in .amlignore"
        )
    return files


def upload_snapshot(workspace: Workspace, root: Path) -> str:
    """Post the snapshot's manifest, upload the blobs the server lacks; returns the snapshot id."""
    files = snapshot_files(root)
    created = workspace.call("POST", "snapshots", body={"files": [f for _, f in files]})
    missing = set(created.get("missing", []))
    sent = set()
    for local, f in files:
        if f["sha256"] in missing and f["sha256"] not in sent:
            path = workspace.path("blobs", f["sha256"])
            with open(local, "rb") as body:
                workspace.connection.guard(
                    lambda: workspace.connection.http.put_stream(path, body, f["size"], {})
                )
            sent.add(f["sha256"])
    return str(created["id"])
