"""``azureml.core.compute``: ``AmlCompute`` is a Cairn local cluster; ``ComputeTarget.create`` is
get-or-create, as in Azure ML. ``AksCompute`` (inference clusters) maps to the server's one local
inference target: creating one stores nothing and succeeds at once."""

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
            return AksCompute(workspace, name, provisioning_configuration)  # type: ignore[return-value]
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
    """What ``AksCompute.provisioning_configuration`` accepted (Azure-only settings are ignored)."""

    def __init__(self, cluster_purpose: Optional[str] = None) -> None:
        self.cluster_purpose = cluster_purpose


class AksCompute(ComputeTarget):
    """An Azure Kubernetes Service inference cluster, mapped to Cairn's local inference target
    (replicas run as processes on the server's machine); get-or-create is a no-op."""

    class ClusterPurpose:
        FAST_PROD = "FastProd"
        DEV_TEST = "DevTest"

    def __init__(self, workspace: Any, name: str, provisioning_configuration: Any = None, **kwargs: Any) -> None:
        # No server call: the local inference target always exists.
        self.workspace = workspace
        self.name = name
        self.provisioning_configuration_ = provisioning_configuration

    def __repr__(self) -> str:
        return f"AksCompute(name={self.name!r}, target=local inference)"

    @staticmethod
    def provisioning_configuration(agent_count: Any = None, vm_size: Any = None, ssl_cname: Any = None,  # type: ignore[override]
                                   ssl_cert_pem_file: Any = None, ssl_key_pem_file: Any = None,
                                   location: Any = None, vnet_resourcegroup_name: Any = None, vnet_name: Any = None,
                                   subnet_name: Any = None, service_cidr: Any = None, dns_service_ip: Any = None,
                                   docker_bridge_cidr: Any = None, cluster_purpose: Optional[str] = None,
                                   load_balancer_type: Any = None, load_balancer_subnet: Any = None,
                                   **kwargs: Any) -> AksProvisioningConfiguration:
        ignored("AksCompute.provisioning_configuration",
                given(agent_count=agent_count, vm_size=vm_size, ssl_cname=ssl_cname,
                      ssl_cert_pem_file=ssl_cert_pem_file, ssl_key_pem_file=ssl_key_pem_file, location=location,
                      vnet_resourcegroup_name=vnet_resourcegroup_name, vnet_name=vnet_name,
                      subnet_name=subnet_name, service_cidr=service_cidr, dns_service_ip=dns_service_ip,
                      docker_bridge_cidr=docker_bridge_cidr, load_balancer_type=load_balancer_type,
                      load_balancer_subnet=load_balancer_subnet, **kwargs),
                "Cairn serves models on the server's machine")
        return AksProvisioningConfiguration(cluster_purpose)

    def wait_for_completion(self, show_output: bool = False, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        if show_output:
            print(f"{self.name}: Succeeded (Cairn's local inference target)")

    @property
    def provisioning_state(self) -> str:
        return "Succeeded"

    @staticmethod
    def attach_configuration(*args: Any, **kwargs: Any) -> Any:
        raise unsupported("AksCompute.attach_configuration")
