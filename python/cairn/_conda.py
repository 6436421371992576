"""Conda package specs translated to PyPI requirements, for environments built from Python.

Cairn builds environments with ``uv`` from PyPI (``crates/cairn-jobs/src/env/conda.rs`` does
this for YAML files the CLI reads). The SDK sends the server a resolved spec, so it needs the
same translation; the tables below are kept equal to the Rust ones by a test
(``python/tests_sdk/test_units.py``), which reads them from ``conda.rs``.
"""

from __future__ import annotations

import re
from typing import List, Optional, Tuple

#: Conda names whose PyPI distribution is named differently (or, for documentation, the same).
CONDA_TO_PYPI = {
    "pytorch": "torch",
    "pytorch-cpu": "torch",
    "pytorch-gpu": "torch",
    "py-xgboost": "xgboost",
    "py-xgboost-cpu": "xgboost",
    "py-xgboost-gpu": "xgboost",
    "opencv": "opencv-python",
    "py-opencv": "opencv-python",
    "tensorflow-gpu": "tensorflow",
    "matplotlib-base": "matplotlib",
    "msgpack-python": "msgpack",
    "pytables": "tables",
    "python-graphviz": "graphviz",
    "py-lightgbm": "lightgbm",
    "scikit-learn": "scikit-learn",
    "numpy": "numpy",
    "pandas": "pandas",
    "scipy": "scipy",
    "matplotlib": "matplotlib",
    "seaborn": "seaborn",
    "joblib": "joblib",
    "statsmodels": "statsmodels",
    "lightgbm": "lightgbm",
    "xgboost": "xgboost",
    "prophet": "prophet",
    "pmdarima": "pmdarima",
    "pillow": "pillow",
    "torchvision": "torchvision",
    "torchaudio": "torchaudio",
    "tensorflow": "tensorflow",
}

#: Conda packages with no PyPI equivalent: system libraries, compilers, CUDA, R.
CONDA_ONLY = frozenset({
    "cudatoolkit", "cudatoolkit-dev", "cudnn", "cuda", "cuda-toolkit", "cuda-nvcc",
    "cuda-runtime", "pytorch-cuda", "nccl", "magma-cuda", "mkl", "mkl-include",
    "mkl_fft", "mkl_random", "intel-openmp", "libgcc", "libgcc-ng", "libstdcxx-ng",
    "libgfortran", "libgfortran-ng", "libgomp", "_libgcc_mutex", "_openmp_mutex", "ld_impl_linux-64",
    "libblas", "libcblas", "liblapack", "openblas", "libopenblas", "gcc",
    "gxx", "gcc_linux-64", "gxx_linux-64", "gfortran", "make", "openssl",
    "ca-certificates", "zlib", "libzlib", "xz", "bzip2", "sqlite",
    "tk", "readline", "ncurses", "libffi", "libuuid", "libiconv",
    "libxml2", "libpng", "jpeg", "libjpeg-turbo", "freetype", "hdf5",
    "libprotobuf", "libopencv", "ffmpeg", "graphviz", "nodejs", "r-base",
    "git", "icu", "yaml", "libyaml",
})

#: Conda meta-packages that only select a build variant; pip wheels have no such choice.
CONDA_VARIANT_SELECTORS = frozenset({"cpuonly", "nomkl", "blas", "pytorch-mutex"})

_NAME = re.compile(r"[A-Za-z0-9._-]*")


class CondaOnlyPackage(ValueError):
    """A conda package that pip cannot install (a system library, compiler, CUDA …)."""


def conda_version(rest: str) -> str:
    """Conda version syntax as a pip specifier: ``=1.26`` -> ``==1.26.*``, `` 1.26`` -> ``==1.26``,
    ``>=1.2,<2`` unchanged, ``==1.26.4`` exact, ``=1.26.4=build`` -> ``==1.26.4.*``."""
    space_form = rest[:1].isspace()
    rest = rest.strip()
    if not rest:
        return ""

    def fuzzy(v: str) -> str:
        v = v.rstrip("*").rstrip(".")
        return f"=={v}.*" if v else ""

    if space_form:
        version = rest.split()[0]
        if version[:1] in "<>=!~":
            return version
        return fuzzy(version) if version.endswith("*") else f"=={version}"
    if rest.startswith("==") or not rest.startswith("="):
        return rest.replace(" ", "")
    return fuzzy(rest[1:].split("=")[0])


def conda_package(spec: str) -> Tuple[str, Optional[str]]:
    """One conda match spec as ``("python", "3.11")`` or ``("pypi", "numpy==1.26.*")``;
    ``("dropped", name)`` for build-variant selectors and ``("pip", "")`` for pip itself.

    Raises:
        CondaOnlyPackage: the package exists only on conda.
        ValueError: the spec is not one Cairn can translate.
    """
    text = spec.strip()
    if "::" in text:
        text = text.rsplit("::", 1)[1]
    if "[" in text or "|" in text:
        raise ValueError(f"conda match spec `{text}` is not supported: write `name=1.2` or `name>=1.2,<2`")
    name = _NAME.match(text).group(0)  # type: ignore[union-attr]
    if not name:
        raise ValueError(f"`{text}` does not start with a package name")
    version = conda_version(text[len(name):])
    name = name.lower()
    if name == "pip":
        return ("pip", "")
    if name == "python":
        return ("python", version.lstrip("=").replace(".*", "") or None)
    if name in CONDA_TO_PYPI:
        return ("pypi", CONDA_TO_PYPI[name] + version)
    if name in CONDA_ONLY or name.startswith("r-"):
        raise CondaOnlyPackage(
            f"conda package `{name}` has no PyPI equivalent (Cairn builds environments from PyPI with uv); "
            "remove it or use a user-managed environment"
        )
    if name in CONDA_VARIANT_SELECTORS:
        return ("dropped", name)
    return ("pypi", name + version)


def translate(conda_packages: List[str]) -> Tuple[Optional[str], List[str], List[str]]:
    """``(python_request, pypi_requirements, notes)`` for a list of conda specs."""
    python: Optional[str] = None
    packages: List[str] = []
    notes: List[str] = []
    for spec in conda_packages:
        kind, value = conda_package(spec)
        if kind == "python":
            if python is not None and value is not None and value != python:
                raise ValueError(f"python is given twice ({python} and {value})")
            python = value or python
        elif kind == "pypi":
            packages.append(value or "")
        elif kind == "dropped":
            notes.append(f"dropped `{value}`: a conda build-variant selector, meaningless for pip")
    return python, packages, notes
