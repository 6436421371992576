"""``azureml.core`` on Cairn: the names Azure ML v1 scripts import.

Scripts of the v1 era call ``np.float``/``np.int``, which NumPy 1.24 removed; when NumPy is
already imported (``import numpy`` before ``from azureml.core import …``, as in the
walkthrough's ``train.py``) the builtin aliases are restored so those scripts run unchanged.
"""

from __future__ import annotations

import sys

from cairn import __version__ as _cairn_version

from .compute import ComputeTarget
from .datastore import Datastore
from .environment import Environment
from .experiment import Experiment
from .run import Run
from .script_run_config import ScriptRunConfig
from .workspace import Workspace

#: Azure ML's SDK version string; this layer's own version follows ``+cairn``.
VERSION = f"1.0.0+cairn.{_cairn_version}"


def _restore_numpy_aliases() -> None:
    numpy = sys.modules.get("numpy")
    if numpy is None:
        return
    for alias, builtin in (("float", float), ("int", int), ("bool", bool), ("object", object),
                           ("complex", complex), ("str", str)):
        if alias not in vars(numpy):
            setattr(numpy, alias, builtin)


_restore_numpy_aliases()

__all__ = ["VERSION", "ComputeTarget", "Datastore", "Environment", "Experiment", "Run", "ScriptRunConfig", "Workspace"]
