"""Deployed models in the SDK: ``InferenceConfig``, ``DeploymentConfiguration``, ``deploy`` (an
endpoint plus one deployment of one or more models taking all traffic) and ``Webservice`` (state,
keys, scoring).

``deploy`` uploads the scoring code as a snapshot (like a job's), creates the endpoint, then the
deployment; the server starts the replicas. ``Webservice.update`` patches the deployment: the
server replaces its replicas by a new generation (rolling: the old one serves until the new one is
ready) or only adds or removes replicas. ``Webservice.wait_for_deployment`` polls the deployment
until it leaves ``Creating``/``Updating`` and raises :class:`DeploymentFailed` with the replica
logs when it did not become ``Healthy`` (:class:`UpdateFailed` when an update failed and the
previous generation still serves).
"""

from __future__ import annotations

import io
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ._client import CairnError
from .environment import Environment
from .errors import NotFound
from .experiment import upload_snapshot
from .model import Model
from .workspace import Workspace

#: The deployment every ``deploy`` creates behind its endpoint.
DEPLOYMENT = "default"
#: Seconds between two looks at a deployment's state.
POLL_SECONDS = 0.5
#: Lines of replica log printed or quoted.
LOG_TAIL_LINES = 40


class DeploymentFailed(CairnError):
    """The deployment ended Failed or Unhealthy; ``logs`` holds the replicas' log tail."""

    def __init__(self, name: str, state: str, reason: str, logs: str) -> None:
        self.state, self.reason, self.logs = state, reason, logs
        super().__init__(f"deployment of service {name!r} is {state}: {reason}\n--- replica logs ---\n{logs}")


class UpdateFailed(DeploymentFailed):
    """An update's new generation did not start; the previous one still serves (state Healthy)."""


class InferenceConfig:
    """The scoring script (``init()`` and ``run(data)``), the folder it lives in and its environment."""

    def __init__(self, entry_script: str, source_directory: Union[str, Path] = ".",
                 environment: Union[Environment, str, None] = None) -> None:
        if not entry_script:
            raise ValueError("entry_script names the scoring script (e.g. score.py)")
        if environment is None:
            raise ValueError("InferenceConfig needs an environment (an Environment or a registered name)")
        self.entry_script = str(entry_script)
        self.source_directory = Path(source_directory)
        self.environment = environment

    def environment_ref(self) -> str:
        env = self.environment
        if isinstance(env, Environment):
            return env.name if env.version is None else f"{env.name}@{env.version}"
        return str(env)


class DeploymentConfiguration:
    """Replica sizing: ``cpu_cores``/``memory_gb`` per replica (sent as the deployment's
    ``resources``, which hold each replica to them) and ``instance_count``."""

    def __init__(self, cpu_cores: float = 1, memory_gb: float = 1, instance_count: int = 1) -> None:
        if cpu_cores <= 0 or memory_gb <= 0:
            raise ValueError("cpu_cores and memory_gb must be positive")
        if int(instance_count) < 1:
            raise ValueError("instance_count must be at least 1")
        self.cpu_cores, self.memory_gb, self.instance_count = cpu_cores, memory_gb, int(instance_count)

    @property
    def resources(self) -> Dict[str, Dict[str, str]]:
        """The deployment's ``resources`` (Azure ML v2's Kubernetes quantities)."""
        return {"requests": {"cpu": f"{self.cpu_cores:g}", "memory": f"{self.memory_gb:g}Gi"}}


def _model_refs(models: Sequence[Model]) -> List[str]:
    """``NAME:VERSION`` of each model, in order: the deployment's ``models`` list (one version of
    each model; the scoring script finds each with ``Model.get_model_path(NAME)``)."""
    models = list(models)
    if not models:
        raise ValueError("models is empty: give at least one registered Model")
    refs, names = [], {}
    for m in models:
        if not isinstance(m, Model):
            raise TypeError(f"models holds {m!r}: expected registered Model objects")
        if m.name in names:
            raise ValueError(f"models names model {m.name!r} twice ({names[m.name]} and {m.id}): "
                             "a service holds one version of each model")
        names[m.name] = m.id
        refs.append(m.id)
    return refs


def deploy(workspace: Workspace, name: str, models: Sequence[Model], inference_config: InferenceConfig,
           deployment_config: Optional[DeploymentConfiguration] = None, overwrite: bool = False) -> "Webservice":
    """Create endpoint ``name`` and its deployment of ``models`` (one or more registered versions)
    taking all the traffic. With one model ``AZUREML_MODEL_DIR`` is its folder; with several it
    holds ``NAME/VERSION`` for each (Azure ML v1's layouts)."""
    refs = _model_refs(models)
    config = deployment_config or DeploymentConfiguration()
    entry = inference_config.source_directory / inference_config.entry_script
    if not entry.is_file():
        raise FileNotFoundError(f"entry_script {entry} does not exist")
    if overwrite:
        try:
            Webservice(workspace, name).delete()
        except NotFound:
            pass
    code = upload_snapshot(workspace, inference_config.source_directory)
    workspace.call("POST", "endpoints", body={"name": name, "auth_mode": "key"})
    spec = {
        "name": DEPLOYMENT,
        "models": refs,
        "code_configuration": {"code": code, "scoring_script": inference_config.entry_script},
        "environment": inference_config.environment_ref(),
        "instance_count": config.instance_count,
        "resources": config.resources,
    }
    try:
        workspace.call("POST", "endpoints", name, "deployments", body=spec)
        workspace.call("PATCH", "endpoints", name, body={"traffic": {DEPLOYMENT: 100}})
    except Exception:
        # No endpoint left behind without its deployment.
        try:
            workspace.call("DELETE", "endpoints", name)
        except CairnError:
            pass
        raise
    return Webservice(workspace, name)


class Webservice:
    """A deployed service: endpoint ``name`` and its deployment."""

    def __init__(self, workspace: Workspace, name: str) -> None:
        self.workspace = workspace
        self.name = name
        self._endpoint = workspace.call("GET", "endpoints", name)
        self._updating = False

    def __repr__(self) -> str:
        return f"Webservice(workspace={self.workspace.name!r}, name={self.name!r}, state={self.state!r})"

    def _deployment(self) -> Dict[str, Any]:
        return self.workspace.call("GET", "endpoints", self.name, "deployments", self._deployment_name())

    def _deployment_name(self) -> str:
        traffic = self._endpoint.get("traffic") or {}
        live = [d for d, share in traffic.items() if share > 0]
        return live[0] if live else DEPLOYMENT

    @property
    def scoring_uri(self) -> str:
        return str(self._endpoint["scoring_uri"])

    @property
    def swagger_uri(self) -> str:
        return str(self._endpoint["swagger_uri"])

    @property
    def state(self) -> str:
        return str(self._deployment()["state"])

    @property
    def tags(self) -> Dict[str, str]:
        return dict(self._endpoint.get("tags") or {})

    @property
    def description(self) -> str:
        return str(self._endpoint.get("description") or "")

    @property
    def auth_enabled(self) -> bool:
        """Key authentication (``get_keys``)."""
        return self._endpoint.get("auth_mode") == "key"

    @property
    def token_auth_enabled(self) -> bool:
        """Token authentication (``get_token``)."""
        return self._endpoint.get("auth_mode") == "aml_token"

    @property
    def models(self) -> List[Model]:
        """The registered model versions the service holds."""
        refs = self._deployment().get("models") or []
        return [Model(self.workspace, name, int(version)) for name, _, version in (r.rpartition(":") for r in refs)]

    def update_endpoint(self, tags: Optional[Dict[str, Any]] = None, description: Optional[str] = None) -> None:
        """Replace the service's tags and/or description."""
        body: Dict[str, Any] = {}
        if tags is not None:
            body["tags"] = {str(k): str(v) for k, v in tags.items()}
        if description is not None:
            body["description"] = description
        if body:
            self._endpoint = self.workspace.call("PATCH", "endpoints", self.name, body=body)

    def add_tags(self, tags: Dict[str, Any]) -> None:
        self.update_endpoint(tags={**self.tags, **tags})

    def remove_tags(self, keys: Sequence[str]) -> None:
        self.update_endpoint(tags={k: v for k, v in self.tags.items() if k not in set(keys)})

    def get_logs(self, num_lines: int = 5000) -> str:
        """The replicas' logs (last ``num_lines`` lines, cut by the server)."""
        out = io.BytesIO()
        path = self.workspace.path("endpoints", self.name, "deployments", self._deployment_name(), "logs",
                                   query={"lines": int(num_lines)})
        self.workspace.connection.guard(lambda: self.workspace.connection.http.download(path, out))
        return "\n".join(out.getvalue().decode("utf-8", "replace").splitlines())

    def _log_since(self, cursor: Optional[Tuple[str, str]]) -> Tuple[str, Optional[Tuple[str, str]]]:
        """What the log holds past ``cursor`` (the generation and offset of the previous read; its
        tail without one), and the cursor after it: a follower reads only what is new."""
        query = {"since": cursor[1], "generation": cursor[0]} if cursor else None
        path = self.workspace.path("endpoints", self.name, "deployments", self._deployment_name(), "logs",
                                   query=query)
        text, headers = self.workspace.connection.guard(lambda: self.workspace.connection.http.get_text(path))
        generation, offset = headers.get("x-cairn-log-generation"), headers.get("x-cairn-log-offset")
        return text, ((generation, offset) if generation is not None and offset is not None else cursor)

    def update(self, models: Optional[Sequence[Model]] = None, inference_config: Optional[InferenceConfig] = None,
               deployment_config: Optional[DeploymentConfiguration] = None, instance_count: Optional[int] = None,
               environment_variables: Optional[Dict[str, str]] = None) -> None:
        """Change the service's models (the whole list), scoring code and environment, sizing,
        replica count or environment variables; only what is given changes. Returns at once: follow it with
        :meth:`wait_for_deployment`, which raises :class:`UpdateFailed` if the new replicas did not
        start (the previous ones keep serving)."""
        patch: Dict[str, Any] = {}
        if models is not None:
            # The list replaces the deployment's models, whichever field its spec used.
            patch["models"] = _model_refs(models)
            patch["model"] = None
        if inference_config is not None:
            entry = inference_config.source_directory / inference_config.entry_script
            if not entry.is_file():
                raise FileNotFoundError(f"entry_script {entry} does not exist")
            code = upload_snapshot(self.workspace, inference_config.source_directory)
            patch["code_configuration"] = {"code": code, "scoring_script": inference_config.entry_script}
            patch["environment"] = inference_config.environment_ref()
        if deployment_config is not None:
            patch["instance_count"] = deployment_config.instance_count
            patch["resources"] = deployment_config.resources
            patch["instance_type"] = None  # a merge patch: null removes a size given another way
        if instance_count is not None:
            if int(instance_count) < 1:
                raise ValueError("instance_count must be at least 1")
            patch["instance_count"] = int(instance_count)
        if environment_variables is not None:
            # The whole set replaces the old one (a merge patch would keep removed names).
            current = self._deployment().get("spec", {}).get("environment_variables") or {}
            patch["environment_variables"] = {**{k: None for k in current}, **{str(k): str(v) for k, v in environment_variables.items()}}
        if not patch:
            raise ValueError("update() was given nothing to change")
        self.workspace.call("PATCH", "endpoints", self.name, "deployments", self._deployment_name(), body=patch)
        self._updating = True

    def wait_for_deployment(self, show_output: bool = False, timeout_sec: Optional[float] = None) -> str:
        """Poll until the deployment leaves ``Creating`` or ``Updating``; returns ``Healthy`` or
        raises :class:`DeploymentFailed` with the replica logs (:class:`UpdateFailed` when an
        :meth:`update` did not take and the previous replicas still serve)."""
        started = time.monotonic()
        cursor: Optional[Tuple[str, str]] = None
        while True:
            d = self._deployment()
            state = str(d["state"])
            if show_output:
                text, cursor = self._log_since(cursor)
                print(text, end="")
                print(f"{self.name}: {state}", flush=True)
            if state not in ("Creating", "Updating"):
                break
            if timeout_sec is not None and time.monotonic() - started > timeout_sec:
                raise TimeoutError(f"service {self.name!r} still {state} after {timeout_sec} s")
            time.sleep(POLL_SECONDS)
        self._endpoint = self.workspace.call("GET", "endpoints", self.name)
        updated, self._updating = self._updating, False
        if state != "Healthy":
            tail = "\n".join(self.get_logs().splitlines()[-LOG_TAIL_LINES:])
            raise DeploymentFailed(self.name, state, str(d.get("reason") or ""), tail)
        if updated and d.get("update_error"):
            tail = "\n".join(self.get_logs().splitlines()[-LOG_TAIL_LINES:])
            raise UpdateFailed(self.name, state, str(d["update_error"]), tail)
        return state

    def get_keys(self) -> Tuple[str, str]:
        keys = self.workspace.call("GET", "endpoints", self.name, "keys")
        return keys["primary_key"], keys["secondary_key"]

    def regen_key(self, key: str) -> None:
        """Regenerate the ``Primary`` or ``Secondary`` key."""
        kind = str(key).lower()
        if kind not in ("primary", "secondary"):
            raise ValueError(f"key must be 'Primary' or 'Secondary', not {key!r}")
        self.workspace.call("POST", "endpoints", self.name, "regenerate-keys", body={"key_type": kind})

    def get_token(self) -> Tuple[str, int]:
        token = self.workspace.call("POST", "endpoints", self.name, "token", body={})
        return token["accessToken"], int(token["refreshAfterTimeUtc"])

    def run(self, input_data: Union[str, bytes, Any], key: Optional[str] = None) -> Any:
        """POST ``input_data`` (a JSON text, or a value to encode) to the scoring URI with the
        primary key (or ``key``); returns the decoded answer. Errors raise ``ServerError``-like
        :class:`ScoringError` with the status and body."""
        if isinstance(input_data, (bytes, str)):
            body = input_data.encode("utf-8") if isinstance(input_data, str) else input_data
        else:
            body = json.dumps(input_data).encode("utf-8")
        request = urllib.request.Request(self.scoring_uri, data=body, method="POST", headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {key if key is not None else self.get_keys()[0]}",
        })
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                data = answer.read()
        except urllib.error.HTTPError as error:
            raise ScoringError(error.code, error.read().decode("utf-8", "replace")) from None
        try:
            return json.loads(data.decode("utf-8"))
        except ValueError:
            return data.decode("utf-8", "replace")

    def delete(self) -> None:
        """Delete the endpoint, its deployment and replicas."""
        self.workspace.call("DELETE", "endpoints", self.name)

    @classmethod
    def list(cls, workspace: Workspace) -> List["Webservice"]:
        return [cls(workspace, e["name"]) for e in _items(workspace.call("GET", "endpoints"))]


class ScoringError(CairnError):
    """The scoring URI answered with an error status."""

    def __init__(self, status: int, body: str) -> None:
        self.status, self.body = status, body
        super().__init__(f"scoring failed: HTTP {status}: {body}")


def _items(answer: Any) -> List[Dict[str, Any]]:
    return answer.get("items", []) if isinstance(answer, dict) else list(answer)


__all__ = ["InferenceConfig", "DeploymentConfiguration", "Webservice", "DeploymentFailed", "UpdateFailed",
           "ScoringError", "deploy"]
