"""``cairn.ComputeTarget`` and ``cairn.LocalCluster``: where jobs run.

A local cluster is a pool of node slots on the server's machine (``max_nodes`` jobs at once,
each limited to its size's cores); jobs beyond that wait in the queue. Creation is
get-or-create, as Azure ML's ``ComputeTarget.create``: an existing target of that name is
returned (its settings are not changed).
"""

from __future__ import annotations

import sys
from typing import Any, Dict, List, Optional

from ._client import Conflict
from .workspace import Workspace


class ProvisioningConfiguration:
    """The settings of a new local cluster (the body of ``POST …/computes``)."""

    def __init__(
        self,
        vm_size: str = "STANDARD_D2_V2",
        min_nodes: int = 0,
        max_nodes: int = 1,
        idle_seconds_before_scaledown: int = 120,
        description: Optional[str] = None,
    ) -> None:
        self.vm_size = vm_size or "STANDARD_D2_V2"
        self.min_nodes = _int("min_nodes", min_nodes)
        self.max_nodes = _int("max_nodes", max_nodes)
        self.idle_seconds_before_scaledown = _int("idle_seconds_before_scaledown", idle_seconds_before_scaledown)
        self.description = description

    def to_body(self, name: str) -> Dict[str, Any]:
        body: Dict[str, Any] = {
            "name": name,
            "type": "local",
            "size": self.vm_size,
            "min_instances": self.min_nodes,
            "max_instances": self.max_nodes,
            "idle_time_before_scale_down": self.idle_seconds_before_scaledown,
        }
        if self.description:
            body["description"] = self.description
        return body

    def __repr__(self) -> str:
        return (
            f"ProvisioningConfiguration(vm_size={self.vm_size!r}, min_nodes={self.min_nodes}, "
            f"max_nodes={self.max_nodes})"
        )


def _int(field: str, value: Any) -> int:
    """Node counts often come from environment variables (strings): accept ``"2"``, refuse ``"two"``."""
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{field} must be an integer, not {value!r}") from None


class ComputeTarget:
    """A compute target of a workspace; ``ComputeTarget(ws, name)`` loads an existing one."""

    def __init__(self, workspace: Workspace, name: str, *, _details: Optional[Dict[str, Any]] = None) -> None:
        self.workspace = workspace
        self.name = name
        self._details = _details if _details is not None else workspace.call("GET", "computes", name)

    def __repr__(self) -> str:
        d = self._details
        return (
            f"ComputeTarget(name={self.name!r}, size={d.get('size')!r}, "
            f"nodes={d.get('min_nodes')}..{d.get('max_nodes')})"
        )

    @classmethod
    def create(
        cls, workspace: Workspace, name: str, provisioning_configuration: ProvisioningConfiguration
    ) -> "ComputeTarget":
        """Create the target, or return the existing one of that name."""
        try:
            details = workspace.call("POST", "computes", body=provisioning_configuration.to_body(name))
        except Conflict:
            details = workspace.call("GET", "computes", name)
        return cls(workspace, name, _details=details)

    @classmethod
    def list(cls, workspace: Workspace) -> List["ComputeTarget"]:
        return [cls(workspace, c["name"], _details=c) for c in workspace.call("GET", "computes")]

    @property
    def vm_size(self) -> str:
        return str(self._details.get("size", ""))

    @property
    def min_nodes(self) -> int:
        return int(self._details.get("min_nodes", 0))

    @property
    def max_nodes(self) -> int:
        return int(self._details.get("max_nodes", 0))

    def get_status(self) -> Dict[str, Any]:
        """Nodes busy/idle/starting and the running and queued runs (fresh from the server)."""
        self._details = self.workspace.call("GET", "computes", self.name)
        return dict(self._details.get("state") or {})

    def wait_for_completion(self, show_output: bool = False, **_: Any) -> None:
        """Local clusters are ready as soon as they exist; prints their state when ``show_output``."""
        state = self.get_status()
        if show_output:
            print(
                f"Succeeded: compute {self.name} is ready ({self.vm_size}, {self.min_nodes}..{self.max_nodes} "
                f"nodes; {state.get('busy_nodes', 0)} busy, {len(state.get('queued_runs', []))} queued)",
                file=sys.stdout,
                flush=True,
            )

    def delete(self) -> None:
        self.workspace.call("DELETE", "computes", self.name)


class LocalCluster(ComputeTarget):
    """A pool of node slots on the server's machine (Azure ML's ``AmlCompute``, run locally)."""

    @staticmethod
    def provisioning_configuration(
        vm_size: str = "STANDARD_D2_V2",
        min_nodes: int = 0,
        max_nodes: int = 1,
        idle_seconds_before_scaledown: int = 120,
        description: Optional[str] = None,
    ) -> ProvisioningConfiguration:
        """Settings for :meth:`ComputeTarget.create`."""
        return ProvisioningConfiguration(vm_size, min_nodes, max_nodes, idle_seconds_before_scaledown, description)
