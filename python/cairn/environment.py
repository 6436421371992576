"""``cairn.Environment``: the Python packages a job runs with.

An environment is a Python version request plus PyPI requirements (conda package names are
translated, see ``_conda.py``) and environment variables. ``register`` stores a new version
on the server (versions with the same packages share one venv, keyed by hash); ``build``
makes the server build it with ``uv`` now rather than at the first job.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from . import _conda
from .workspace import Workspace


#: Seconds a build may take before the client stops waiting (large stacks download gigabytes).
BUILD_TIMEOUT = 3600.0


class Environment:
    """A named set of packages.

    Attributes:
        name: the environment's name.
        version: the server's version number once registered (or fetched), else None.
        pip_packages: PyPI requirements (``scikit-learn``, ``numpy>=1.26``).
        conda_packages: conda specs, translated to PyPI when the environment is registered.
        python_version: an interpreter request for uv (``3.11``), or None for the server's python3.
        environment_variables: set in the job's process.
        description: free text.
    """

    def __init__(
        self,
        name: str,
        pip_packages: Optional[List[str]] = None,
        conda_packages: Optional[List[str]] = None,
        python_version: Optional[str] = None,
        environment_variables: Optional[Dict[str, str]] = None,
        description: str = "",
    ) -> None:
        if not name:
            raise ValueError("an environment needs a name")
        self.name = name
        self.version: Optional[int] = None
        self.pip_packages: List[str] = list(pip_packages or [])
        self.conda_packages: List[str] = list(conda_packages or [])
        self.python_version = python_version
        self.environment_variables: Dict[str, str] = dict(environment_variables or {})
        self.description = description
        self.hash: Optional[str] = None

    def __repr__(self) -> str:
        version = "" if self.version is None else f"@{self.version}"
        return f"Environment({self.name}{version}, packages={self.spec()['packages']})"

    @classmethod
    def from_pip_requirements(cls, name: str, file_path: Union[str, Path]) -> "Environment":
        """An environment from a ``requirements.txt`` (comments and blank lines skipped)."""
        lines = Path(file_path).read_text(encoding="utf-8").splitlines()
        packages = [line.split("#", 1)[0].strip() for line in lines]
        for p in packages:
            if p.startswith("-"):
                raise ValueError(f"{file_path}: option lines such as {p!r} are not supported; list packages only")
        return cls(name, pip_packages=[p for p in packages if p])

    def spec(self) -> Dict[str, Any]:
        """The spec the server stores: ``{"python", "packages", "variables"}`` (conda names translated)."""
        python, translated, notes = _conda.translate(self.conda_packages)
        for note in notes:
            print(f"note: environment {self.name}: {note}", file=sys.stderr)
        spec: Dict[str, Any] = {
            "packages": translated + self.pip_packages,
            "variables": dict(self.environment_variables),
        }
        if self.python_version or python:
            spec["python"] = self.python_version or python
        return spec

    def register(self, workspace: Workspace) -> "Environment":
        """Store this environment as a new version (the server numbers it); returns ``self``."""
        answer = workspace.call(
            "POST",
            "environments",
            body={"name": self.name, "description": self.description, "spec": self.spec()},
        )
        self._update(answer)
        return self

    @classmethod
    def get(cls, workspace: Workspace, name: str, version: Optional[int] = None) -> "Environment":
        """A registered environment (the latest version unless ``version``); ``NotFound`` otherwise."""
        ref = name if version is None else f"{name}@{int(version)}"
        return cls._from_server(workspace.call("GET", "environments", ref))

    @classmethod
    def list(cls, workspace: Workspace) -> List["Environment"]:
        """Every version of every environment."""
        return [cls._from_server(e) for e in workspace.call("GET", "environments")]

    def build(self, workspace: Workspace, show_output: bool = False) -> Dict[str, Any]:
        """Build (or find cached) this environment's venv on the server; waits until it is ready.

        Returns:
            ``{"hash", "ready", "reused", "log"}``.

        Raises:
            BadRequest: the build failed (the message holds uv's explanation).
        """
        if self.version is None:
            self.register(workspace)
        built = workspace.call(
            "POST", "environments", f"{self.name}@{self.version}", "build", body={}, timeout=BUILD_TIMEOUT
        )
        if show_output:
            print(built.get("log", ""), end="", flush=True)
        return built

    @property
    def ref(self) -> str:
        """``name@version`` once registered, else the name (the latest version)."""
        return self.name if self.version is None else f"{self.name}@{self.version}"

    def _update(self, answer: Dict[str, Any]) -> None:
        self.version = int(answer["version"])
        self.hash = answer.get("hash")
        self.description = answer.get("description", self.description)

    @classmethod
    def _from_server(cls, answer: Dict[str, Any]) -> "Environment":
        spec = answer.get("spec") or {}
        env = cls(
            answer["name"],
            pip_packages=list(spec.get("packages") or []),
            python_version=spec.get("python"),
            environment_variables=dict(spec.get("variables") or {}),
        )
        env._update(answer)
        return env
