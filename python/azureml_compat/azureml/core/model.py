"""``azureml.core.model``: ``Model`` (the registry; ``get_model_path`` inside a scoring replica,
reusing ``cairn.serving``'s) and ``InferenceConfig`` (a scoring script, its folder and an
environment, given as an ``Environment`` or as a conda file registered at deploy time)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import cairn.model as _sdk
from cairn import serving as _serving

from .._compat import given, ignored, unsupported


class Model(_sdk.Model):
    """A registered model version: ``Model(ws, "wine_model")`` (latest) or ``version=N``."""

    def __init__(self, workspace: Any, name: Optional[str] = None, id: Optional[str] = None,
                 tags: Any = None, properties: Any = None, version: Optional[int] = None,
                 run_id: Optional[str] = None, model_framework: Optional[str] = None, **kwargs: Any) -> None:
        if "_details" in kwargs:
            _sdk.Model.__init__(self, workspace, name or "", _details=kwargs.pop("_details"))
            return
        ignored("Model", given(tags=tags, properties=properties, run_id=run_id,
                               model_framework=model_framework, **kwargs), "only name, id and version select a model")
        if id:
            name, _, v = id.partition(":")
            version = int(v) if v else version
        if not name:
            raise ValueError("Model needs a name or an id ('name:version')")
        _sdk.Model.__init__(self, workspace, name, version)

    @staticmethod
    def get_model_path(model_name: str, version: Optional[int] = None, _workspace: Any = None) -> str:
        """The path of a registered model's file or folder. Inside a scoring replica, where it
        was deployed; outside one, with ``_workspace`` (as Azure ML v1 lets a scoring script be
        tried locally), the version is downloaded under ``./azureml-models/NAME/VERSION/`` (kept
        for the next call) and that path returned."""
        if _workspace is None or os.environ.get("AZUREML_MODEL_DIR"):
            return _serving.Model.get_model_path(model_name, version)
        model = Model(_workspace, model_name, version=version)
        return model.download(target_dir=Path("azureml-models") / model.name / str(model.version), exist_ok=True)

    @classmethod
    def _wrap(cls, model: _sdk.Model) -> "Model":
        return cls(model.workspace, model.name, _details=model._details)

    @staticmethod
    def register(workspace: Any, model_path: Union[str, Path], model_name: str,  # type: ignore[override]
                 tags: Optional[Mapping[str, Any]] = None, properties: Optional[Mapping[str, Any]] = None,
                 description: Optional[str] = None, datasets: Any = None, model_framework: Optional[str] = None,
                 model_framework_version: Optional[str] = None, child_paths: Any = None,
                 sample_input_dataset: Any = None, sample_output_dataset: Any = None,
                 resource_configuration: Any = None, **kwargs: Any) -> "Model":
        """Register the local file or folder ``model_path`` as the next version of ``model_name``."""
        if child_paths:
            raise unsupported("Model.register(child_paths=...)", "register the folder, or each file as its own model")
        ignored("Model.register", given(datasets=datasets, sample_input_dataset=sample_input_dataset,
                                        sample_output_dataset=sample_output_dataset,
                                        resource_configuration=resource_configuration, **kwargs))
        return Model._wrap(_sdk.Model.register(workspace, model_path, model_name, tags=tags, description=description,
                                               properties=properties, model_framework=model_framework,
                                               model_framework_version=model_framework_version))

    def update(self, tags: Optional[Mapping[str, Any]] = None, description: Optional[str] = None,  # type: ignore[override]
               sample_input_dataset: Any = None, sample_output_dataset: Any = None,
               resource_configuration: Any = None, **kwargs: Any) -> None:
        """Azure ML v1's ``update``: ``tags`` replace the version's tags; ``description`` too."""
        ignored("Model.update", given(sample_input_dataset=sample_input_dataset,
                                      sample_output_dataset=sample_output_dataset,
                                      resource_configuration=resource_configuration, **kwargs))
        gone = [k for k in self.tags if tags is not None and k not in tags]
        _sdk.Model.update(self, description=description, tags=tags, remove_tags=gone)

    @staticmethod
    def list(workspace: Any, name: Optional[str] = None, tags: Optional[List[Any]] = None,  # type: ignore[override]
             latest: bool = False, **kwargs: Any) -> List["Model"]:
        ignored("Model.list", given(**kwargs))
        return [Model._wrap(m) for m in _sdk.Model.list(workspace, name=name, tags=tags, latest=latest)]

    @staticmethod
    def deploy(workspace: Any, name: str, models: List[Any], inference_config: Any = None,  # type: ignore[override]
               deployment_config: Any = None, deployment_target: Any = None, overwrite: bool = False,
               show_output: bool = False) -> Any:
        """Deploy ``models`` (one or more registered versions) as service ``name`` on the local
        inference target (an ``AksCompute`` or no target maps there); returns a ``Webservice``.
        As in Azure ML, ``AZUREML_MODEL_DIR`` is the model's folder with one model and holds
        ``NAME/VERSION`` for each with several; ``Model.get_model_path(NAME)`` finds either."""
        from cairn.webservice import DeploymentConfiguration, deploy

        from .webservice import Webservice

        if inference_config is None:
            raise unsupported("Model.deploy without an InferenceConfig (no-code deployment)")
        config = deployment_config if deployment_config is not None else DeploymentConfiguration()
        sdk_config = inference_config.to_cairn(workspace, name) if isinstance(inference_config, InferenceConfig) \
            else inference_config
        deploy(workspace, name, models, sdk_config, config, overwrite=overwrite)
        return Webservice(workspace, name)


class InferenceConfig:
    """The scoring script (``entry_script`` in ``source_directory``) and its environment: an
    ``Environment``, or ``conda_file`` (relative to ``source_directory``), registered at deploy
    time as environment ``<service>-env``."""

    def __init__(self, entry_script: Optional[str] = None, runtime: Optional[str] = None,
                 conda_file: Optional[str] = None, extra_docker_file_steps: Any = None,
                 source_directory: Optional[str] = None, enable_gpu: Any = None, description: Optional[str] = None,
                 base_image: Any = None, base_image_registry: Any = None, cuda_version: Any = None,
                 environment: Any = None) -> None:
        if not entry_script:
            raise ValueError("InferenceConfig needs entry_script (the scoring script with init() and run())")
        if runtime not in (None, "python", "Python"):
            raise unsupported(f"InferenceConfig(runtime={runtime!r})", "only python scoring scripts run on Cairn")
        if extra_docker_file_steps or base_image or enable_gpu or cuda_version:
            raise unsupported("custom Docker images and GPU settings in InferenceConfig",
                              "Cairn runs replicas from environments built with uv")
        if environment is not None and conda_file:
            raise ValueError("give either environment or conda_file, not both")
        if environment is None and not conda_file:
            raise ValueError("InferenceConfig needs an environment or a conda_file")
        ignored("InferenceConfig", given(description=description, base_image_registry=base_image_registry))
        self.entry_script = entry_script
        self.source_directory = source_directory or "."
        self.conda_file = conda_file
        self.environment = environment

    def to_cairn(self, workspace: Any, service_name: str) -> Any:
        """The SDK's InferenceConfig, registering the environment if it has no version yet."""
        from cairn.webservice import InferenceConfig as SdkInferenceConfig

        from .environment import Environment

        env = self.environment
        if env is None:
            env = Environment.from_conda_specification(f"{service_name}-env",
                                                       Path(self.source_directory) / str(self.conda_file))
        if isinstance(env, Environment):
            if env.version is None:
                env.register(workspace)
            env = env.to_cairn()
        return SdkInferenceConfig(self.entry_script, self.source_directory, env)


__all__ = ["Model", "InferenceConfig"]
