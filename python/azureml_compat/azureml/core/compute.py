"""``azureml.core.compute``: ``AmlCompute`` is a Cairn local cluster; ``ComputeTarget.create`` is
get-or-create, as in Azure ML. ``AksCompute`` (inference clusters) is not supported yet."""

from __future__ import annotations

from typing import Any, Optional

import cairn.compute as _sdk

from .._compat import given, ignored, unsupported


class ComputeTarget(_sdk.ComputeTarget):
    """A compute target; ``ComputeTarget(workspace=ws, name=name)`` loads an existing one."""

    def __init__(self, workspace: Any, name: str, **kwargs: Any) -> None:
        _sdk.ComputeTarget.__init__(self, workspace, name, **kwargs)

    @staticmethod
    def create(workspace: Any, name: str, provisioning_configuration: Any) -> "AmlCompute":  # type: ignore[override]
        if isinstance(provisioning_configuration, AksProvisioningConfiguration):
            raise unsupported("AksCompute (inference clusters)")
        if not isinstance(provisioning_configuration, _sdk.ProvisioningConfiguration):
            raise TypeError(
                f"provisioning_configuration must come from AmlCompute.provisioning_configuration(), "
                f"not {type(provisioning_configuration).__name__}"
            )
        created = _sdk.ComputeTarget.create(workspace, name, provisioning_configuration)
        return AmlCompute(workspace, name, _details=created._details)

    def wait_for_completion(  # type: ignore[override]
        self, show_output: bool = False, min_node_count: Optional[int] = None, timeout_in_minutes: int = 20,
        is_delete_operation: bool = False,
    ) -> None:
        _sdk.ComputeTarget.wait_for_completion(self, show_output=show_output)

    @property
    def provisioning_state(self) -> str:
        return "Succeeded"


class AmlCompute(ComputeTarget):
    """Azure ML's training cluster, run as a Cairn local cluster on the server's machine."""

    @staticmethod
    def provisioning_configuration(  # type: ignore[override]
        vm_size: str = "",
        vm_priority: str = "dedicated",
        min_nodes: Any = 0,
        max_nodes: Any = None,
        idle_seconds_before_scaledown: Any = None,
        admin_username: Optional[str] = None,
        admin_user_password: Optional[str] = None,
        admin_user_ssh_key: Optional[str] = None,
        vnet_resourcegroup_name: Optional[str] = None,
        vnet_name: Optional[str] = None,
        subnet_name: Optional[str] = None,
        tags: Any = None,
        description: Optional[str] = None,
        remote_login_port_public_access: str = "NotSpecified",
        identity_type: Optional[str] = None,
        identity_id: Any = None,
        location: Optional[str] = None,
        enable_node_public_ip: bool = True,
        **kwargs: Any,
    ) -> _sdk.ProvisioningConfiguration:
        ignored(
            "AmlCompute.provisioning_configuration",
            given(
                vm_priority=None if vm_priority == "dedicated" else vm_priority,
                admin_username=admin_username, admin_user_password=admin_user_password,
                admin_user_ssh_key=admin_user_ssh_key, vnet_resourcegroup_name=vnet_resourcegroup_name,
                vnet_name=vnet_name, subnet_name=subnet_name, tags=tags, identity_type=identity_type,
                identity_id=identity_id, location=location, **kwargs,
            ),
            "Cairn's clusters are process slots on the server's machine",
        )
        return _sdk.ProvisioningConfiguration(
            vm_size=vm_size or "STANDARD_D2_V2",
            min_nodes=min_nodes,
            max_nodes=1 if max_nodes is None else max_nodes,
            idle_seconds_before_scaledown=120 if idle_seconds_before_scaledown is None else idle_seconds_before_scaledown,
            description=description,
        )


class AksProvisioningConfiguration:
    """Never built: ``AksCompute.provisioning_configuration`` raises until endpoints exist."""


class AksCompute(ComputeTarget):
    """Azure Kubernetes Service inference clusters: not supported yet."""

    class ClusterPurpose:
        FAST_PROD = "FastProd"
        DEV_TEST = "DevTest"

    @staticmethod
    def provisioning_configuration(*args: Any, **kwargs: Any) -> AksProvisioningConfiguration:  # type: ignore[override]
        raise unsupported(
            "AksCompute (inference clusters for model deployment)",
            "Cairn's online endpoints arrive with a later issue",
        )

    @staticmethod
    def attach_configuration(*args: Any, **kwargs: Any) -> Any:
        raise unsupported("AksCompute.attach_configuration")
