"""Several models in one service through the ``azureml`` layer, against a real server and real
replicas: ``Model.deploy(models=[a, b])`` whose ``score.py`` loads both with
``Model.get_model_path``, ``service.run``, then ``Webservice.update(models=[...])`` swapping one
(the old version is released, the others stay held)."""

from __future__ import annotations

import json

import pytest

from cairn import Conflict

SCORE_PY = """
import json, os
from azureml.core.model import Model

def init():
    global coef, scale, enc_version
    with open(Model.get_model_path("lin")) as f:
        coef = json.load(f)
    path = Model.get_model_path(model_name="enc")
    # Azure ML v1's several-model layout: AZUREML_MODEL_DIR/NAME/VERSION/<files>.
    enc_version = int(os.path.basename(os.path.dirname(path)))
    assert path == os.path.join(os.environ["AZUREML_MODEL_DIR"], "enc", str(enc_version), "scale.json"), path
    with open(path) as f:
        scale = json.load(f)

def run(raw_data):
    rows = json.loads(raw_data)["data"]
    y = [sum(w * x for w, x in zip(coef["w"], row)) + coef["b"] for row in rows]
    return {"y": [v * scale["s"] for v in y], "enc": enc_version}
"""


@pytest.fixture
def aws(connected):
    from azureml.core import Workspace

    from conftest import unique

    return Workspace.create(unique("aml"), subscription_id="s", resource_group="r", show_output=False)


def test_two_models_in_one_service_then_one_swapped(aws, tmp_path):
    from azureml.core import Environment
    from azureml.core.model import InferenceConfig, Model
    from azureml.core.webservice import AksWebservice, Webservice

    (tmp_path / "coef.json").write_text(json.dumps({"w": [2.0, -1.0], "b": 1.0}))
    lin = Model.register(aws, str(tmp_path / "coef.json"), "lin")
    encs = []
    for scale in (10, 100):
        folder = tmp_path / f"enc{scale}"
        folder.mkdir()
        (folder / "scale.json").write_text(json.dumps({"s": scale}))
        encs.append(Model.register(aws, str(folder / "scale.json"), "enc"))
    enc1, enc2 = encs
    code = tmp_path / "code"
    code.mkdir()
    (code / "score.py").write_text(SCORE_PY)
    inference = InferenceConfig(entry_script="score.py", source_directory=str(code),
                                environment=Environment("plain-multi"))

    service = Model.deploy(aws, "duo-service", [lin, enc1], inference,
                           AksWebservice.deploy_configuration(cpu_cores=1, memory_gb=1))
    service.wait_for_deployment()
    assert isinstance(service, Webservice) and service.state == "Healthy"
    # (2*3 - 1*1 + 1) * 10
    assert service.run(json.dumps({"data": [[3.0, 1.0]]})) == {"y": [60.0], "enc": 1}
    for held in (lin, enc1):
        with pytest.raises(Conflict, match="in use"):
            held.delete()

    # The whole list again with enc swapped: a rolling update that releases enc:1 only.
    service.update(models=[lin, enc2])
    assert service.wait_for_deployment() == "Healthy"
    assert service.run(json.dumps({"data": [[3.0, 1.0]]})) == {"y": [600.0], "enc": 2}
    enc1.delete()
    with pytest.raises(Conflict, match="in use"):
        lin.delete()
    with pytest.raises(ValueError, match="twice"):
        service.update(models=[lin, enc1, enc2])

    service.delete()
    lin.delete()
    enc2.delete()
