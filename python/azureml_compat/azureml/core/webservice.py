"""``azureml.core.webservice``: services are Cairn endpoints with one deployment on the local
inference target; ``AciWebservice``/``AksWebservice``/``LocalWebservice.deploy_configuration``
give its sizing."""

from __future__ import annotations

from typing import Any, Optional

import cairn.webservice as _sdk

from .._compat import given, ignored, unsupported


class Webservice(_sdk.Webservice):
    """A deployed service: ``Webservice(ws, "wine-service")`` loads an existing one."""

    def __init__(self, workspace: Any, name: str) -> None:
        _sdk.Webservice.__init__(self, workspace, name)

    def update(self, models: Optional[list] = None, inference_config: Optional[_sdk.InferenceConfig] = None,
               num_replicas: Optional[int] = None, autoscale_enabled: Optional[bool] = None,
               tags: Optional[dict] = None, description: Optional[str] = None, **kwargs: Any) -> None:
        """Azure ML v1's ``update``: new models (the whole list, one or more), scoring
        code/environment or replica count (the server replaces the replicas without dropping
        requests: follow with ``wait_for_deployment()``); ``tags`` (replacing the old ones) and
        ``description`` change at once."""
        if autoscale_enabled:
            raise unsupported("autoscaling (autoscale_enabled=True)", "set num_replicas")
        ignored("Webservice.update", given(**kwargs), "Cairn's replicas are processes on the server's machine")
        if tags is not None or description is not None:
            self.update_endpoint(tags=tags, description=description)
            if models is None and inference_config is None and num_replicas is None:
                return
        _sdk.Webservice.update(self, models=models, inference_config=inference_config, instance_count=num_replicas)

    @staticmethod
    def deploy_configuration(cpu_cores: float = 1, memory_gb: float = 1, **kwargs: Any) -> _sdk.DeploymentConfiguration:
        return _deploy_configuration("Webservice.deploy_configuration", cpu_cores, memory_gb, None, kwargs)


def _deploy_configuration(where: str, cpu_cores: Optional[float], memory_gb: Optional[float],
                          instances: Optional[int], extra: dict) -> _sdk.DeploymentConfiguration:
    ignored(where, given(**extra), "Cairn's replicas are processes on the server's machine")
    return _sdk.DeploymentConfiguration(
        cpu_cores=1 if cpu_cores is None else cpu_cores,
        memory_gb=1 if memory_gb is None else memory_gb,
        instance_count=1 if instances is None else instances,
    )


class AksWebservice(Webservice):
    """A service Azure would run on AKS; here on Cairn's local inference target."""

    @staticmethod
    def deploy_configuration(cpu_cores: Optional[float] = None, memory_gb: Optional[float] = None,  # type: ignore[override]
                             autoscale_enabled: Optional[bool] = None, num_replicas: Optional[int] = None,
                             **kwargs: Any) -> _sdk.DeploymentConfiguration:
        if autoscale_enabled:
            raise unsupported("autoscaling (autoscale_enabled=True)", "set num_replicas")
        return _deploy_configuration("AksWebservice.deploy_configuration", cpu_cores, memory_gb, num_replicas, kwargs)


class AciWebservice(Webservice):
    """A service Azure would run on Container Instances; here on Cairn's local inference target.
    Unlike ACI's default, a Cairn service always requires one of its keys (``get_keys()``)."""

    @staticmethod
    def deploy_configuration(cpu_cores: Optional[float] = None, memory_gb: Optional[float] = None,  # type: ignore[override]
                             tags: Any = None, properties: Any = None, description: Optional[str] = None,
                             location: Optional[str] = None, auth_enabled: Optional[bool] = None,
                             **kwargs: Any) -> _sdk.DeploymentConfiguration:
        if auth_enabled is not True:
            ignored("AciWebservice.deploy_configuration", ["auth_enabled"],
                    "a Cairn service always requires a key: send 'Authorization: Bearer ' + service.get_keys()[0]")
        return _deploy_configuration("AciWebservice.deploy_configuration", cpu_cores, memory_gb, None,
                                     dict(kwargs, tags=tags, properties=properties, description=description,
                                          location=location))


class LocalWebservice(Webservice):
    """Azure's local Docker service; on Cairn, the same local inference target as any service."""

    @staticmethod
    def deploy_configuration(port: Optional[int] = None, **kwargs: Any) -> _sdk.DeploymentConfiguration:  # type: ignore[override]
        return _deploy_configuration("LocalWebservice.deploy_configuration", None, None, None,
                                     dict(kwargs, port=port))


__all__ = ["Webservice", "AciWebservice", "AksWebservice", "LocalWebservice"]
