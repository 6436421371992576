"""``azureml.core.Environment``: packages through ``python.conda_dependencies``, registered and
built by the Cairn server with ``uv`` (no Docker: ``docker.enabled`` and images are ignored)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Union

import cairn.environment as _sdk

from .._compat import ignored, unsupported
from .conda_dependencies import CondaDependencies


class PythonSection:
    """``env.python``: ``conda_dependencies`` and whether dependencies are user-managed."""

    def __init__(self) -> None:
        self.user_managed_dependencies = False
        self.interpreter_path = "python"
        self.conda_dependencies: CondaDependencies = CondaDependencies()
        self.conda_dependencies_file: Optional[str] = None


class DockerSection:
    """``env.docker``: accepted and ignored (Cairn runs jobs in uv venvs, not containers)."""

    def __init__(self) -> None:
        self._enabled = False
        self._base_image: Optional[str] = None

    @property
    def enabled(self) -> bool:
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        if value:
            ignored("Environment.docker", ["enabled=True"], "Cairn runs jobs in uv venvs, not containers")
        self._enabled = bool(value)

    @property
    def base_image(self) -> Optional[str]:
        return self._base_image

    @base_image.setter
    def base_image(self, value: Optional[str]) -> None:
        if value:
            ignored("Environment.docker", ["base_image"], "Cairn runs jobs in uv venvs, not containers")
        self._base_image = value

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_") and name not in ("enabled", "base_image") and value:
            ignored("Environment.docker", [name], "Cairn runs jobs in uv venvs, not containers")
        object.__setattr__(self, name, value)


class BuildResult:
    """What ``Environment.build`` returns: the build is already over when it is returned."""

    def __init__(self, answer: Dict[str, Any]) -> None:
        self.answer = answer

    def wait_for_completion(self, show_output: bool = False) -> None:
        if show_output:
            print(self.answer.get("log", ""), end="", flush=True)

    @property
    def log(self) -> str:
        return str(self.answer.get("log", ""))


class Environment:
    """A named Python environment; ``register`` stores a new version on the Cairn server."""

    def __init__(self, name: str, **kwargs: Any) -> None:
        if not name:
            raise ValueError("an environment needs a name")
        ignored("Environment", [k for k in kwargs if kwargs[k]])
        self.name = name
        self.version: Optional[int] = None
        self.python = PythonSection()
        self.docker = DockerSection()
        self.environment_variables: Dict[str, str] = {}
        self.inferencing_stack_version: Optional[str] = None

    def __repr__(self) -> str:
        return f"Environment(name={self.name!r}, version={self.version!r})"

    # -- mapping onto the SDK ------------------------------------------------------------------

    def to_cairn(self) -> _sdk.Environment:
        """The SDK environment (``azureml-*`` pip packages dropped: Cairn provides ``azureml.core``)."""
        if self.python.user_managed_dependencies:
            raise unsupported(
                "user-managed environments (python.user_managed_dependencies=True)",
                "let Cairn build the environment from conda_dependencies",
            )
        deps = self.python.conda_dependencies
        pip = []
        for p in deps.pip_packages:
            if p.strip().lower().startswith("azureml"):
                ignored("Environment", [p], "Cairn provides the azureml compatibility layer itself")
            else:
                pip.append(p)
        env = _sdk.Environment(
            self.name,
            pip_packages=pip,
            conda_packages=list(deps.conda_packages),
            python_version=deps.get_python_version(),
            environment_variables=self.environment_variables,
        )
        env.version = self.version
        return env

    @classmethod
    def _from_cairn(cls, env: _sdk.Environment) -> "Environment":
        obj = cls(env.name)
        obj.version = env.version
        obj.python.conda_dependencies = CondaDependencies.create(
            pip_packages=env.pip_packages, python_version=env.python_version
        )
        obj.environment_variables = dict(env.environment_variables)
        return obj

    # -- Azure ML's API ------------------------------------------------------------------------

    def register(self, workspace: Any) -> "Environment":
        """Store this definition as a new version; returns ``self`` with its version set."""
        env = self.to_cairn()
        env.version = None
        env.register(workspace)
        self.version = env.version
        return self

    @staticmethod
    def get(workspace: Any, name: str, version: Optional[Union[int, str]] = None) -> "Environment":
        """A registered environment (the latest version unless ``version``); ``NotFound`` otherwise."""
        return Environment._from_cairn(_sdk.Environment.get(workspace, name, None if version is None else int(version)))

    @staticmethod
    def list(workspace: Any) -> Dict[str, "Environment"]:
        return {name: Environment._from_cairn(env) for name, env in workspace.environments.items()}

    @staticmethod
    def from_conda_specification(name: str, file_path: Union[str, Path]) -> "Environment":
        env = Environment(name)
        env.python.conda_dependencies = CondaDependencies(file_path)
        return env

    @staticmethod
    def from_pip_requirements(name: str, file_path: Union[str, Path], pip_version: Optional[str] = None) -> "Environment":
        env = Environment(name)
        for p in _sdk.Environment.from_pip_requirements(name, file_path).pip_packages:
            env.python.conda_dependencies.add_pip_package(p)
        return env

    @staticmethod
    def from_docker_image(*args: Any, **kwargs: Any) -> "Environment":
        raise unsupported("Environment.from_docker_image", "Cairn builds environments from packages with uv")

    @staticmethod
    def from_dockerfile(*args: Any, **kwargs: Any) -> "Environment":
        raise unsupported("Environment.from_dockerfile", "Cairn builds environments from packages with uv")

    def build(self, workspace: Any, image_build_compute: Any = None) -> BuildResult:
        """Build the environment's venv on the server now (registering it first if needed)."""
        if self.version is None:
            self.register(workspace)
        return BuildResult(self.to_cairn().build(workspace))

    def build_local(self, *args: Any, **kwargs: Any) -> None:
        raise unsupported("Environment.build_local", "use build(workspace): the server builds environments")

    def add_private_pip_wheel(self, *args: Any, **kwargs: Any) -> str:
        raise unsupported("Environment.add_private_pip_wheel")
