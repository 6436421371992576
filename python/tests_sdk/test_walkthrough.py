"""The walkthrough's steps 1–15 (``../shared/seed/azureml-walkthrough.md``) through ``azureml.*``,
against a real server: workspace, upload of the wine data, compute cluster, the verbatim
``train.py``, an environment built by the real ``uv`` (PyPI the first time, the uv cache after),
estimator, experiment and run with its streamed log, the run's metrics; then the model's
registration, the verbatim ``score.py``, inference config, inference cluster, deployment,
keys and a prediction posted to the scoring URI.

The script (``examples/wine/walkthrough.py``) follows the walkthrough's blocks; only the connection differs (Azure's
subscription, resource group and tenant are accepted and ignored) and the environment pins the
packages of the walkthrough's era that its ``train.py`` needs (see ``azureml/core/__init__.py``
and ``conftest.python310_dir``).
"""

from __future__ import annotations

import json
import math
import runpy

import pytest

from conftest import ROOT, Server

WALKTHROUGH = ROOT / "examples" / "wine" / "walkthrough.py"


@pytest.fixture
def fresh_server(monkeypatch):
    """A server of its own: the walkthrough starts from nothing (and creates 'azureml_workspace')."""
    server = Server()
    for name in ("CAIRN_URL", "CAIRN_TOKEN", "CAIRN_WORKSPACE", "CAIRN_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(server.home))
    monkeypatch.setenv("CAIRN_URL", server.url)
    monkeypatch.setenv("CAIRN_TOKEN", server.token)
    yield server
    server.stop()


def test_walkthrough_steps_1_to_15(fresh_server, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    import azureml._compat

    monkeypatch.setattr(azureml._compat, "_reported", set())  # "once" is per process: start afresh
    g = runpy.run_path(str(WALKTHROUGH), run_name="__main__")
    run, metrics, registered_env = g["run"], g["metrics"], g["registered_env"]
    endpoint, predictions, service, x_new = g["endpoint"], g["predictions"], g["service"], g["x_new"]

    out = capsys.readouterr()
    assert out.out.startswith("1.0.0+cairn")
    assert "Uploaded 1 files" in out.out
    assert "ignoring subscription_id, resource_group, location" in out.err
    assert "ignoring tenant_id" in out.err
    # The training script's own output, streamed from the job's log while it ran.
    assert "Data folder:" in out.out and "RMSE is" in out.out
    assert "Status: Completed" in out.out
    assert metrics["max depth"] == 10.0
    assert 0.3 < metrics["rmse"] < 1.5 and math.isfinite(metrics["rmse"])
    assert "outputs/wine_model.pkl" in run.get_file_names()
    assert registered_env.version == 1 and run.get_details()["environment"].startswith("wine-experiment-env")
    assert "wine_model\twine_model:1\t1" in out.out
    assert "wine-service: Healthy" in out.out
    assert endpoint.startswith("http") and "wine-service" in endpoint
    assert isinstance(predictions, list) and len(predictions) == 1
    assert 3.0 <= predictions[0] <= 8.0  # a wine quality score
    assert service.run(json.dumps({"data": x_new * 2})) == predictions * 2
