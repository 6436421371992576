"""``azureml.core.Workspace`` on a Cairn server.

``create``, ``get`` and ``from_config`` connect to the server named by ``CAIRN_URL`` (or
``cairn login``, or the local server) with Cairn's token; the Azure coordinates
(subscription, resource group, location …) are accepted and reported once as ignored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import cairn.workspace as _sdk
from .datastore import Datastore

from .._compat import given, ignored


class Workspace(_sdk.Workspace):
    """A Cairn workspace under Azure ML v1's names."""

    def __init__(
        self,
        subscription_id: Optional[str] = None,
        resource_group: Optional[str] = None,
        workspace_name: Optional[str] = None,
        auth: Any = None,
        _location: Optional[str] = None,
        _disable_service_check: bool = False,
        _workspace_id: Optional[str] = None,
        sku: str = "basic",
        tags: Optional[Dict[str, str]] = None,
        _cloud: str = "AzureCloud",
        **kwargs: Any,
    ) -> None:
        ignored("Workspace", given(subscription_id=subscription_id, resource_group=resource_group,
                                   _location=_location, tags=tags, **kwargs))
        url, token, name = _sdk.resolve_connection(workspace=workspace_name)
        if not name:
            raise ValueError("Workspace needs workspace_name (or CAIRN_WORKSPACE)")
        connection = _sdk.Connection(url, token)
        details = connection.call("GET", "workspaces", name)
        _sdk.Workspace.__init__(self, name, connection=connection, _details=details)

    @classmethod
    def _wrap(cls, ws: _sdk.Workspace) -> "Workspace":
        obj = cls.__new__(cls)
        _sdk.Workspace.__init__(obj, ws.name, connection=ws.connection, _details=ws._details)
        return obj

    @classmethod
    def create(  # type: ignore[override]
        cls,
        name: str,
        auth: Any = None,
        subscription_id: Optional[str] = None,
        resource_group: Optional[str] = None,
        location: Optional[str] = None,
        create_resource_group: bool = True,
        sku: str = "basic",
        tags: Optional[Dict[str, str]] = None,
        friendly_name: Optional[str] = None,
        exist_ok: bool = False,
        show_output: bool = True,
        **kwargs: Any,
    ) -> "Workspace":
        """Create the workspace on the Cairn server (``exist_ok`` returns an existing one)."""
        ignored("Workspace.create", given(subscription_id=subscription_id, resource_group=resource_group,
                                          location=location, **kwargs))
        ws = _sdk.Workspace.create(name, description=friendly_name or "", exist_ok=exist_ok)
        if show_output:
            print(f"Deployed workspace {name} on {ws.url}", flush=True)
        return cls._wrap(ws)

    @classmethod
    def get(  # type: ignore[override]
        cls,
        name: str,
        auth: Any = None,
        subscription_id: Optional[str] = None,
        resource_group: Optional[str] = None,
        location: Optional[str] = None,
        cloud: str = "AzureCloud",
        id: Optional[str] = None,
        **kwargs: Any,
    ) -> "Workspace":
        ignored("Workspace.get", given(subscription_id=subscription_id, resource_group=resource_group,
                                       location=location, id=id, **kwargs))
        return cls._wrap(_sdk.Workspace.get(name))

    @classmethod
    def from_config(  # type: ignore[override]
        cls, path: Union[str, Path, None] = None, auth: Any = None, _logger: Any = None, _file_name: Optional[str] = None
    ) -> "Workspace":
        """The workspace named in ``config.json`` (``workspace_name``) when ``path`` points at one, else
        the one Cairn's configuration names (``CAIRN_WORKSPACE`` or ``cairn login``)."""
        name = None
        if path is not None:
            p = Path(path)
            for candidate in (p, p / (_file_name or "config.json"), p / ".azureml" / (_file_name or "config.json")):
                if candidate.is_file():
                    config = json.loads(candidate.read_text(encoding="utf-8"))
                    name = config.get("workspace_name")
                    ignored("Workspace.from_config", [k for k in config if k != "workspace_name"])
                    break
            else:
                raise FileNotFoundError(f"no workspace configuration at {path}")
        return cls._wrap(_sdk.Workspace.from_config(workspace=name))

    @staticmethod
    def list(  # type: ignore[override]
        subscription_id: Optional[str] = None, auth: Any = None, resource_group: Optional[str] = None, **kwargs: Any
    ) -> Dict[str, List["Workspace"]]:
        """``{name: [Workspace]}`` of every workspace the token can see (Azure ML's shape)."""
        ignored("Workspace.list", given(subscription_id=subscription_id, resource_group=resource_group, **kwargs))
        return {ws.name: [Workspace._wrap(ws)] for ws in _sdk.Workspace.list()}

    def get_default_datastore(self) -> Datastore:
        return Datastore.get(self, "default")

    def write_config(self, path: Optional[str] = None, file_name: Optional[str] = None) -> None:
        """Writes ``config.json`` with the workspace's name (and the server's URL, for reference)."""
        folder = Path(path or ".") / ".azureml"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / (file_name or "config.json")).write_text(
            json.dumps({"workspace_name": self.name, "cairn_url": self.url}, indent=2), encoding="utf-8"
        )

    @property
    def models(self) -> Dict[str, Any]:
        """The latest version of each registered model, by name."""
        from .model import Model

        return {m.name: m for m in Model.list(self, latest=True)}

    @property
    def webservices(self) -> Dict[str, Any]:
        """The deployed services, by name."""
        from .webservice import Webservice

        return {s.name: Webservice(self, s.name) for s in Webservice.list(self)}

    @property
    def location(self) -> str:
        return "local"
