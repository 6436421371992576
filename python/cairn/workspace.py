"""``cairn.Workspace``: a connection to a Cairn server and one of its workspaces.

Where the server and token come from mirrors the CLI (``crates/cairn/src/config.rs``), so that a
notebook on the server's machine connects with no arguments:

- URL: the argument, ``CAIRN_URL``, ``~/.config/cairn/config.toml`` (``cairn login``), the local
  server's ``server.json`` in its data directory (``CAIRN_HOME`` or ``~/.cairn``), then
  ``http://127.0.0.1:8080``.
- Token: the argument, ``CAIRN_TOKEN``, the saved config (when it was saved for that URL), then
  the local server's ``admin-token`` when the URL is that server's.
- Workspace: the argument, ``CAIRN_WORKSPACE``, then the saved config.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from ._client import ConnectionFailed, Http, NotFound
from .errors import ServerUnreachable

DEFAULT_URL = "http://127.0.0.1:8080"
#: Seconds one SDK request may take (uploads stream in pieces, so this bounds a stall, not a file).
DEFAULT_TIMEOUT = 300.0


def config_path(environ: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_CONFIG_HOME/cairn/config.toml`` or ``~/.config/cairn/config.toml`` (as the CLI)."""
    base = environ.get("XDG_CONFIG_HOME") or os.path.join(environ.get("HOME") or ".", ".config")
    return Path(base) / "cairn" / "config.toml"


def data_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """The local server's default data directory: ``CAIRN_HOME`` or ``~/.cairn``."""
    return Path(environ.get("CAIRN_HOME") or os.path.join(environ.get("HOME") or ".", ".cairn"))


def _read_toml(path: Path) -> Dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        import tomllib  # Python 3.11+
    except ImportError:  # pragma: no cover - older Pythons: the CLI writes only `key = "value"` lines
        values: Dict[str, Any] = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep and value.strip().startswith('"'):
                values[key.strip()] = json.loads(value.strip())
        return values
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"invalid client configuration {path}: {error}") from None


def _same_server(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def resolve_connection(
    url: Optional[str] = None,
    token: Optional[str] = None,
    workspace: Optional[str] = None,
    environ: Mapping[str, str] = os.environ,
) -> Tuple[str, Optional[str], Optional[str]]:
    """``(url, token, workspace)`` by the CLI's rules (see the module docs)."""
    saved = _read_toml(config_path(environ))
    local = data_dir(environ)
    local_url: Optional[str] = None
    try:
        local_url = json.loads((local / "server.json").read_text(encoding="utf-8")).get("url")
    except (OSError, ValueError, AttributeError):
        pass
    local_token: Optional[str] = None
    try:
        local_token = (local / "admin-token").read_text(encoding="utf-8").strip() or None
    except OSError:
        pass
    chosen_url = url or environ.get("CAIRN_URL") or saved.get("url") or local_url or DEFAULT_URL
    chosen_token = token or environ.get("CAIRN_TOKEN")
    if not chosen_token:
        saved_url = saved.get("url")
        if saved.get("token") and (saved_url is None or _same_server(saved_url, chosen_url)):
            chosen_token = saved["token"]
        elif local_token and _same_server(local_url or DEFAULT_URL, chosen_url):
            chosen_token = local_token
    chosen_ws = workspace or environ.get("CAIRN_WORKSPACE") or saved.get("workspace")
    return chosen_url, chosen_token, chosen_ws


class Connection:
    """The server URL and token, and the one place SDK calls go through.

    Network failures become :class:`ServerUnreachable` (naming the URL and how to start a
    server); server errors become the status's :class:`~cairn.errors.ServerError` subclass.
    """

    def __init__(self, url: str, token: Optional[str], timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = url.rstrip("/")
        self.http = Http(url, token, timeout)

    def path(self, *segments: str, query: Optional[Dict[str, Any]] = None) -> str:
        return self.http.api_path(*segments, query=query)

    def call(
        self,
        method: str,
        *segments: str,
        body: Any = None,
        query: Optional[Dict[str, Any]] = None,
        timeout: Optional[float] = None,
    ) -> Any:
        """A JSON call to ``/api/v1/<segments>`` (``timeout``: seconds the answer may take, when the
        server works before it answers, as an environment build does)."""
        http = self.http if timeout is None else self.http.with_timeout(timeout)
        return self.guard(lambda: http.call(method, self.path(*segments, query=query), body))

    def pages(self, *segments: str, query: Optional[Dict[str, Any]] = None) -> Iterator[Any]:
        """Every item of a paginated list (``{"items", "next_page_token"}``), 1,000 a page unless
        ``query`` sets ``page_size``."""
        token: Optional[str] = None
        while True:
            q = {"page_size": 1000, **(query or {})}
            if token:
                q["page_token"] = token
            page = self.call("GET", *segments, query=q)
            yield from page.get("items", [])
            token = page.get("next_page_token")
            if not token:
                return

    def guard(self, call: Any) -> Any:
        try:
            return call()
        except ServerUnreachable:
            raise
        except ConnectionFailed as error:
            raise ServerUnreachable(self.url, str(error).split(": ", 1)[-1]) from error


class Workspace:
    """A workspace on a Cairn server: the home of datastores, environments, computes and runs.

    Connect with ``Workspace.get(name)`` (or ``Workspace(name)``), create with
    ``Workspace.create(name)``, or take everything from the environment/config with
    ``Workspace.from_config()``.

    Attributes:
        name: the workspace's name.
        url: the server's URL.
    """

    def __init__(
        self,
        name: str,
        url: Optional[str] = None,
        token: Optional[str] = None,
        *,
        connection: Optional[Connection] = None,
        _details: Optional[Dict[str, Any]] = None,
    ) -> None:
        if connection is None:
            resolved_url, resolved_token, _ = resolve_connection(url, token, name)
            connection = Connection(resolved_url, resolved_token)
        self.name = name
        self.connection = connection
        self._details = _details

    @property
    def url(self) -> str:
        return self.connection.url

    def __repr__(self) -> str:
        return f"Workspace(name={self.name!r}, url={self.url!r})"

    # -- obtaining a workspace ---------------------------------------------------------------

    @classmethod
    def from_config(
        cls, workspace: Optional[str] = None, url: Optional[str] = None, token: Optional[str] = None
    ) -> "Workspace":
        """The workspace named by the argument, ``CAIRN_WORKSPACE`` or ``cairn login``; checked to exist.

        Raises:
            ValueError: no workspace name is given anywhere.
            NotFound: the server has no such workspace.
        """
        resolved_url, resolved_token, name = resolve_connection(url, token, workspace)
        if not name:
            raise ValueError(
                "no workspace given: pass workspace=NAME, set CAIRN_WORKSPACE, or run "
                "`cairn login --workspace NAME`"
            )
        return cls.get(name, connection=Connection(resolved_url, resolved_token))

    @classmethod
    def get(
        cls,
        name: str,
        url: Optional[str] = None,
        token: Optional[str] = None,
        *,
        connection: Optional[Connection] = None,
    ) -> "Workspace":
        """An existing workspace (``NotFound`` if there is none by that name)."""
        if connection is None:
            resolved_url, resolved_token, _ = resolve_connection(url, token, name)
            connection = Connection(resolved_url, resolved_token)
        details = connection.call("GET", "workspaces", name)
        return cls(name, connection=connection, _details=details)

    @classmethod
    def create(
        cls,
        name: str,
        url: Optional[str] = None,
        token: Optional[str] = None,
        *,
        description: str = "",
        exist_ok: bool = False,
        connection: Optional[Connection] = None,
    ) -> "Workspace":
        """Create a workspace (with its ``default`` datastore); admin tokens only.

        Args:
            exist_ok: return the existing workspace instead of raising ``Conflict``.
        """
        if connection is None:
            resolved_url, resolved_token, _ = resolve_connection(url, token, name)
            connection = Connection(resolved_url, resolved_token)
        from ._client import Conflict

        try:
            details = connection.call("POST", "workspaces", body={"name": name, "description": description})
        except Conflict:
            if not exist_ok:
                raise
            details = connection.call("GET", "workspaces", name)
        return cls(name, connection=connection, _details=details)

    @classmethod
    def list(cls, url: Optional[str] = None, token: Optional[str] = None) -> List["Workspace"]:
        """Every workspace the token can see."""
        resolved_url, resolved_token, _ = resolve_connection(url, token)
        connection = Connection(resolved_url, resolved_token)
        return [
            cls(item["name"], connection=connection, _details=item) for item in connection.pages("workspaces")
        ]

    def get_details(self) -> Dict[str, Any]:
        """The workspace as the server describes it (id, name, description, created_at)."""
        self._details = self.call("GET")
        return dict(self._details)

    def delete(self, force: bool = False) -> None:
        """Delete the workspace (``force`` also deletes what it holds)."""
        self.connection.call("DELETE", "workspaces", self.name, query={"force": "true"} if force else None)

    # -- what it holds -----------------------------------------------------------------------

    def get_default_datastore(self) -> "Datastore":
        """The ``default`` datastore every workspace is created with."""
        from .datastore import Datastore

        return Datastore.get(self, "default")

    @property
    def datastores(self) -> Dict[str, "Datastore"]:
        from .datastore import Datastore

        return {d["name"]: Datastore(self, d["name"], _details=d) for d in self.pages("datastores")}

    @property
    def compute_targets(self) -> Dict[str, "ComputeTarget"]:
        from .compute import ComputeTarget

        return {c["name"]: ComputeTarget(self, c["name"], _details=c) for c in self.call("GET", "computes")}

    @property
    def environments(self) -> Dict[str, "Environment"]:
        """The latest version of every environment, by name."""
        from .environment import Environment

        latest: Dict[str, Dict[str, Any]] = {}
        for env in self.call("GET", "environments"):
            if env["name"] not in latest or env["version"] > latest[env["name"]]["version"]:
                latest[env["name"]] = env
        return {name: Environment._from_server(env) for name, env in latest.items()}

    @property
    def experiments(self) -> Dict[str, "Experiment"]:
        from .experiment import Experiment

        answer = self.call("GET", "experiments")
        items = answer.get("items", []) if isinstance(answer, dict) else answer
        return {e["name"]: Experiment(self, e["name"]) for e in items}

    @property
    def models(self) -> Dict[str, "Model"]:
        """The latest version of each registered model, by name."""
        from .model import Model

        return {m.name: m for m in Model.list(self, latest=True)}

    # -- plumbing for the other SDK classes ---------------------------------------------------

    def call(
        self,
        method: str,
        *segments: str,
        body: Any = None,
        query: Optional[Dict[str, Any]] = None,
        timeout: Optional[float] = None,
    ) -> Any:
        """A JSON call to ``/api/v1/workspaces/<name>/<segments>``."""
        return self.connection.call(
            method, "workspaces", self.name, *segments, body=body, query=query, timeout=timeout
        )

    def pages(self, *segments: str, query: Optional[Dict[str, Any]] = None) -> Iterator[Any]:
        return self.connection.pages("workspaces", self.name, *segments, query=query)

    def path(self, *segments: str, query: Optional[Dict[str, Any]] = None) -> str:
        return self.connection.path("workspaces", self.name, *segments, query=query)


if False:  # pragma: no cover - names for type checkers only (no import cycles at run time)
    from .compute import ComputeTarget
    from .datastore import Datastore
    from .environment import Environment
    from .experiment import Experiment
    from .model import Model

__all__ = ["Workspace", "Connection", "resolve_connection", "NotFound"]
