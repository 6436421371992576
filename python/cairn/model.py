"""Registered models in the SDK: ``Model.register`` (from local files), ``Model(ws, name[,
version])``, ``Model.list``, ``download``; ``SubmittedRun.register_model`` registers a run's
artifacts through :func:`register_from_run`.

Local files go up as the content-addressed blobs the workspace lacks (``POST …/blobs/missing``,
``PUT …/blobs/SHA256``), then the version is posted with its manifest (``…/models/NAME/versions``
``{"files": […]}``), so a version is visible only once all its bytes are stored.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

from .datastore import check_relative, download_to, refuse_existing, sha256_file
from .workspace import Workspace


def _tags(tags: Optional[Mapping[str, Any]]) -> Dict[str, str]:
    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise ValueError(f"tags must be a mapping of names to values, not {type(tags).__name__}")
    return {str(k): "" if v is None else str(v) for k, v in tags.items()}


def _has_tag(tags: Mapping[str, str], wanted: Union[str, Sequence[str]]) -> bool:
    if isinstance(wanted, str):
        return wanted in tags
    if len(wanted) == 1:
        return wanted[0] in tags
    if len(wanted) == 2:
        return tags.get(wanted[0]) == str(wanted[1])
    raise ValueError(f"a tag filter is a name or [name, value], not {wanted!r}")


def _local_files(model_path: Union[str, Path]) -> List[Dict[str, Any]]:
    """The manifest of ``model_path`` (a file: kept under its base name; a folder: its files
    under the folder's name, as Azure ML lays out a registered folder)."""
    root = Path(model_path)
    if root.is_file():
        return [{"local": root, "path": root.name, "size": root.stat().st_size, "sha256": sha256_file(root)}]
    if not root.is_dir():
        raise FileNotFoundError(f"model_path {str(model_path)!r} is neither a file nor a folder")
    files = []
    base = root.resolve().name
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            local = Path(dirpath) / name
            if not local.is_file():
                continue
            rel = check_relative(f"{base}/{local.relative_to(root).as_posix()}", "model file")
            files.append({"local": local, "path": rel, "size": local.stat().st_size, "sha256": sha256_file(local)})
    if not files:
        raise ValueError(f"model_path {str(model_path)!r} holds no files")
    return files


class Model:
    """One version of a registered model.

    ``Model(ws, "wine_model")`` is the latest version, ``Model(ws, "wine_model", version=2)`` a
    given one (:class:`~cairn.errors.NotFound` when absent). Attributes: ``name``, ``version``,
    ``id`` (``name:version``), ``tags``, ``description``, ``run_id``, ``workspace``.
    """

    def __init__(self, workspace: Workspace, name: str, version: Optional[int] = None, *,
                 _details: Optional[Dict[str, Any]] = None) -> None:
        self.workspace = workspace
        if _details is None:
            if not isinstance(name, str) or not name:
                raise ValueError(f"name must be a non-empty string, not {name!r}")
            _details = workspace.call("GET", "models", name, "versions", "latest" if version is None else str(int(version)))
        self._details = _details

    @property
    def name(self) -> str:
        return str(self._details["name"])

    @property
    def version(self) -> int:
        return int(self._details["version"])

    @property
    def id(self) -> str:
        return str(self._details["id"])

    @property
    def tags(self) -> Dict[str, str]:
        return dict(self._details.get("tags") or {})

    @property
    def description(self) -> str:
        return str(self._details.get("description") or "")

    @property
    def run_id(self) -> Optional[str]:
        return self._details.get("run_id")

    def __repr__(self) -> str:
        return f"Model(workspace={self.workspace.name!r}, name={self.name!r}, version={self.version})"

    def serialize(self) -> Dict[str, Any]:
        """The version as the server describes it."""
        return dict(self._details)

    @classmethod
    def register(
        cls,
        workspace: Workspace,
        model_path: Union[str, Path],
        model_name: str,
        tags: Optional[Mapping[str, Any]] = None,
        description: Optional[str] = None,
        properties: Optional[Mapping[str, Any]] = None,
        model_framework: Optional[str] = None,
        model_framework_version: Optional[str] = None,
    ) -> "Model":
        """Register the local file or folder ``model_path`` as the next version of ``model_name``.

        Raises:
            FileNotFoundError: ``model_path`` does not exist.
            BadRequest: the server refused the name, tags or manifest.
        """
        if not isinstance(model_name, str) or not model_name:
            raise ValueError(f"model_name must be a non-empty string, not {model_name!r}")
        files = _local_files(model_path)
        body = _version_body(tags, description, properties, model_framework, model_framework_version)
        missing = set(workspace.call("POST", "blobs", "missing",
                                     body={"sha256": sorted({f["sha256"] for f in files})})["missing"])
        for f in files:
            if f["sha256"] in missing:
                path = workspace.path("blobs", f["sha256"])
                with open(f["local"], "rb") as stream:
                    workspace.connection.guard(
                        lambda: workspace.connection.http.put_stream(path, stream, f["size"], {})
                    )
                missing.discard(f["sha256"])
        body["files"] = [{"path": f["path"], "size": f["size"], "sha256": f["sha256"]} for f in files]
        return cls(workspace, model_name, _details=workspace.call("POST", "models", model_name, "versions", body=body))

    @classmethod
    def list(cls, workspace: Workspace, name: Optional[str] = None,
             tags: Optional[List[Union[str, Sequence[str]]]] = None, latest: bool = False) -> List["Model"]:
        """The versions of every model (or of ``name``), newest first; only the latest of each
        with ``latest``. ``tags`` keeps versions matching each entry: a tag name (``"stage"``), or
        a name and its value (``["stage", "prod"]``), as Azure ML filters."""
        names = [name] if name else [m["name"] for m in workspace.pages("models")]
        found: List[Model] = []
        for n in names:
            versions = sorted(workspace.call("GET", "models", n, "versions"), key=lambda v: -int(v["version"]))
            if latest:
                versions = versions[:1]
            found.extend(cls(workspace, n, _details=v) for v in versions)
        if tags:
            found = [m for m in found if all(_has_tag(m.tags, t) for t in tags)]
        return found

    def update(self, description: Optional[str] = None, tags: Optional[Mapping[str, Any]] = None,
               remove_tags: Optional[Iterable[str]] = None) -> None:
        """Change this version's description and tags (``tags`` are set, ``remove_tags`` removed)."""
        body: Dict[str, Any] = {}
        if description is not None:
            body["description"] = description
        if tags:
            body["set_tags"] = _tags(tags)
        if remove_tags:
            body["remove_tags"] = list(remove_tags)
        if body:
            self._details = self.workspace.call("PATCH", "models", self.name, "versions", str(self.version),
                                                body=body)

    # Model.update, not self.update: a subclass's update may mean something else (azureml's
    # replaces the tags).
    def add_tags(self, tags: Mapping[str, Any]) -> None:
        Model.update(self, tags=tags)

    def remove_tags(self, tags: Iterable[str]) -> None:
        Model.update(self, remove_tags=tags)

    def get_files(self) -> List[Dict[str, Any]]:
        """``{"path", "size", "sha256"}`` of each file of this version."""
        return list(self.workspace.call("GET", "models", self.name, "versions", str(self.version), "files"))

    def download(self, target_dir: Union[str, Path] = ".", exist_ok: bool = False) -> str:
        """Download the version's files under ``target_dir``, each checked against its SHA-256;
        returns the path of the single file or top folder registered (as Azure ML does). Local
        files already there are refused (nothing is downloaded) unless ``exist_ok``."""
        base = Path(target_dir)
        files = self.get_files()
        targets = []
        for f in files:
            rel = check_relative(f["path"], "model file path sent by the server")
            targets.append((f, rel, base.joinpath(*rel.split("/"))))
        if not exist_ok:
            refuse_existing([target for _, _, target in targets], "exist_ok=True")
        tops = set()
        for f, rel, target in targets:
            download_to(self.workspace, ("models", self.name, "versions", str(self.version), "files",
                                         *rel.split("/")), target, sha256=f.get("sha256"))
            tops.add(rel.split("/")[0])
        return str(base / tops.pop()) if len(tops) == 1 else str(base)

    @staticmethod
    def deploy(workspace: Workspace, name: str, models: List["Model"], inference_config: Any = None,
               deployment_config: Any = None, deployment_target: Any = None, overwrite: bool = False) -> Any:
        """Deploy ``models`` (one or more versions, at most one of each model) as service ``name``:
        an endpoint and a deployment taking all traffic, whose scoring script finds each model with
        ``Model.get_model_path(NAME)``; returns a :class:`~cairn.webservice.Webservice` (call
        ``wait_for_deployment``).
        ``deployment_target`` is accepted for Azure's AKS cluster; Cairn has one local target."""
        from .webservice import deploy

        if inference_config is None:
            raise NotImplementedError("deploying without an InferenceConfig (no-code deployment)")
        return deploy(workspace, name, models, inference_config, deployment_config, overwrite=overwrite)

    def delete(self) -> None:
        """Delete this version (refused while a deployment uses it)."""
        self.workspace.call("DELETE", "models", self.name, "versions", str(self.version))


def _version_body(tags: Optional[Mapping[str, Any]], description: Optional[str],
                  properties: Optional[Mapping[str, Any]], framework: Optional[str],
                  framework_version: Optional[str]) -> Dict[str, Any]:
    body: Dict[str, Any] = {"tags": _tags(tags), "properties": _tags(properties)}
    if description:
        body["description"] = str(description)
    if framework:
        body["framework"] = str(framework)
    if framework_version:
        body["framework_version"] = str(framework_version)
    return body


def register_from_run(workspace: Workspace, run_id: str, model_name: str, model_path: str,
                      tags: Optional[Mapping[str, Any]] = None, description: Optional[str] = None,
                      properties: Optional[Mapping[str, Any]] = None,
                      model_framework: Optional[str] = None,
                      model_framework_version: Optional[str] = None) -> Model:
    """Register the run's artifact ``model_path`` (a file or folder) as the next version."""
    if not isinstance(model_name, str) or not model_name:
        raise ValueError(f"model_name must be a non-empty string, not {model_name!r}")
    path = check_relative(str(model_path).rstrip("/"), "model_path")
    if not path:
        raise ValueError("model_path must name an artifact of the run")
    body = _version_body(tags, description, properties, model_framework, model_framework_version)
    body.update(run_id=run_id, path=path)
    return Model(workspace, model_name, _details=workspace.call("POST", "models", model_name, "versions", body=body))


__all__ = ["Model", "register_from_run"]
