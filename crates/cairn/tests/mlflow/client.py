"""Drives Cairn's MLflow API with the stock MLflow client (MLFLOW_TRACKING_URI and
MLFLOW_TRACKING_TOKEN come from the environment). Prints one JSON line of facts for the Rust
test to check against the CLI; any assertion here fails the test."""

import json

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

out = {}
exp = mlflow.set_experiment("wine_expt")
out["experiment_id"] = exp.experiment_id
assert exp.name == "wine_expt" and exp.lifecycle_stage == "active"

with mlflow.start_run(run_name="elasticnet-a") as run:
    mlflow.log_param("alpha", 0.5)
    mlflow.log_params({"l1_ratio": 0.1, "solver": "cd"})
    for step, rmse in enumerate([0.9, 0.8, 0.7]):
        mlflow.log_metric("rmse", rmse, step=step)
    mlflow.log_metrics({"r2": 0.42, "mae": 0.55})
    mlflow.set_tag("model", "elasticnet")
    out["run_id"] = run.info.run_id

with mlflow.start_run(run_name="elasticnet-b") as run_b:
    mlflow.log_param("alpha", 0.9)
    mlflow.log_metric("rmse", 0.95)
    out["run_b"] = run_b.info.run_id

client = MlflowClient()
r = client.get_run(out["run_id"])
assert r.info.status == "FINISHED", r.info.status
assert r.info.run_name == "elasticnet-a"
assert r.data.params == {"alpha": "0.5", "l1_ratio": "0.1", "solver": "cd"}, r.data.params
assert r.data.metrics["rmse"] == 0.7, r.data.metrics
assert r.data.tags["model"] == "elasticnet"

found = client.search_runs(
    [exp.experiment_id], filter_string="metrics.rmse < 0.9 and params.solver = 'cd'", order_by=["metrics.rmse ASC"]
)
assert [x.info.run_id for x in found] == [out["run_id"]], found
ordered = client.search_runs([exp.experiment_id], order_by=["metrics.rmse DESC"])
assert [x.info.run_id for x in ordered] == [out["run_b"], out["run_id"]]
finished = client.search_runs([exp.experiment_id], filter_string="attributes.status = 'FINISHED'")
assert len(finished) == 2

history = client.get_metric_history(out["run_id"], "rmse")
assert [(m.step, m.value) for m in history] == [(0, 0.9), (1, 0.8), (2, 0.7)], history

client.delete_tag(out["run_b"], "mlflow.user")
client.delete_run(out["run_b"])
assert [x.info.run_id for x in client.search_runs([exp.experiment_id])] == [out["run_id"]]

# bad input: a key over 250 characters
with mlflow.start_run(run_name="bad") as bad:
    try:
        mlflow.log_metric("k" * 251, 1.0)
        raise AssertionError("a 251-character key was accepted")
    except MlflowException as e:
        assert e.error_code == "INVALID_PARAMETER_VALUE", e.error_code
        out["bad_key_message"] = e.message

# unknown run
try:
    client.get_run("0123456789abcdef0123456789abcdef")
    raise AssertionError("an unknown run was found")
except MlflowException as e:
    assert e.error_code == "RESOURCE_DOES_NOT_EXIST", e.error_code

# experiments: duplicate, rename, delete, restore
try:
    client.create_experiment("wine_expt")
    raise AssertionError("a duplicate experiment was created")
except MlflowException as e:
    assert e.error_code == "RESOURCE_ALREADY_EXISTS", e.error_code
other = client.create_experiment("scratch", tags={"team": "wine"})
assert client.get_experiment(other).tags == {"team": "wine"}
client.rename_experiment(other, "scratch2")
assert client.get_experiment_by_name("scratch2").experiment_id == other
client.delete_experiment(other)
assert client.get_experiment(other).lifecycle_stage == "deleted"
names = [e.name for e in client.search_experiments()]
assert "scratch2" not in names and "wine_expt" in names, names
client.restore_experiment(other)
assert [e.name for e in client.search_experiments(filter_string="name LIKE 'scratch%'")] == ["scratch2"]
client.set_experiment_tag(other, "stage", "dev")
assert client.get_experiment(other).tags == {"team": "wine", "stage": "dev"}

print(json.dumps(out))
