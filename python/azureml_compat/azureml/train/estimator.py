"""``azureml.train.estimator.Estimator``: an entry script with ``script_params``, a compute target
and an environment, submitted like a ``ScriptRunConfig``."""

from __future__ import annotations

import hashlib
from typing import Any, Dict, List, Optional

import cairn.experiment as _sdk
from cairn.errors import NotFound

from .._compat import given, ignored, unsupported
from ..core.conda_dependencies import CondaDependencies
from ..core.environment import Environment
from ..core.script_run_config import environment_ref


class Estimator:
    def __init__(
        self,
        source_directory: Any,
        *,
        compute_target: Any = None,
        vm_size: Optional[str] = None,
        vm_priority: Optional[str] = None,
        entry_script: Optional[str] = None,
        script_params: Optional[Dict[str, Any]] = None,
        node_count: int = 1,
        process_count_per_node: int = 1,
        distributed_backend: Any = None,
        distributed_training: Any = None,
        use_gpu: bool = False,
        use_docker: bool = True,
        custom_docker_base_image: Optional[str] = None,
        custom_docker_image: Optional[str] = None,
        image_registry_details: Any = None,
        user_managed: bool = False,
        conda_packages: Optional[List[str]] = None,
        pip_packages: Optional[List[str]] = None,
        conda_dependencies_file_path: Optional[str] = None,
        pip_requirements_file_path: Optional[str] = None,
        conda_dependencies_file: Optional[str] = None,
        pip_requirements_file: Optional[str] = None,
        environment_variables: Optional[Dict[str, str]] = None,
        environment_definition: Any = None,
        inputs: Any = None,
        source_directory_data_store: Any = None,
        shm_size: Optional[str] = None,
        resume_from: Any = None,
        max_run_duration_seconds: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        if not entry_script:
            raise ValueError("Estimator needs entry_script")
        if node_count != 1 or process_count_per_node != 1 or distributed_backend or distributed_training:
            raise unsupported("distributed training (node_count, process_count_per_node, distributed_training)")
        if use_gpu:
            raise unsupported("GPU estimators (use_gpu=True)")
        if resume_from is not None:
            raise unsupported("resume_from")
        if compute_target is None:
            raise unsupported("Estimator without compute_target (vm_size-provisioned clusters)",
                              "create an AmlCompute and pass it as compute_target")
        ignored("Estimator", given(vm_size=vm_size, vm_priority=vm_priority, custom_docker_base_image=custom_docker_base_image,
                                   custom_docker_image=custom_docker_image, image_registry_details=image_registry_details,
                                   source_directory_data_store=source_directory_data_store, shm_size=shm_size,
                                   inputs=inputs, **kwargs),
                "Cairn runs jobs in uv venvs on the server's machine; data references go in script_params")
        self.source_directory = source_directory
        self.entry_script = entry_script
        self.script_params = dict(script_params or {})
        self.compute_target = compute_target
        self.max_run_duration_seconds = max_run_duration_seconds
        self.environment_variables = dict(environment_variables or {})
        packages_given = any([conda_packages, pip_packages, conda_dependencies_file_path, pip_requirements_file_path,
                              conda_dependencies_file, pip_requirements_file])
        if environment_definition is not None:
            if packages_given:
                raise ValueError("give either environment_definition or packages, not both (as Azure ML)")
            self.environment = environment_definition
        else:
            if user_managed:
                raise unsupported("user-managed estimator environments (user_managed=True)")
            deps = CondaDependencies(conda_dependencies_file_path or conda_dependencies_file) \
                if (conda_dependencies_file_path or conda_dependencies_file) else CondaDependencies()
            for p in conda_packages or []:
                deps.add_conda_package(p)
            for p in pip_packages or []:
                deps.add_pip_package(p)
            requirements = pip_requirements_file_path or pip_requirements_file
            if requirements:
                for p in Environment.from_pip_requirements("x", requirements).python.conda_dependencies.pip_packages:
                    deps.add_pip_package(p)
            # An anonymous environment, named after its content so that equal estimators share it.
            digest = hashlib.sha256(deps.serialize_to_string().encode()).hexdigest()[:12]
            env = Environment(f"estimator-{digest}")
            env.python.conda_dependencies = deps
            self.environment = env
        self._anonymous_environment = environment_definition is None

    @property
    def arguments(self) -> List[Any]:
        """``script_params`` as command-line words: ``--key value`` (a value of "" gives the key alone)."""
        words: List[Any] = []
        for key, value in self.script_params.items():
            words.append(key)
            if value != "" and value is not None:
                words.append(value)
        return words

    def to_cairn(self, workspace: Any) -> _sdk.ScriptRunConfig:
        if self._anonymous_environment and self.environment.version is None:
            # Its name is a digest of its packages: an existing version has the same content.
            try:
                self.environment.version = Environment.get(workspace, self.environment.name).version
            except NotFound:
                pass  # registered by environment_ref below
        return _sdk.ScriptRunConfig(
            source_directory=self.source_directory,
            script=self.entry_script,
            arguments=self.arguments,
            compute_target=self.compute_target,
            environment=environment_ref(workspace, self.environment),
            environment_variables=self.environment_variables,
            max_run_duration_seconds=self.max_run_duration_seconds,
        )
