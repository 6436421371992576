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


def test_metrics_of_logged_models_are_kept_searched_and_ordered(server, workspace, wine):
    """MLflow 3 links a metric to a model: logged right after `log_model` at its step, or with
    `model_id` (and a dataset). The models then carry their metrics, and `search_logged_models`
    filters and orders on them: the comparison of many candidate models the mission is about."""
    X, y = wine
    exp = mlflow.set_experiment("candidates")
    client = MlflowClient()
    holdout = mlflow.data.from_pandas(X.tail(100).assign(quality=y.tail(100)), name="holdout")
    ids = {}
    for alpha, rmse in [(0.1, 0.66), (0.5, 0.70), (1.0, 0.74)]:
        with mlflow.start_run() as run:
            info = mlflow.sklearn.log_model(fit(wine, alpha), name=f"enet-{alpha}")
            mlflow.log_metric("rmse", rmse)  # linked by the client: the model was logged at step 0
            mlflow.log_metric("r2", 1 - rmse, model_id=info.model_id, dataset=holdout)
        ids[alpha] = info.model_id
    with mlflow.start_run():
        bare = mlflow.sklearn.log_model(fit(wine, 2.0), name="enet-no-metrics")

    m = client.get_logged_model(ids[0.1])
    by_key = {p.key: p for p in m.metrics}
    assert by_key["rmse"].value == 0.66 and by_key["rmse"].run_id == m.source_run_id, m.metrics
    assert (by_key["r2"].dataset_name, by_key["r2"].dataset_digest) == ("holdout", holdout.digest)
    # The run keeps its own copy of each point.
    assert client.get_run(m.source_run_id).data.metrics == {"rmse": 0.66, "r2": pytest.approx(0.34)}

    def search(**kw):
        return [x.model_id for x in client.search_logged_models(experiment_ids=[exp.experiment_id], **kw)]

    assert search(filter_string="metrics.rmse < 0.72") == [ids[0.5], ids[0.1]]  # newest first
    assert search(filter_string="metrics.rmse < 0.72 AND name LIKE 'enet-0.%'") == [ids[0.5], ids[0.1]]
    assert search(order_by=[{"field_name": "metrics.rmse", "ascending": True}]) == [
        ids[0.1], ids[0.5], ids[1.0], bare.model_id]  # a model without the metric comes last
    assert search(order_by=[{"field_name": "metrics.rmse", "ascending": False}])[0] == ids[1.0]
    # Metric clauses and the datasets restriction: r2 was measured on the holdout only.
    assert search(filter_string="metrics.r2 > 0.32", datasets=[{"dataset_name": "holdout"}]) == [ids[0.1]]
    assert search(filter_string="metrics.r2 > 0", datasets=[{"dataset_name": "train"}]) == []
    assert len(search(datasets=[{"dataset_name": "holdout", "dataset_digest": holdout.digest}])) == 3
    first = client.search_logged_models(experiment_ids=[exp.experiment_id], max_results=3,
                                        order_by=[{"field_name": "metrics.rmse"}])
    rest = client.search_logged_models(experiment_ids=[exp.experiment_id], max_results=3,
                                       order_by=[{"field_name": "metrics.rmse"}], page_token=first.token)
    assert [x.model_id for x in first] + [x.model_id for x in rest] == [ids[0.1], ids[0.5], ids[1.0], bare.model_id]

    with pytest.raises(MlflowException) as e:
        search(filter_string="metrics.rmse < 'low'")
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowException) as e:
        search(order_by=[{"field_name": "params.alpha"}])
    assert "Invalid order by field name" in str(e.value)

    # A metric naming an unknown model: 404, and the run gets nothing either.
    run_id = m.source_run_id
    with pytest.raises(MlflowException) as e:
        client.log_metric(run_id, "mae", 0.5, model_id="m-00000000000000000000000000000000")
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert "mae" not in client.get_run(run_id).data.metrics


def test_copy_model_version_and_registered_model_uris(server, workspace, wine):
    X, _ = wine
    model = fit(wine)
    mlflow.set_experiment("copies")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="m", registered_model_name="wine-dev")
    client = MlflowClient()
    client.set_registered_model_alias("wine-dev", "champion", "1")
    copy = client.copy_model_version("models:/wine-dev@champion", "wine-prod")
    assert (copy.name, copy.version, copy.run_id) == ("wine-prod", "1", info.run_id)
    # The copy keeps the source's logged model (the client's entity does not read model_id).
    status, body = server.api("GET", f"/workspaces/{workspace}/mlflow/api/2.0/mlflow/model-versions/get"
                                     "?name=wine-prod&version=1")
    assert status == 200 and body["model_version"]["model_id"] == info.model_id, body
    for uri in ("models:/wine-prod/1", "models:/wine-prod/latest", "models:/wine-dev@champion"):
        loaded = mlflow.pyfunc.load_model(uri)
        np.testing.assert_allclose(loaded.predict(X.head(5)), model.predict(X.head(5)))
    with pytest.raises(MlflowException) as e:
        client.copy_model_version("models:/wine-dev/7", "wine-prod")
    assert "RESOURCE_DOES_NOT_EXIST" in str(e.value)
    assert [v.version for v in client.search_model_versions("name = 'wine-prod'")] == ["1"]
