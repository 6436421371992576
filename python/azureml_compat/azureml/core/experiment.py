"""``azureml.core.Experiment``: ``submit`` takes a ``ScriptRunConfig`` or an ``Estimator``."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import cairn.experiment as _sdk

from .._compat import ignored
from .run import Run


class Experiment(_sdk.Experiment):
    def __init__(self, workspace: Any, name: str, _skip_name_validation: bool = False, _id: Any = None, **kwargs: Any) -> None:
        ignored("Experiment", [k for k in kwargs if kwargs[k]])
        _sdk.Experiment.__init__(self, workspace, name)

    def submit(self, config: Any, tags: Optional[Dict[str, str]] = None, **kwargs: Any) -> Run:  # type: ignore[override]
        """Submit a ScriptRunConfig or Estimator; returns the run (queued)."""
        ignored("Experiment.submit", [k for k in kwargs if kwargs[k]])
        to_config = getattr(config, "to_cairn", None)
        if to_config is None:
            raise TypeError(f"submit expects a ScriptRunConfig or an Estimator, not {type(config).__name__}")
        return Run._wrap(_sdk.Experiment.submit(self, to_config(self.workspace), tags=tags))

    def get_runs(self, *args: Any, **kwargs: Any) -> List[Run]:  # type: ignore[override]
        return [Run._wrap(r) for r in _sdk.Experiment.get_runs(self)]

    @staticmethod
    def list(workspace: Any, experiment_name: Optional[str] = None, **kwargs: Any) -> List["Experiment"]:  # type: ignore[override]
        return [
            Experiment(workspace, e.name)
            for e in _sdk.Experiment.list(workspace)
            if experiment_name is None or e.name == experiment_name
        ]
