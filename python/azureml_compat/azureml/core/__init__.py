"""``azureml.core`` on Cairn: the names Azure ML v1 scripts import.

Scripts of the v1 era also assume the packages of their era (the walkthrough's ``train.py``
calls ``np.float``, removed in NumPy 1.24, and passes a float ``max_depth``, refused since
scikit-learn 1.1, whose predecessors have no wheels for Python 3.11): pin those in the
environment (``python=3.10``, ``numpy<1.24``, ``scikit-learn<1.1``) rather than edit the script.
"""

from __future__ import annotations

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


__all__ = ["VERSION", "ComputeTarget", "Datastore", "Environment", "Experiment", "Run", "ScriptRunConfig", "Workspace"]
