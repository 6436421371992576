"""``cairn.Model`` round trips against a real server: registration from local files and from a
run's artifacts, get, list, ``ws.models`` and download."""

from __future__ import annotations

import json
import os

import pytest

from cairn import ComputeTarget, Environment, Experiment, LocalCluster, Model, NotFound, ScriptRunConfig


def test_register_local_file_and_folder_get_list_download(ws, tmp_path):
    coef = tmp_path / "coef.json"
    coef.write_text(json.dumps({"w": [1.0, 2.0], "b": 0.5}))
    first = Model.register(ws, coef, "linear", tags={"kind": "json"}, description="coefficients")
    assert (first.name, first.version, first.id) == ("linear", 1, "linear:1")
    assert first.tags == {"kind": "json"} and first.description == "coefficients"

    folder = tmp_path / "bundle"
    (folder / "sub").mkdir(parents=True)
    (folder / "coef.json").write_text(json.dumps({"w": [3.0], "b": 0.0}))
    (folder / "sub" / "notes.txt").write_text("v2")
    second = Model.register(ws, folder, "linear")
    assert second.version == 2
    assert sorted(f["path"] for f in second.get_files()) == ["bundle/coef.json", "bundle/sub/notes.txt"]

    assert Model(ws, "linear").version == 2
    assert Model(ws, "linear", version=1).tags == {"kind": "json"}
    assert [m.version for m in Model.list(ws, name="linear")] == [2, 1]
    assert [m.version for m in Model.list(ws, tags=["kind"])] == [1]
    assert ws.models["linear"].version == 2

    got = Model(ws, "linear", version=1).download(tmp_path / "out1")
    assert json.loads(open(got).read()) == {"w": [1.0, 2.0], "b": 0.5}
    top = second.download(tmp_path / "out2")
    assert open(f"{top}/sub/notes.txt").read() == "v2"
    # Refused whole if any file is there: the one missing is not downloaded either.
    os.remove(f"{top}/coef.json")
    with open(f"{top}/sub/notes.txt", "w") as edited:
        edited.write("edited")
    with pytest.raises(FileExistsError, match="1 local file.*nothing was downloaded"):
        second.download(tmp_path / "out2")
    assert not os.path.exists(f"{top}/coef.json")
    assert second.download(tmp_path / "out2", exist_ok=True) == top
    assert open(f"{top}/sub/notes.txt").read() == "v2"


def test_a_download_whose_content_does_not_match_its_sha256_is_not_kept(ws, tmp_path):
    from cairn._client import CairnError
    from cairn.datastore import download_to

    src = tmp_path / "m.json"
    src.write_text('{"w": 1}')
    model = Model.register(ws, src, "checked")
    files = model.get_files()
    segments = ("models", "checked", "versions", str(model.version), "files", "m.json")
    target = tmp_path / "out" / "m.json"
    with pytest.raises(CairnError, match="arrived with SHA-256"):
        download_to(ws, segments, target, sha256="0" * 64)
    assert not target.exists() and list(target.parent.iterdir()) == []
    download_to(ws, segments, target, sha256=files[0]["sha256"])
    assert target.read_text() == '{"w": 1}'


def test_register_refuses_bad_input_and_unknown_names(ws, tmp_path):
    with pytest.raises(FileNotFoundError):
        Model.register(ws, tmp_path / "absent.pkl", "m")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no files"):
        Model.register(ws, empty, "m")
    with pytest.raises(NotFound):
        Model(ws, "never-registered")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(Exception) as caught:
        Model.register(ws, tmp_path / "f.txt", "bad name/../x")
    assert getattr(caught.value, "status", 0) in (400, 404, 422)
    assert "never-registered" not in ws.models and "m" not in ws.models


def test_register_model_from_a_run(ws, tmp_path):
    cluster = ComputeTarget.create(ws, "cpu", LocalCluster.provisioning_configuration(max_nodes=1))
    env = Environment("plain").register(ws)
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text(
        "import json, os\n"
        "os.makedirs('outputs', exist_ok=True)\n"
        "json.dump({'w': [0.25], 'b': 1.0}, open('outputs/model.json', 'w'))\n"
    )
    run = Experiment(ws, "expt").submit(ScriptRunConfig(code, script="train.py", compute_target=cluster, environment=env))
    run.wait_for_completion()
    model = run.register_model("from_run", "outputs/model.json", tags={"area": "wine"}, description="d")
    assert (model.name, model.version, model.run_id, model.tags) == ("from_run", 1, run.id, {"area": "wine"})
    path = model.download(tmp_path / "dl")
    assert json.loads(open(path).read()) == {"w": [0.25], "b": 1.0}
    with pytest.raises(NotFound):
        run.register_model("from_run", "outputs/absent.pkl")
    with pytest.raises(ValueError):
        run.register_model("from_run", "../etc/passwd")
    assert [m.version for m in Model.list(ws, name="from_run")] == [1]
