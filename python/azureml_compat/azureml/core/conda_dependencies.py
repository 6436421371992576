"""``azureml.core.conda_dependencies.CondaDependencies``: a conda environment specification.

Unlike Azure ML's, a new ``CondaDependencies()`` is empty: no ``python=3.6.2`` and no
``azureml-defaults`` (Cairn builds from PyPI with ``uv``, using the server's Python unless a
version is set, and provides ``azureml.core`` itself). ``azureml-*`` pip packages are dropped
when the environment is registered, for the same reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, List, Optional, Union

from .._compat import ignored


class CondaDependencies:
    """Conda packages, pip packages, a Python version and channels; serialises to conda YAML."""

    def __init__(self, conda_dependencies_file_path: Union[str, Path, None] = None, **kwargs: Any) -> None:
        self._python: Optional[str] = None
        self._conda: List[str] = []
        self._pip: List[str] = []
        self._channels: List[str] = ["conda-forge"]
        self._pip_options: List[str] = []
        if conda_dependencies_file_path is not None:
            self._load(Path(conda_dependencies_file_path).read_text(encoding="utf-8"), str(conda_dependencies_file_path))

    @staticmethod
    def create(
        pip_indexurl: Optional[str] = None,
        pip_packages: Optional[List[str]] = None,
        conda_packages: Optional[List[str]] = None,
        python_version: Optional[str] = None,
        pin_sdk_version: bool = True,
    ) -> "CondaDependencies":
        """A specification with these packages (``pin_sdk_version`` has no meaning in Cairn)."""
        deps = CondaDependencies()
        if pip_indexurl:
            deps.set_pip_index_url(pip_indexurl)
        for p in conda_packages or []:
            deps.add_conda_package(p)
        for p in pip_packages or []:
            deps.add_pip_package(p)
        if python_version:
            deps.set_python_version(python_version)
        return deps

    # -- editing -----------------------------------------------------------------------------

    def add_conda_package(self, conda_package: str) -> None:
        name = _name(conda_package)
        if name == "python":
            self.set_python_version(conda_package.split("=", 1)[1] if "=" in conda_package else "")
            return
        self._conda = [p for p in self._conda if _name(p) != name] + [conda_package]

    def add_pip_package(self, pip_package: str) -> None:
        name = _name(pip_package)
        self._pip = [p for p in self._pip if _name(p) != name] + [pip_package]

    def remove_conda_package(self, conda_package: str) -> None:
        self._conda = [p for p in self._conda if _name(p) != _name(conda_package)]

    def remove_pip_package(self, pip_package: str) -> None:
        self._pip = [p for p in self._pip if _name(p) != _name(pip_package)]

    def add_channel(self, channel: str) -> None:
        if channel not in self._channels:
            self._channels.append(channel)

    def remove_channel(self, channel: str) -> None:
        self._channels = [c for c in self._channels if c != channel]

    def set_python_version(self, version: str) -> None:
        self._python = version.lstrip("=") or None

    def get_python_version(self) -> Optional[str]:
        return self._python

    def set_pip_index_url(self, index_url: str) -> None:
        ignored("CondaDependencies", ["pip_indexurl"], "Cairn's environments install from the server's PyPI index")

    def set_pip_option(self, pip_option: str) -> None:
        ignored("CondaDependencies", ["pip options"], "uv builds Cairn's environments")

    def add_tensorflow_conda_package(self, core_type: str = "cpu", version: Optional[str] = None) -> None:
        self.add_conda_package("tensorflow" + (f"={version}" if version else ""))

    def add_tensorflow_pip_package(self, core_type: str = "cpu", version: Optional[str] = None) -> None:
        self.add_pip_package("tensorflow" + (f"=={version}" if version else ""))

    @property
    def conda_packages(self) -> Iterator[str]:
        return iter(self._conda)

    @property
    def pip_packages(self) -> Iterator[str]:
        return iter(self._pip)

    @property
    def conda_channels(self) -> Iterator[str]:
        return iter(self._channels)

    # -- files -------------------------------------------------------------------------------

    def serialize_to_string(self) -> str:
        """The specification as conda environment YAML."""
        lines = [
            "# Conda environment specification. The dependencies defined in this file will",
            "# be automatically provisioned for runs with userManagedDependencies=False.",
            "",
            "name: project_environment",
            "dependencies:",
        ]
        if self._python:
            lines.append(f"- python={self._python}")
        lines.extend(f"- {p}" for p in self._conda)
        if self._pip:
            lines.append("- pip:")
            lines.extend(f"  - {p}" for p in self._pip)
        lines.append("channels:")
        lines.extend(f"- {c}" for c in self._channels)
        return "\n".join(lines) + "\n"

    def save(self, path: Union[str, Path, None] = None) -> str:
        target = Path(path or "conda_dependencies.yml")
        target.write_text(self.serialize_to_string(), encoding="utf-8")
        return str(target)

    def save_to_file(self, base_directory: Union[str, Path], conda_file_path: Optional[str] = None) -> str:
        return self.save(Path(base_directory) / (conda_file_path or "conda_dependencies.yml"))

    def _load(self, text: str, where: str) -> None:
        """Reads the YAML this class writes (and hand-written files of the same simple shape)."""
        self._channels = []
        section = None
        in_pip = False
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].rstrip()
            if not line.strip():
                continue
            indent = len(line) - len(line.lstrip())
            item = line.strip()
            if indent == 0 and not item.startswith("-"):
                key, _, value = item.partition(":")
                section, in_pip = key.strip(), False
                if section not in ("name", "dependencies", "channels", "prefix", "variables"):
                    raise ValueError(f"{where}:{number}: unexpected key {section!r}")
                continue
            if not item.startswith("- "):
                if section == "variables":
                    continue
                raise ValueError(f"{where}:{number}: expected a `- item` line, got {item!r}")
            value = item[2:].strip().strip("'\"")
            if section == "channels":
                self._channels.append(value)
            elif section == "dependencies":
                if value == "pip:":
                    in_pip = True
                elif in_pip and indent > 0:
                    self.add_pip_package(value)
                else:
                    in_pip = False
                    self.add_conda_package(value)
            else:
                raise ValueError(f"{where}:{number}: a list item outside dependencies/channels")
        if not self._channels:
            self._channels = ["conda-forge"]


def _name(spec: str) -> str:
    spec = spec.strip().rsplit("::", 1)[-1]
    end = 0
    while end < len(spec) and (spec[end].isalnum() or spec[end] in "._-"):
        end += 1
    return spec[:end].lower().replace("_", "-")
