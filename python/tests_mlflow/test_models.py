"""MLflow 3 model logging and loading through Cairn: `mlflow.sklearn.log_model` (logged models,
the artifact proxy, run outputs) and `mlflow.pyfunc.load_model`."""

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sklearn.linear_model import ElasticNet


def fit(wine, alpha=0.5):
    X, y = wine
    return ElasticNet(alpha=alpha, l1_ratio=0.5, random_state=42).fit(X, y)


def test_sklearn_log_model_then_load_predicts_the_same(server, workspace, wine):
    X, _ = wine
    model = fit(wine)
    mlflow.set_experiment("wine")
    with mlflow.start_run() as run:
        mlflow.log_param("alpha", 0.5)
        info = mlflow.sklearn.log_model(model, name="wine_model", input_example=X.head(3))
    assert info.model_uri.startswith("models:/m-"), info.model_uri
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    np.testing.assert_allclose(loaded.predict(X.head(50)), model.predict(X.head(50)))

    client = MlflowClient()
    logged = client.get_logged_model(info.model_id)
    assert logged.status.to_proto() == 2, logged.status  # LOGGED_MODEL_READY
    assert logged.source_run_id == run.info.run_id
    assert logged.name == "wine_model"
    # (the client lists the URI's last component from its parent, hence the prefix)
    files = {f.path for f in mlflow.artifacts.list_artifacts(artifact_uri=logged.artifact_location)}
    assert {"artifacts/MLmodel", "artifacts/model.skops", "artifacts/requirements.txt"} <= files, files

    # The run knows the model it produced.
    r = client.get_run(run.info.run_id)
    assert [o.model_id for o in r.outputs.model_outputs] == [info.model_id], r.outputs

    # search and tags on logged models
    found = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert [m.model_id for m in found] == [info.model_id]
    client.set_logged_model_tags(info.model_id, {"stage": "candidate"})
    assert client.get_logged_model(info.model_id).tags["stage"] == "candidate"
    client.delete_logged_model_tag(info.model_id, "stage")
    assert "stage" not in client.get_logged_model(info.model_id).tags


def test_log_artifacts_list_and_download(server, workspace, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha")
    (src / "sub" / "b.bin").write_bytes(bytes(range(256)) * 100)
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(src / "a.txt"))
        mlflow.log_artifacts(str(src), artifact_path="tree")
        mlflow.log_dict({"k": [1, 2]}, "conf/d.json")
        mlflow.log_text("hello", "notes.txt")
    client = MlflowClient()
    rid = run.info.run_id
    top = {(f.path, f.is_dir) for f in client.list_artifacts(rid)}
    assert top == {("a.txt", False), ("tree", True), ("conf", True), ("notes.txt", False)}, top
    tree = {(f.path, f.is_dir, f.file_size) for f in client.list_artifacts(rid, "tree")}
    assert tree == {("tree/a.txt", False, 5), ("tree/sub", True, None)}, tree
    out = client.download_artifacts(rid, "tree", str(tmp_path / "dl"))
    assert (tmp_path / "dl" / "tree" / "sub" / "b.bin").read_bytes() == bytes(range(256)) * 100, out
    assert mlflow.artifacts.load_dict(f"runs:/{rid}/conf/d.json") == {"k": [1, 2]}
    # The same files are the run's native artifacts.
    status, files = server.api("GET", f"/api/v1/workspaces/{workspace}/runs/{rid}/artifacts")
    assert status == 200, files
    assert sorted(f["path"] for f in files) == [
        "a.txt",
        "conf/d.json",
        "notes.txt",
        "tree/a.txt",
        "tree/sub/b.bin",
    ], files
