"""``Webservice.update`` (SDK) and the azureml ``Webservice.update`` against a real server: new code
and model replace the replicas, a replica count scales, a new generation that cannot start raises
``UpdateFailed`` while the previous one keeps answering."""

from __future__ import annotations

import json

import pytest

from cairn import Environment, InferenceConfig, Model, UpdateFailed, Webservice

SCORE_PY = """
import json, os
from cairn.serving import Model

def init():
    global coef
    with open(Model.get_model_path("lin")) as f:
        coef = json.load(f)

def run(raw_data):
    return {"version": "%s", "b": coef["b"], "pid": os.getpid()}
"""


def _code(tmp_path, name: str, text: str):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "score.py").write_text(text)
    return folder


def test_update_replaces_scales_and_survives_a_broken_generation(ws, tmp_path):
    for b in (1, 2):
        (tmp_path / f"coef{b}.json").write_text(json.dumps({"b": b}))
    v1 = Model.register(ws, tmp_path / "coef1.json", "lin")
    v2 = Model.register(ws, tmp_path / "coef2.json", "lin")
    env = Environment("plain").register(ws)
    config = InferenceConfig("score.py", _code(tmp_path, "one", SCORE_PY % "one"), env)
    service = Model.deploy(ws, "upd-svc", [v1], config)
    assert service.wait_for_deployment() == "Healthy"
    first = service.run({})
    assert (first["version"], first["b"]) == ("one", 1)

    # New code and model: a rolling replacement.
    service.update(models=[v2], inference_config=InferenceConfig("score.py", _code(tmp_path, "two", SCORE_PY % "two"), env))
    assert service.wait_for_deployment() == "Healthy"
    second = service.run({})
    assert (second["version"], second["b"]) == ("two", 2)
    assert second["pid"] != first["pid"]
    v1.delete()  # no longer used by the service

    # Only the count: one more replica, the running one untouched.
    service.update(instance_count=2)
    assert service.wait_for_deployment() == "Healthy"
    pids = {service.run({})["pid"] for _ in range(12)}
    assert len(pids) == 2 and second["pid"] in pids

    # A generation whose init() raises: UpdateFailed, and the service still answers as before.
    broken = _code(tmp_path, "broken", "def init():\n    raise RuntimeError('broken three')\n\ndef run(raw):\n    return raw\n")
    service.update(inference_config=InferenceConfig("score.py", broken, env))
    with pytest.raises(UpdateFailed) as caught:
        service.wait_for_deployment()
    assert "broken three" in str(caught.value) and caught.value.state == "Healthy"
    assert service.run({})["version"] == "two"
    with pytest.raises(ValueError, match="nothing to change"):
        service.update()

    # The azureml names: num_replicas.
    from azureml.core.webservice import Webservice as AzureWebservice

    same = AzureWebservice(ws, "upd-svc")
    same.update(num_replicas=1)
    assert same.wait_for_deployment() == "Healthy"
    assert len({same.run({})["pid"] for _ in range(6)}) == 1
    service.delete()
    assert "upd-svc" not in [s.name for s in Webservice.list(ws)]
