"""``azureml.core.ScriptRunConfig``: a script, its arguments, a compute target and an environment."""

from __future__ import annotations

from typing import Any, List, Optional, Sequence

import cairn.experiment as _sdk
from cairn.environment import Environment as _CairnEnvironment

from .._compat import ignored, unsupported
from .environment import Environment


def environment_ref(workspace: Any, environment: Any) -> Any:
    """What the SDK's submit takes: ``name@version`` of a registered environment (registering it
    first if needed), or a name."""
    if isinstance(environment, Environment):
        if environment.version is None:
            environment.register(workspace)
        return f"{environment.name}@{environment.version}"
    if isinstance(environment, (_CairnEnvironment, str)) or environment is None:
        return environment
    raise TypeError(f"environment must be an Environment, not {type(environment).__name__}")


class ScriptRunConfig:
    def __init__(
        self,
        source_directory: Any,
        script: Optional[str] = None,
        arguments: Optional[Sequence[Any]] = None,
        run_config: Any = None,
        _telemetry_values: Any = None,
        compute_target: Any = None,
        environment: Any = None,
        distributed_job_config: Any = None,
        resume_from: Any = None,
        max_run_duration_seconds: Optional[int] = None,
        command: Any = None,
        docker_runtime_config: Any = None,
    ) -> None:
        if run_config is not None:
            raise unsupported("ScriptRunConfig(run_config=...)", "pass compute_target and environment directly")
        if distributed_job_config is not None:
            raise unsupported("distributed training (distributed_job_config)")
        if resume_from is not None:
            raise unsupported("resume_from")
        if docker_runtime_config is not None:
            ignored("ScriptRunConfig", ["docker_runtime_config"], "Cairn runs jobs in uv venvs, not containers")
        self.source_directory = source_directory
        self.script = script
        self.arguments: List[Any] = list(arguments or [])
        self.compute_target = compute_target
        self.environment = environment
        self.max_run_duration_seconds = max_run_duration_seconds
        self.command = command

    def to_cairn(self, workspace: Any) -> _sdk.ScriptRunConfig:
        return _sdk.ScriptRunConfig(
            source_directory=self.source_directory,
            script=self.script,
            arguments=self.arguments,
            compute_target=self.compute_target,
            environment=environment_ref(workspace, self.environment),
            command=self.command,
            max_run_duration_seconds=self.max_run_duration_seconds,
        )
