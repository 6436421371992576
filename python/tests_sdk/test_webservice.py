"""``Model.deploy`` and ``Webservice`` against a real server: a stdlib-only ``score.py`` serving
JSON coefficients from an environment without packages."""

from __future__ import annotations

import json

import pytest

from cairn import (DeploymentConfiguration, DeploymentFailed, Environment, InferenceConfig, Model, NotFound,
                   ScoringError, Webservice)

SCORE_PY = """
import json
from cairn.serving import Model

def init():
    global coef
    with open(Model.get_model_path("lin")) as f:
        coef = json.load(f)

def run(raw_data):
    rows = json.loads(raw_data)["data"]
    return [sum(w * x for w, x in zip(coef["w"], row)) + coef["b"] for row in rows]
"""


@pytest.fixture
def deployable(ws, tmp_path):
    coef = tmp_path / "coef.json"
    coef.write_text(json.dumps({"w": [2.0, -1.0], "b": 1.0}))
    model = Model.register(ws, coef, "lin")
    env = Environment("plain").register(ws)
    code = tmp_path / "code"
    code.mkdir()
    return ws, model, env, code


def test_deploy_wait_keys_run_regen_delete(deployable, capsys):
    ws, model, env, code = deployable
    (code / "score.py").write_text(SCORE_PY)
    config = InferenceConfig(entry_script="score.py", source_directory=code, environment=env)
    sizing = DeploymentConfiguration(cpu_cores=0.5, memory_gb=0.5)
    service = Model.deploy(ws, "lin-svc", [model], config, sizing)
    assert service.wait_for_deployment(show_output=True) == "Healthy"
    assert "lin-svc: Healthy" in capsys.readouterr().out
    # cpu_cores/memory_gb hold each replica: one thread, a 512 MiB memory watchdog.
    assert "resources: 0.5 core(s) (1 thread(s)), 512 MiB of memory per replica" in service.get_logs()
    assert service.state == "Healthy"
    assert service.scoring_uri.startswith("http") and service.swagger_uri.startswith("http")

    primary, secondary = service.get_keys()
    assert primary and secondary and primary != secondary
    assert service.run(json.dumps({"data": [[1.0, 2.0], [3.0, 0.0]]})) == [1.0, 7.0]
    assert service.run({"data": [[0.0, 0.0]]}, key=secondary) == [1.0]
    with pytest.raises(ScoringError) as caught:
        service.run({"data": [[0.0, 0.0]]}, key="wrong-key")
    assert caught.value.status == 401

    service.regen_key("Primary")
    new_primary, same_secondary = service.get_keys()
    assert new_primary != primary and same_secondary == secondary
    with pytest.raises(ScoringError):
        service.run({"data": [[0.0, 0.0]]}, key=primary)
    assert service.run({"data": [[1.0, 1.0]]}) == [2.0]
    with pytest.raises(ValueError):
        service.regen_key("tertiary")

    assert "lin-svc" in [s.name for s in Webservice.list(ws)]
    service.delete()
    with pytest.raises(NotFound):
        Webservice(ws, "lin-svc")


def test_failing_init_raises_from_wait_with_the_traceback(deployable):
    ws, model, env, code = deployable
    (code / "score.py").write_text(
        "def init():\n    raise RuntimeError('no weights here')\n\ndef run(raw):\n    return raw\n"
    )
    config = InferenceConfig("score.py", code, env)
    service = Model.deploy(ws, "broken-svc", [model], config)
    with pytest.raises(DeploymentFailed) as caught:
        service.wait_for_deployment()
    assert caught.value.state in ("Failed", "Unhealthy")
    assert "RuntimeError: no weights here" in str(caught.value)
    assert "no weights here" in service.get_logs()
    service.delete()


def test_deploy_refuses_bad_input(deployable):
    ws, model, env, code = deployable
    with pytest.raises(FileNotFoundError):
        Model.deploy(ws, "x-svc", [model], InferenceConfig("score.py", code, env))
    (code / "score.py").write_text(SCORE_PY)
    with pytest.raises(ValueError, match="twice"):
        Model.deploy(ws, "x-svc", [model, model], InferenceConfig("score.py", code, env))
    with pytest.raises(NotFound):
        Model.deploy(ws, "x-svc", [model], InferenceConfig("score.py", code, "no-such-env"))
    with pytest.raises(NotFound):
        Webservice(ws, "x-svc")  # nothing left behind
