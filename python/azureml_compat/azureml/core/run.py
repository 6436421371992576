"""``azureml.core.Run``: inside a job, ``Run.get_context()`` is Cairn's in-job run (``log``,
``complete`` …); outside, the object ``Experiment.submit`` returns (status, logs, metrics, files)."""

from __future__ import annotations

from typing import Any

import cairn
from cairn.experiment import SubmittedRun

from .._compat import given, ignored, unsupported


class Run(SubmittedRun):
    """A run of an experiment."""

    def __init__(self, experiment: Any, run_id: str, outputs: Any = None, **kwargs: Any) -> None:
        SubmittedRun.__init__(self, experiment, run_id, **kwargs)

    @staticmethod
    def get_context(allow_offline: bool = True, used_for_context_manager: bool = False, **kwargs: Any) -> "cairn.Run":
        """The current job's run (an offline run that prints what it logs outside a job)."""
        return cairn.Run.get_context(allow_offline=allow_offline)

    @staticmethod
    def get(workspace: Any, run_id: str) -> "Run":
        """The run ``run_id`` of ``workspace``, whatever its experiment."""
        from .experiment import Experiment

        details = workspace.call("GET", "runs", run_id)
        return Run(Experiment(workspace, details["experiment"]), run_id, _details=details)

    def get_environment(self) -> Any:
        """The environment the run's job used."""
        from .environment import Environment

        ref = str(self.get_details().get("environment") or "")
        if not ref:
            raise ValueError(f"run {self.id} has no environment (it is not a job)")
        name, _, version = ref.partition("@")
        return Environment.get(self.workspace, name, version=version or None)

    @classmethod
    def _wrap(cls, run: SubmittedRun) -> "Run":
        return cls(run.experiment, run.id, _details=run._details)

    def get_children(self, *args: Any, **kwargs: Any) -> list:  # type: ignore[override]
        return [Run._wrap(r) for r in SubmittedRun.get_children(self)]

    def register_model(self, model_name: str, model_path: str, tags: Any = None,  # type: ignore[override]
                       properties: Any = None, model_framework: Any = None, model_framework_version: Any = None,
                       description: Any = None, datasets: Any = None, sample_input_dataset: Any = None,
                       sample_output_dataset: Any = None, resource_configuration: Any = None,
                       **kwargs: Any) -> Any:
        """Register the run's artifact ``model_path`` as the next version of ``model_name``."""
        from .model import Model

        ignored("Run.register_model", given(datasets=datasets, sample_input_dataset=sample_input_dataset,
                                            sample_output_dataset=sample_output_dataset,
                                            resource_configuration=resource_configuration, **kwargs))
        return Model._wrap(SubmittedRun.register_model(
            self, model_name, model_path, tags, description, properties=properties,
            model_framework=model_framework, model_framework_version=model_framework_version))

    def log(self, *args: Any, **kwargs: Any) -> None:
        raise unsupported(
            "logging to a run from outside its job",
            "log inside the training script with Run.get_context().log(...)",
        )

    def complete(self, *args: Any, **kwargs: Any) -> None:
        raise unsupported("completing a submitted run from outside its job", "the job's exit code decides")

    def __repr__(self) -> str:
        return SubmittedRun.__repr__(self)
