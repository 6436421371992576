"""``azureml.core.authentication``: accepted for compatibility; Cairn authenticates with its own
token (``CAIRN_TOKEN``, ``cairn login``, or the local server's admin token)."""

from __future__ import annotations

from typing import Any, Optional

from .._compat import given, ignored


class AbstractAuthentication:
    """Base of the Azure authentication classes; carries no credentials in Cairn."""


class InteractiveLoginAuthentication(AbstractAuthentication):
    """Azure's browser login; Cairn needs none (tenant and cloud are ignored)."""

    def __init__(self, force: bool = False, tenant_id: Optional[str] = None, cloud: Optional[str] = None, **kwargs: Any) -> None:
        ignored("InteractiveLoginAuthentication", given(force=force, tenant_id=tenant_id, cloud=cloud, **kwargs))


class ServicePrincipalAuthentication(AbstractAuthentication):
    """Azure's service principal; Cairn uses its API token instead (these arguments are ignored)."""

    def __init__(
        self,
        tenant_id: Optional[str] = None,
        service_principal_id: Optional[str] = None,
        service_principal_password: Optional[str] = None,
        cloud: str = "AzureCloud",
        **kwargs: Any,
    ) -> None:
        ignored(
            "ServicePrincipalAuthentication",
            given(tenant_id=tenant_id, service_principal_id=service_principal_id,
                  service_principal_password=service_principal_password, **kwargs),
            "Cairn authenticates with CAIRN_TOKEN or `cairn login`",
        )


class AzureCliAuthentication(AbstractAuthentication):
    """Azure CLI credentials; ignored (Cairn uses its own token)."""


class MsiAuthentication(AbstractAuthentication):
    """Managed identity; ignored (Cairn uses its own token)."""
