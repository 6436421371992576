"""Tracking through Cairn's MLflow API with the stock client: logging, search across
experiments, lifecycle (delete/restore), and the errors MLflow's client expects."""

import json
import re
import time

import mlflow
import pytest
import requests
from mlflow import MlflowClient
from mlflow.entities import Param
from mlflow.exceptions import MlflowException


def test_logging_lands_in_the_native_run(server, workspace):
    mlflow.set_experiment("track")
    with mlflow.start_run(run_name="a") as run:
        mlflow.log_param("alpha", 0.5)
        mlflow.log_params({"l1": 0.1, "solver": "cd"})
        for step, v in enumerate([0.9, 0.8, 0.7]):
            mlflow.log_metric("rmse", v, step=step)
        mlflow.log_metrics({"r2": 0.42}, step=5)
        mlflow.set_tags({"team": "wine", "kind": "baseline"})
        mlflow.log_dict({"a": 1}, "cfg.json")
    rid = run.info.run_id
    r = MlflowClient().get_run(rid)
    assert r.info.status == "FINISHED"
    assert r.data.params == {"alpha": "0.5", "l1": "0.1", "solver": "cd"}
    assert r.data.metrics == {"rmse": 0.7, "r2": 0.42}
    assert r.data.tags["team"] == "wine"
    hist = MlflowClient().get_metric_history(rid, "rmse")
    assert [(m.step, m.value) for m in hist] == [(0, 0.9), (1, 0.8), (2, 0.7)]

    status, native = server.api("GET", f"/api/v1/workspaces/{workspace}/runs/{rid}")
    assert status == 200, native
    assert native["status"] == "Completed" and native["display_name"] == "a"
    assert native["metrics"]["r2"]["step"] == 5
    assert native["params"]["solver"] == "cd"


def test_log_input_datasets_come_back_in_run_inputs(server, workspace, wine):
    X, _ = wine
    ds = mlflow.data.from_pandas(X.head(100), source="winequality_red.csv", name="wine-train")
    with mlflow.start_run() as run:
        mlflow.log_input(ds, context="training")
    r = MlflowClient().get_run(run.info.run_id)
    [inp] = r.inputs.dataset_inputs
    assert (inp.dataset.name, inp.dataset.digest) == ("wine-train", ds.digest)
    assert inp.dataset.schema and "alcohol" in inp.dataset.schema, inp.dataset
    assert {t.key: t.value for t in inp.tags}["mlflow.data.context"] == "training"


def test_log_inputs_with_an_unknown_model_writes_nothing(server, workspace, wine):
    from mlflow.entities import DatasetInput, LoggedModelInput

    X, _ = wine
    ds = mlflow.data.from_pandas(X.head(10), source="winequality_red.csv", name="wine-train")
    client = MlflowClient()
    run = client.create_run(client.create_experiment("inputs"))
    with pytest.raises(MlflowException) as e:
        client.log_inputs(run.info.run_id, datasets=[DatasetInput(ds._to_mlflow_entity())],
                          models=[LoggedModelInput("m-does-not-exist")])
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert "m-does-not-exist" in e.value.message
    assert client.get_run(run.info.run_id).inputs.dataset_inputs == []


def test_search_runs_across_experiments_with_filter_and_order(server, workspace):
    ids = {}
    for exp, runs in {"e1": [("r1", 0.3), ("r2", 0.9)], "e2": [("r3", 0.5), ("r4", 0.1)]}.items():
        mlflow.set_experiment(exp)
        for name, acc in runs:
            with mlflow.start_run(run_name=name) as run:
                mlflow.log_metric("acc", acc)
                mlflow.log_param("family", "lin" if acc < 0.6 else "tree")
            ids[name] = run.info.run_id
    e1 = mlflow.get_experiment_by_name("e1").experiment_id
    e2 = mlflow.get_experiment_by_name("e2").experiment_id
    df = mlflow.search_runs([e1, e2], filter_string="params.family = 'lin'", order_by=["metrics.acc DESC"])
    assert list(df["tags.mlflow.runName"]) == ["r3", "r1", "r4"], df
    found = MlflowClient().search_runs([e1, e2], "metrics.acc > 0.2", order_by=["metrics.acc ASC"])
    assert [r.info.run_name for r in found] == ["r1", "r3", "r2"]
    page = MlflowClient().search_runs([e1, e2], max_results=2, order_by=["metrics.acc ASC"])
    assert [r.info.run_name for r in page] == ["r4", "r1"] and page.token
    rest = MlflowClient().search_runs([e1, e2], max_results=2, order_by=["metrics.acc ASC"], page_token=page.token)
    assert [r.info.run_name for r in rest] == ["r3", "r2"]
    # The run name's tag orders as the attribute does.
    for order, expected in [("ASC", ["r1", "r2", "r3", "r4"]), ("DESC", ["r4", "r3", "r2", "r1"])]:
        found = MlflowClient().search_runs([e1, e2], order_by=[f"tags.mlflow.runName {order}"])
        assert [r.info.run_name for r in found] == expected, order
    # Statuses sort by MLflow's names (FAILED < FINISHED < KILLED), not by Cairn's.
    client = MlflowClient()
    e3 = client.create_experiment("e3")
    for name, status in [("fin", "FINISHED"), ("failed", "FAILED"), ("killed", "KILLED"), ("running", None)]:
        run = client.create_run(e3, run_name=name)
        if status:
            client.set_terminated(run.info.run_id, status)
    found = client.search_runs([e3], order_by=["attributes.status ASC"])
    assert [r.info.run_name for r in found] == ["failed", "fin", "killed", "running"]
    found = client.search_runs([e3], order_by=["attributes.status DESC"])
    assert [r.info.run_name for r in found] == ["running", "killed", "fin", "failed"]

    # get-history-bulk-interval, as the UI's charts call it
    r = requests.get(
        f"{server.url}/workspaces/{workspace}/mlflow/api/2.0/mlflow/metrics/get-history-bulk-interval",
        params={"run_ids": [ids["r1"], ids["r2"]], "metric_key": "acc"},
        headers={"Authorization": f"Bearer {server.token}"},
    )
    assert r.status_code == 200, r.text
    assert sorted((m["run_id"], m["value"]) for m in r.json()["metrics"]) == sorted(
        [(ids["r1"], 0.3), (ids["r2"], 0.9)]
    )


def test_the_filters_mlflows_own_helpers_send(server, workspace, wine):
    """Dotted tag keys (nested runs), run_id IN (…) (load_table), datasets.*, experiment tags."""
    import pandas as pd

    X, _ = wine
    mlflow.set_experiment("filters")
    mlflow.set_experiment_tag("team", "wine")
    with mlflow.start_run(run_name="parent") as parent:
        mlflow.set_tag("team", "Wine")
        mlflow.log_param("opt", "Adam")
        mlflow.log_table(pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}), "tbl.json")
        mlflow.log_input(mlflow.data.from_pandas(X.head(5), source="w.csv", name="wine-train"), context="training")
        with mlflow.start_run(run_name="child", nested=True) as child:
            mlflow.log_metric("m", 1)
    with mlflow.start_run(run_name="other") as other:
        mlflow.log_input(mlflow.data.from_pandas(X.head(7), source="w.csv", name="wine-eval"), context="eval")
    pid, cid, oid = parent.info.run_id, child.info.run_id, other.info.run_id
    names = lambda f: sorted(mlflow.search_runs(filter_string=f).get("tags.mlflow.runName", []))  # noqa: E731
    assert names(f"tags.mlflow.parentRunId = '{pid}'") == ["child"]
    assert names("tags.mlflow.runName = 'other'") == ["other"]
    assert names(f"attributes.run_id IN ('{pid}', '{oid}')") == ["other", "parent"]
    assert names(f"attributes.run_id NOT IN ('{pid}', '{oid}')") == ["child"]
    assert names("datasets.name = 'wine-train'") == ["parent"]
    assert names("datasets.context IN ('eval')") == ["other"]
    assert names("datasets.name LIKE 'wine-%' and datasets.context = 'training'") == ["parent"]
    # Bare attribute names, as MLflow reads them, and params/tags tested for absence.
    assert names("run_name LIKE '%r%' and status = 'FINISHED'") == ["other", "parent"]
    assert names("tags.mlflow.parentRunId IS NULL") == ["other", "parent"]
    assert names("tags.mlflow.parentRunId IS NOT NULL") == ["child"]
    assert names("params.never IS NULL") == ["child", "other", "parent"]
    # LIKE minds case, ILIKE does not (SQLite's own LIKE would not).
    for field, value in [("tags.team", "Wine"), ("params.opt", "Adam"), ("run_name", "parent")]:
        assert names(f"{field} LIKE '{value}'") == ["parent"], field
        assert names(f"{field} LIKE '{value.swapcase()}'") == [], field
        assert names(f"{field} ILIKE '{value.swapcase()}'") == ["parent"], field
    assert names("datasets.name LIKE 'WINE-%'") == []
    assert names("tags.team LIKE 'W_n%' and params.opt LIKE '%da%'") == ["parent"]
    assert mlflow.search_runs(filter_string="params.never IS NOT NULL").empty
    ordered = mlflow.search_runs(order_by=["run_name DESC"])["tags.mlflow.runName"].tolist()
    assert ordered == ["parent", "other", "child"], ordered
    assert mlflow.load_table("tbl.json", run_ids=[pid, oid]).shape == (2, 2)
    with pytest.raises(MlflowException, match="expected ',' or '\\)'"):
        mlflow.search_runs(filter_string="attributes.run_id IN ('a' 'b')")

    found = mlflow.search_experiments(filter_string="tags.team = 'wine' and name LIKE 'fil%'")
    assert [e.name for e in found] == ["filters"]
    assert mlflow.search_experiments(filter_string="name LIKE 'FIL%'") == []
    client = MlflowClient()
    eid = found[0].experiment_id
    client.delete_experiment_tag(eid, "team")
    assert mlflow.search_experiments(filter_string="tags.team = 'wine'") == []
    with pytest.raises(MlflowException) as e:
        client.delete_experiment_tag(eid, "team")
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_delete_and_restore_runs_and_experiments(server, workspace):
    client = MlflowClient()
    exp = client.create_experiment("lifecycle")
    run = client.create_run(exp)
    rid = run.info.run_id
    client.delete_run(rid)
    assert client.get_run(rid).info.lifecycle_stage == "deleted"
    assert client.search_runs([exp]) == []
    assert [r.info.run_id for r in client.search_runs([exp], run_view_type=2)] == [rid]  # DELETED_ONLY
    # MLflow refuses logging to a deleted run ...
    with pytest.raises(MlflowException) as e:
        client.log_metric(rid, "m", 1.0)
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"
    client.restore_run(rid)
    assert [r.info.run_id for r in client.search_runs([exp])] == [rid]
    # ... but not to a finished one.
    client.set_terminated(rid)
    client.log_metric(rid, "late", 2.0)
    assert client.get_run(rid).data.metrics["late"] == 2.0

    # Deleting the experiment deletes its live runs; restoring it restores those, not a run
    # deleted by itself before.
    alone = client.create_run(exp).info.run_id
    client.delete_run(alone)
    client.delete_experiment(exp)
    assert client.get_experiment(exp).lifecycle_stage == "deleted"
    assert "lifecycle" not in [x.name for x in client.search_experiments()]
    assert client.get_run(rid).info.lifecycle_stage == "deleted"
    with pytest.raises(MlflowException) as e:
        client.log_metric(rid, "m", 1.0)
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"
    client.delete_experiment(exp)  # again: its runs still come back with it
    client.restore_experiment(exp)
    assert client.get_experiment_by_name("lifecycle").lifecycle_stage == "active"
    assert client.get_run(rid).info.lifecycle_stage == "active"
    assert client.get_run(alone).info.lifecycle_stage == "deleted"
    client.log_metric(rid, "m", 1.0)


def raw(server, workspace, method, path, **kw):
    return requests.request(
        method,
        f"{server.url}/workspaces/{workspace}/mlflow/api/2.0/{path}",
        headers={"Authorization": f"Bearer {server.token}"},
        **kw,
    )


def test_a_runs_user_is_the_user_id_it_was_created_with(server, workspace):
    """A REST client's `user_id` is kept without an mlflow.user tag (MLflow's `runs.user_id`), and
    shows in Cairn as who created the run; without one, the run is the caller's (its token's)."""
    given = raw(server, workspace, "POST", "mlflow/runs/create", json={"experiment_id": "0", "user_id": "carol"})
    assert given.status_code == 200, given.text
    run = given.json()["run"]
    assert run["info"]["user_id"] == "carol", run
    assert all(t["key"] != "mlflow.user" for t in run["data"].get("tags", [])), run
    rid = run["info"]["run_id"]
    assert MlflowClient().get_run(rid).info.user_id == "carol"
    assert [r.info.run_id for r in MlflowClient().search_runs(["0"], "attributes.user_id = 'carol'")] == [rid]
    shown = json.loads(server.cli("run", "show", rid, "-w", workspace, "-o", "json"))
    assert shown["created_by"] == "carol", shown
    none = raw(server, workspace, "POST", "mlflow/runs/create", json={"experiment_id": "0"})
    assert none.json()["run"]["info"]["user_id"] == "admin", none.text


def test_an_mlflow_2_client_records_its_logged_models_on_the_run(server, workspace):
    """mlflow 2.x clients send `runs/log-model` after each `log_model`: the run's
    `mlflow.log-model.history` tag lists those models in order, as MLflow's store keeps them."""
    from mlflow.models import Model

    client = MlflowClient()
    with mlflow.start_run() as run:
        pass
    rid = run.info.run_id
    for path in ("model", "other"):
        model = Model(artifact_path=path, run_id=rid, flavors={"python_function": {"loader_module": "m"}})
        client._record_logged_model(rid, model)  # what mlflow 2's Model.log calls
    history = json.loads(client.get_run(rid).data.tags["mlflow.log-model.history"])
    assert [h["artifact_path"] for h in history] == ["model", "other"], history
    assert all(h["run_id"] == rid and h["utc_time_created"] and h["flavors"] for h in history), history

    def log_model(run_id, model_json):
        return raw(server, workspace, "POST", "mlflow/runs/log-model", json={"run_id": run_id, "model_json": model_json})

    good = json.dumps(Model(artifact_path="third", run_id=rid, flavors={}).get_tags_dict())
    r = log_model(rid, "{not json")
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE", r.text
    r = log_model(rid, json.dumps({"artifact_path": "m", "run_id": rid}))
    assert r.status_code == 400 and "missing mandatory fields" in r.json()["message"], r.text
    assert "flavors" in r.json()["message"] and "utc_time_created" in r.json()["message"], r.text
    r = raw(server, workspace, "POST", "mlflow/runs/log-model", json={"run_id": rid})
    assert r.status_code == 400 and "model_json" in r.json()["message"], r.text
    r = log_model("0" * 32, good)
    assert r.status_code == 404 and r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST", r.text
    client.delete_run(rid)
    r = log_model(rid, good)
    assert r.status_code == 400 and "active" in r.json()["message"], r.text
    client.restore_run(rid)
    assert [h["artifact_path"] for h in json.loads(client.get_run(rid).data.tags["mlflow.log-model.history"])] \
        == ["model", "other"], "nothing of the refused calls was written"


def test_errors_have_mlflows_codes(server, workspace):
    client = MlflowClient()
    # missing required field
    r = raw(server, workspace, "POST", "mlflow/experiments/create", json={})
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE", r.text
    assert "'name'" in r.json()["message"]
    # a filter that does not parse: 400 naming the position
    with pytest.raises(MlflowException) as e:
        client.search_runs(["0"], filter_string="metrics.acc >> 1")
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "position" in e.value.message, e.value.message
    # duplicate experiment: RESOURCE_ALREADY_EXISTS is a 400
    client.create_experiment("dup")
    r = raw(server, workspace, "POST", "mlflow/experiments/create", json={"name": "dup"})
    assert (r.status_code, r.json()["error_code"]) == (400, "RESOURCE_ALREADY_EXISTS")
    # unknown run
    with pytest.raises(MlflowException) as e:
        client.get_run("0" * 32)
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    # artifact paths that escape are refused before anything is written
    run = client.create_run("0")
    base = f"mlflow-artifacts/artifacts/{run.info.experiment_id}/{run.info.run_id}/artifacts"
    for bad in ["../../x", "a/%2e%2e/%2e%2e/x", "a//b"]:
        r = raw(server, workspace, "PUT", f"{base}/{bad}", data=b"x")
        assert r.status_code in (400, 404), (bad, r.status_code, r.text)
        assert r.status_code != 404 or r.json().get("error_code") != "RESOURCE_DOES_NOT_EXIST"
    assert client.list_artifacts(run.info.run_id) == []
    # a param key past MLflow's 250 characters is refused, and nothing of the batch is stored
    with pytest.raises(MlflowException) as e:
        client.log_batch(run.info.run_id, params=[Param("short", "1"), Param("k" * 251, "x")])
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "short" not in client.get_run(run.info.run_id).data.params
    # a logged model must name an experiment
    r = raw(server, workspace, "POST", "mlflow/logged-models", json={"name": "m"})
    assert (r.status_code, r.json()["error_code"]) == (400, "INVALID_PARAMETER_VALUE"), r.text
    r = raw(server, workspace, "PATCH", "mlflow/logged-models/m-nope", json={"status": "LOGGED_MODEL_READY"})
    assert (r.status_code, r.json()["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST"), r.text


def test_runs_get_mlflows_generated_names_and_the_clients_times(server, workspace):
    client = MlflowClient()
    mlflow.set_experiment("unnamed")
    with mlflow.start_run() as run:
        mlflow.log_metric("m", 1)
    got = client.get_run(run.info.run_id)
    assert re.fullmatch(r"[a-z]+-[a-z]+-[0-9]+", got.info.run_name), got.info.run_name
    assert got.data.tags["mlflow.runName"] == got.info.run_name
    df = mlflow.search_runs(filter_string=f"run_id = '{run.info.run_id}'")
    assert list(df["tags.mlflow.runName"]) == [got.info.run_name]
    # A name given as the tag alone is kept.
    exp = got.info.experiment_id
    tagged = client.create_run(exp, tags={"mlflow.runName": "from-tag"})
    assert client.get_run(tagged.info.run_id).info.run_name == "from-tag"
    # Times the client gives are kept (backfills, imports), not replaced by the server's clock.
    past = client.create_run(exp, start_time=1_600_000_000_000)
    client.set_terminated(past.info.run_id, "FINISHED", end_time=1_600_000_060_000)
    info = client.get_run(past.info.run_id).info
    assert (info.start_time, info.end_time) == (1_600_000_000_000, 1_600_000_060_000)


def test_an_ended_run_is_resumed_and_its_end_restated_as_mlflow_allows(server, workspace):
    client = MlflowClient()
    mlflow.set_experiment("resumed")
    with mlflow.start_run() as run:
        mlflow.log_metric("m", 1, step=0)
    rid = run.info.run_id
    first = client.get_run(rid).info
    assert first.status == "FINISHED" and first.end_time
    # Resuming reopens it (MLflow's client sends UpdateRun RUNNING), with no end while it runs.
    with mlflow.start_run(run_id=rid):
        info = client.get_run(rid).info
        assert (info.status, info.end_time) == ("RUNNING", None)
        mlflow.log_metric("m", 2, step=1)
    again = client.get_run(rid).info
    assert again.status == "FINISHED" and again.end_time >= first.end_time
    assert again.start_time == first.start_time, "a resumed run keeps its start"
    assert [m.value for m in client.get_metric_history(rid, "m")] == [1, 2]
    # An ended run said to have failed after all, at a given time.
    client.set_terminated(rid, "FAILED", end_time=again.end_time + 5)
    info = client.get_run(rid).info
    assert (info.status, info.end_time) == ("FAILED", again.end_time + 5)
    # One truth: the native API says the same.
    status, body = server.api("GET", f"/api/v1/workspaces/{workspace}/runs/{rid}")
    assert status == 200 and body["status"] == "Failed", body
    # Bad input changes nothing.
    r = requests.post(
        f"{server.url}/workspaces/{workspace}/mlflow/api/2.0/mlflow/runs/update",
        json={"run_id": rid, "status": "DONE"},
        headers={"Authorization": f"Bearer {server.token}"},
    )
    assert r.status_code == 400 and "unknown run status" in r.json()["message"], r.text
    assert client.get_run(rid).info.status == "FAILED"


def test_search_experiments_orders_as_mlflow_does(server, workspace):
    client = MlflowClient()
    for name in ["b", "c", "a"]:
        client.create_experiment(f"ord-{name}")
        time.sleep(0.005)  # distinct creation times
    names = lambda **kw: [e.name[-1] for e in client.search_experiments(filter_string="name LIKE 'ord-%'", **kw)]  # noqa: E731
    assert names() == ["a", "c", "b"]  # newest first by default
    assert names(order_by=["name ASC"]) == ["a", "b", "c"]
    assert names(order_by=["name DESC"]) == ["c", "b", "a"]
    assert names(order_by=["creation_time ASC"]) == ["b", "c", "a"]
    assert names(order_by=["attribute.creation_time DESC"]) == ["a", "c", "b"]
    first = client.search_experiments(filter_string="name LIKE 'ord-%'", order_by=["name"], max_results=2)
    rest = client.search_experiments(
        filter_string="name LIKE 'ord-%'", order_by=["name"], max_results=2, page_token=first.token
    )
    assert [e.name for e in first] + [e.name for e in rest] == ["ord-a", "ord-b", "ord-c"]
    for bad in ["bogus DESC", "name sideways", "tags.x ASC"]:
        with pytest.raises(MlflowException) as e:
            client.search_experiments(order_by=[bad])
        assert e.value.error_code == "INVALID_PARAMETER_VALUE", bad


def test_metric_history_pages_as_mlflow_does(server, workspace):
    """max_results pages (with a token while more follow), ordered by timestamp, step, value."""
    from mlflow.entities import Metric

    client = MlflowClient()
    rid = client.create_run(client.create_experiment("history")).info.run_id
    client.log_batch(rid, metrics=[Metric("m", float(i), 1000 + i, i) for i in range(5)])
    store = client._tracking_client.store
    pages, token = [], None
    while True:
        page = store.get_metric_history(rid, "m", max_results=2, page_token=token)
        pages.append([m.step for m in page])
        token = page.token
        if token is None:
            break
    assert pages == [[0, 1], [2, 3], [4]]
    whole = store.get_metric_history(rid, "m", max_results=5)
    assert ([m.step for m in whole], whole.token) == ([0, 1, 2, 3, 4], None)
    # Without max_results everything at once, even from a token (the rest of the series).
    r = raw(server, workspace, "GET", "mlflow/metrics/get-history", params={"run_id": rid, "metric_key": "m"})
    assert [m["step"] for m in r.json()["metrics"]] == [0, 1, 2, 3, 4] and "next_page_token" not in r.json()
    for bad in [0, -1]:
        r = raw(server, workspace, "GET", "mlflow/metrics/get-history",
                params={"run_id": rid, "metric_key": "m", "max_results": bad})
        assert (r.status_code, r.json()["error_code"]) == (400, "INVALID_PARAMETER_VALUE"), r.text
        assert "must be a positive integer" in r.json()["message"]
    r = raw(server, workspace, "GET", "mlflow/metrics/get-history",
            params={"run_id": rid, "metric_key": "m", "page_token": "garbage"})
    assert (r.status_code, r.json()["error_code"]) == (400, "INVALID_PARAMETER_VALUE"), r.text
    # MLflow's order: timestamp first, then step, then value.
    client.log_batch(rid, metrics=[Metric("o", 3.0, 5, 2), Metric("o", 1.0, 5, 2), Metric("o", 2.0, 4, 9),
                                   Metric("o", 0.5, 5, 1)])
    got = [(m.timestamp, m.step, m.value) for m in client.get_metric_history(rid, "o")]
    assert got == [(4, 9, 2.0), (5, 1, 0.5), (5, 2, 1.0), (5, 2, 3.0)]


def test_a_dataset_logged_again_keeps_what_was_logged_first(server, workspace):
    """As MLflow's store: per run, a dataset's first input tags stay; per experiment, its first
    content (source, schema) is every run's."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    client = MlflowClient()
    exp = client.create_experiment("datasets-again")
    first = Dataset("wine", "abc", "local", '{"uri": "/a"}', schema='{"s": 1}')
    second = Dataset("wine", "abc", "local", '{"uri": "/b"}', schema='{"s": 2}')
    context = lambda v: InputTag("mlflow.data.context", v)  # noqa: E731
    inputs = lambda rid: [  # noqa: E731
        (d.dataset.source, d.dataset.schema, {t.key: t.value for t in d.tags})
        for d in client.get_run(rid).inputs.dataset_inputs
    ]
    run = client.create_run(exp).info.run_id
    client.log_inputs(run, datasets=[DatasetInput(first, [context("train")])])
    client.log_inputs(run, datasets=[DatasetInput(second, [context("eval"), InputTag("x", "y")])])
    assert inputs(run) == [('{"uri": "/a"}', '{"s": 1}', {"mlflow.data.context": "train"})]
    other = client.create_run(exp).info.run_id
    client.log_inputs(other, datasets=[DatasetInput(second, [context("eval")])])
    assert inputs(other) == [('{"uri": "/a"}', '{"s": 1}', {"mlflow.data.context": "eval"})]
    names = lambda f: sorted(r.info.run_id for r in client.search_runs([exp], f))  # noqa: E731
    assert names("datasets.context = 'train'") == [run]
    assert names("datasets.context = 'eval'") == [other]
    # Twice in one call: the first of the two.
    third = client.create_run(exp).info.run_id
    client.log_inputs(third, datasets=[DatasetInput(Dataset("n", "d", "local", '{"u": 1}'), [InputTag("k", "1")]),
                                       DatasetInput(Dataset("n", "d", "local", '{"u": 2}'), [InputTag("k", "2")])])
    assert [(s, t) for s, _, t in inputs(third)] == [('{"u": 1}', {"k": "1"})]


def test_search_runs_on_every_attribute_mlflow_accepts(server, workspace):
    """user_id (what the client sent: its mlflow.user tag, else "unknown"), artifact_uri, and
    `created`, which is the start time."""
    client = MlflowClient()
    exp = client.create_experiment("attributes")
    ada = client.create_run(exp, tags={"mlflow.user": "ada"}, run_name="a")
    bob = client.create_run(exp, tags={"mlflow.user": "bob"}, run_name="b")
    anon = client.create_run(exp, run_name="anon")
    assert [r.info.user_id for r in (ada, bob, anon)] == ["ada", "bob", "unknown"]
    assert client.get_run(anon.info.run_id).info.user_id == "unknown"

    def names(f, order=None):
        return [r.info.run_name for r in client.search_runs([exp], f, order_by=order or ["run_name ASC"])]

    assert names("attributes.user_id = 'ada'") == ["a"]
    assert names("attributes.user_id = 'unknown'") == ["anon"]
    assert names("user_id != 'ada'") == ["anon", "b"]
    assert names("attributes.user_id LIKE 'b%'") == ["b"]
    assert names("attributes.user_id ILIKE 'B%'") == ["b"]
    uri = ada.info.artifact_uri
    assert uri == f"mlflow-artifacts:/{exp}/{ada.info.run_id}/artifacts"
    assert names(f"attributes.artifact_uri = '{uri}'") == ["a"]
    assert names(f"attributes.artifact_uri LIKE '%{bob.info.run_id}%'") == ["b"]
    assert names("artifact_uri LIKE 'mlflow-artifacts:/%/artifacts'") == ["a", "anon", "b"]
    assert names("run_name != 'anon'", ["attributes.user_id DESC"]) == ["b", "a"]
    by_uri = [n for n, _ in sorted([("a", ada.info.run_id), ("b", bob.info.run_id)], key=lambda x: x[1])]
    assert names("run_name != 'anon'", ["attributes.artifact_uri ASC"]) == by_uri
    with pytest.raises(MlflowException) as e:
        client.search_runs([exp], "attributes.lifecycle_stage = 'active'")
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"
    # A start time the client gave (a backfill) is what `created` compares and orders.
    client.create_run(exp, start_time=1_600_000_000_000, run_name="past")
    assert names("created < 1700000000000") == ["past"]
    assert names("attributes.Created >= 1700000000000") == ["a", "anon", "b"]
    assert names("", ["created ASC"])[0] == "past"


def test_an_artifact_location_is_refused_not_ignored(server, workspace):
    """MLflow sends a run's artifacts to its experiment's artifact_location, past the server;
    Cairn keeps every artifact itself, so it refuses one rather than ignore it."""
    client = MlflowClient()
    for location in ["s3://bucket/prefix", "/tmp/elsewhere", "mlflow-artifacts:/team/x"]:
        with pytest.raises(MlflowException) as e:
            client.create_experiment(f"located-{len(location)}", artifact_location=location)
        assert e.value.error_code == "INVALID_PARAMETER_VALUE"
        assert "artifact_location" in e.value.message and location in e.value.message
        assert client.get_experiment_by_name(f"located-{len(location)}") is None
    # Left out or empty (protobuf's unset), the server's own location.
    r = raw(server, workspace, "POST", "mlflow/experiments/create", json={"name": "plain", "artifact_location": ""})
    assert r.status_code == 200, r.text
    exp = r.json()["experiment_id"]
    assert client.get_experiment(exp).artifact_location == f"mlflow-artifacts:/{exp}"


def test_nan_metrics_in_filters_and_order_as_mlflow(server, workspace):
    """A NaN differs from every number and compares with none: it matches != only; it sorts
    after the numbers and before runs without the metric, either way."""
    client = MlflowClient()
    exp = client.create_experiment("nan")
    runs = {name: client.create_run(exp, run_name=name).info.run_id for name in ["a", "b", "nan", "inf"]}
    for name, x in [("a", 1.0), ("b", 2.0), ("nan", float("nan")), ("inf", float("inf"))]:
        client.log_metric(runs[name], "x", x)
    client.log_metric(runs["b"], "y", 0.0)
    client.log_metric(runs["nan"], "y", float("nan"))

    def names(f, order=None):
        found = client.search_runs([exp], f, order_by=order)
        return [r.info.run_name for r in found] if order else sorted(r.info.run_name for r in found)

    assert names("metrics.x != 1") == ["b", "inf", "nan"]
    assert names("metrics.x = 1") == ["a"]
    assert names("metrics.x < 5") == ["a", "b"]
    assert names("metrics.x >= 0") == ["a", "b", "inf"]
    assert names("metrics.y = 0") == ["b"]
    assert names("metrics.y != 0") == ["nan"]
    assert names("metrics.y <= 0") == ["b"]
    assert names("metrics.x != 7 and metrics.y != 7") == ["b", "nan"]
    assert names("", ["metrics.x ASC"]) == ["a", "b", "inf", "nan"]
    assert names("", ["metrics.x DESC"]) == ["inf", "b", "a", "nan"]
    assert names("", ["metrics.y ASC", "run_name ASC"]) == ["b", "nan", "a", "inf"]
    assert names("", ["metrics.y DESC", "run_name ASC"]) == ["b", "nan", "a", "inf"]


def test_long_param_and_tag_values_are_cut_as_mlflow_cuts_them(server, workspace):
    """MLflow 3's server cuts param values to 6,000 characters and tag values to 8,000 (not
    bytes) instead of refusing them; tags given at run creation are kept whole."""
    from mlflow.entities import RunTag

    client = MlflowClient()
    exp = client.create_experiment("long-values")
    rid = client.create_run(exp, tags={"long": "t" * 8005}).info.run_id
    client.log_param(rid, "p", "x" * 6005)
    client.log_batch(rid, params=[Param("q", "é" * 6001), Param("prompt", "П" * 4000)],
                     tags=[RunTag("bt", "b" * 9000)])
    client.set_tag(rid, "st", "s" * 8001)
    # The same param again with a long value: the same once cut.
    r = raw(server, workspace, "POST", "mlflow/runs/log-parameter", json={"run_id": rid, "key": "p", "value": "x" * 7000})
    assert r.status_code == 200, r.text
    r = raw(server, workspace, "POST", "mlflow/runs/log-batch",
            json={"run_id": rid, "params": [{"key": "rb", "value": "w" * 7000}], "tags": [{"key": "rt", "value": "v" * 9000}]})
    assert r.status_code == 200, r.text
    data = client.get_run(rid).data
    assert {k: len(v) for k, v in data.params.items()} == {"p": 6000, "q": 6000, "prompt": 4000, "rb": 6000}
    assert data.params["q"] == "é" * 6000
    lengths = {k: len(v) for k, v in data.tags.items() if k != "mlflow.runName"}
    assert lengths == {"long": 8005, "bt": 8000, "st": 8000, "rt": 8000}
    # A different value is still a different param.
    with pytest.raises(MlflowException) as e:
        client.log_param(rid, "p", "y" * 7000)
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"
    # Experiment tags have MLflow's 20,000-character limit, refused past it.
    client.set_experiment_tag(exp, "note", "n" * 20000)
    with pytest.raises(MlflowException) as e:
        client.set_experiment_tag(exp, "note", "n" * 20001)
    assert e.value.error_code == "INVALID_PARAMETER_VALUE" and "20000" in e.value.message
    assert client.get_experiment(exp).tags["note"] == "n" * 20000
