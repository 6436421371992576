"""A model logged and registered with the stock MLflow client, deployed without a `score.py`:
MLflow's `/invocations` bodies through the gateway (and `/score` answering the same), MLflow's own
error body for bad input with the replica surviving it, and the Open Inference Protocol v2 routes
driven by the model's signature. The environment is derived from the model's requirements.txt
(built once by uv; cached by hash afterwards)."""

import json
import pathlib
import urllib.error
import urllib.request

import mlflow
import numpy as np
import pytest
from sklearn.linear_model import ElasticNet


def call(url, key, body=None, method=None, headers=None):
    """(status, parsed JSON or text, response headers)."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    h = {"Authorization": f"Bearer {key}", "Content-Type": "application/json", **(headers or {})}
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"), headers=h)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            raw, status, rh = r.read(), r.status, r.headers
    except urllib.error.HTTPError as e:
        raw, status, rh = e.read(), e.code, e.headers
    try:
        return status, json.loads(raw), rh
    except ValueError:
        return status, raw.decode(), rh


def deploy(server, ws, tmp_path, name, yaml_body, endpoint="wine-ep", all_traffic=True):
    f = tmp_path / f"{name}.yml"
    f.write_text(yaml_body)
    args = ["deployment", "create", "-f", str(f), "--wait", "-w", ws, "-o", "json"]
    if all_traffic:
        args.insert(4, "--all-traffic")
    return json.loads(server.cli(*args))


@pytest.fixture
def wine_endpoint(server, workspace, wine, tmp_path):
    """Model `wine:1` (ElasticNet, signature from an input example) deployed without code as
    `blue` on endpoint `wine-ep`; yields (base URL, key, fitted model)."""
    X, y = wine
    model = ElasticNet(alpha=0.5, l1_ratio=0.5, random_state=42).fit(X, y)
    mlflow.set_experiment("serving")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="wine_model", input_example=X.head(3))
    mv = mlflow.register_model(info.model_uri, "wine")
    assert mv.version in ("1", 1)
    (tmp_path / "ep.yml").write_text("name: wine-ep\nauth_mode: key\n")
    server.cli("endpoint", "create", "-f", str(tmp_path / "ep.yml"), "-w", workspace)
    d = deploy(server, workspace, tmp_path, "blue",
               "name: blue\nendpoint_name: wine-ep\nmodel: azureml:wine:1\ninstance_count: 1\n")
    assert d["state"] == "Healthy", d
    keys = json.loads(server.cli("endpoint", "get-keys", "wine-ep", "-w", workspace, "-o", "json"))
    yield f"{server.url}/endpoints/wine-ep", keys["primary_key"], model, X
    server.cli("endpoint", "delete", "wine-ep", "-w", workspace)


def test_an_mlflow_model_is_served_without_code_in_every_mlflow_body(wine_endpoint, server, workspace):
    base, key, model, X = wine_endpoint
    rows = X.head(5)
    expected = model.predict(rows)
    records = json.loads(rows.to_json(orient="records"))
    bodies = {
        "dataframe_split": {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))},
        "dataframe_records": {"dataframe_records": records},
        "instances": {"instances": records},
        "inputs": {"inputs": {c: rows[c].tolist() for c in rows.columns}},
    }
    for form, body in bodies.items():
        for route in ("invocations", "score"):
            status, out, _ = call(f"{base}/{route}", key, body)
            assert status == 200, (form, route, out)
            np.testing.assert_allclose(out["predictions"], expected, rtol=1e-12, err_msg=f"{form} on /{route}")

    # Bad input: MLflow's own 400 and message pass through; the replica keeps serving.
    status, out, _ = call(f"{base}/invocations", key, {"rows": [[1, 2]]})
    assert status == 400, out
    assert out["error_code"] == "BAD_REQUEST", out
    assert "exactly one of the input fields" in out["message"], out
    status, out, _ = call(f"{base}/invocations", key, b"{not json")
    assert status == 400 and out["error_code"] == "BAD_REQUEST", out
    status, out, _ = call(f"{base}/invocations", key, bodies["dataframe_records"])
    assert status == 200, out

    # The gateway's own errors on /invocations have MLflow's shape too.
    status, out, h = call(f"{base}/invocations", "wrong-key", bodies["dataframe_records"])
    assert (status, out["error_code"]) == (401, "UNAUTHENTICATED"), out

    # The environment came from the model's requirements.txt, not from a registered environment.
    logs = server.cli("deployment", "logs", "wine-ep/blue", "-w", workspace)
    assert "environment of the model's requirements.txt" in logs, logs
    shown = json.loads(server.cli("deployment", "show", "wine-ep/blue", "-w", workspace, "-o", "json"))
    assert "code_configuration" not in shown["spec"] and "environment" not in shown["spec"], shown


def test_the_open_inference_protocol_follows_the_models_signature(wine_endpoint):
    base, key, model, X = wine_endpoint
    status, out, _ = call(f"{base}/v2/health/live", key)
    assert (status, out) == (200, {"live": True})
    status, out, _ = call(f"{base}/v2/health/ready", key)
    assert (status, out) == (200, {"ready": True})
    status, meta, _ = call(f"{base}/v2/models/wine", key)
    assert status == 200, meta
    assert meta["name"] == "wine" and meta["versions"] == ["1"] and meta["platform"] == "mlflow_sklearn", meta
    assert [t["name"] for t in meta["inputs"]] == list(X.columns), meta
    assert all(t["datatype"] == "FP64" and t["shape"] == [-1] for t in meta["inputs"]), meta
    assert meta["outputs"] == [{"name": "output-0", "datatype": "FP64", "shape": [-1]}], meta
    assert call(f"{base}/v2/models/wine/versions/1", key)[1] == meta
    status, out, _ = call(f"{base}/v2/models/wine/ready", key)
    assert (status, out) == (200, {"name": "wine", "ready": True})

    rows = X.head(4)
    infer = {"id": "req-1", "inputs": [
        {"name": c, "shape": [4], "datatype": "FP64", "data": rows[c].tolist()} for c in X.columns]}
    status, out, _ = call(f"{base}/v2/models/wine/infer", key, infer)
    assert status == 200, out
    assert (out["model_name"], out["model_version"], out["id"]) == ("wine", "1", "req-1"), out
    [o] = out["outputs"]
    assert (o["name"], o["datatype"], o["shape"]) == ("output-0", "FP64", [4]), o
    np.testing.assert_allclose(o["data"], model.predict(rows), rtol=1e-12)
    status, out, _ = call(f"{base}/v2/models/wine/versions/1/infer", key, {**infer, "id": None})
    assert status == 200 and len(out["id"]) == 32, out

    # Checked against the signature in the gateway: 400 naming the tensor.
    wrong_type = json.loads(json.dumps(infer))
    wrong_type["inputs"][0]["datatype"] = "FP32"
    missing = {"inputs": infer["inputs"][1:]}
    short = json.loads(json.dumps(infer))
    short["inputs"][2]["data"] = short["inputs"][2]["data"][:3]
    for body, message in [
        (wrong_type, 'input "fixed acidity": datatype FP32 does not match the signature\'s FP64'),
        (missing, 'input "fixed acidity" of the signature is missing'),
        (short, 'input "citric acid": shape [4] holds 4 element(s) but "data" has 3'),
        ({"inputs": "x"}, "invalid inference request"),
    ]:
        status, out, _ = call(f"{base}/v2/models/wine/infer", key, body)
        assert status == 400, out
        assert message in out["error"], out
    status, out, _ = call(f"{base}/v2/models/nope/infer", key, infer)
    assert status == 404 and 'model "nope" is not served by endpoint "wine-ep"' in out["error"], out
    status, out, _ = call(f"{base}/v2/models/wine/versions/2", key)
    assert status == 404, out
    status, out, _ = call(f"{base}/v2/models/wine", "wrong-key")
    assert status == 401 and "error" in out, out


def test_a_model_without_signature_says_so_and_a_non_mlflow_model_is_refused(
        server, workspace, wine, tmp_path):
    X, y = wine
    model = ElasticNet(alpha=0.5).fit(X, y)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="plain")  # no input_example: no signature
    mlflow.register_model(info.model_uri, "nosig")
    (tmp_path / "ep.yml").write_text("name: nosig-ep\nauth_mode: key\n")
    server.cli("endpoint", "create", "-f", str(tmp_path / "ep.yml"), "-w", workspace)
    d = deploy(server, workspace, tmp_path, "green",
               "name: green\nendpoint_name: nosig-ep\nmodel: nosig:1\n", endpoint="nosig-ep")
    assert d["state"] == "Healthy", d
    key = json.loads(server.cli("endpoint", "get-keys", "nosig-ep", "-w", workspace, "-o", "json"))["primary_key"]
    base = f"{server.url}/endpoints/nosig-ep"
    status, meta, _ = call(f"{base}/v2/models/nosig", key)
    assert status == 200 and meta["inputs"] == [] and "declares no signature" in meta["parameters"]["signature"], meta
    status, out, _ = call(f"{base}/v2/models/nosig/infer", key,
                          {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}]})
    assert status == 400 and "has no tensor signature" in out["error"], out
    # /invocations works without a signature.
    status, out, _ = call(f"{base}/invocations", key, {"dataframe_split": json.loads(X.head(2).to_json(orient="split", index=False))})
    assert status == 200, out
    np.testing.assert_allclose(out["predictions"], model.predict(X.head(2)))

    # A model that is not in MLflow format cannot be deployed without code: 400 naming what is missing.
    folder = tmp_path / "coef"
    folder.mkdir()
    (folder / "coef.json").write_text("{}")
    server.cli("model", "register", "--name", "coef", "--path", str(folder), "-w", workspace)
    status, out = server.api("POST", f"/api/v1/workspaces/{workspace}/endpoints/nosig-ep/deployments",
                             {"name": "red", "model": "coef:1"})
    assert status == 400, out
    assert "must be in MLflow format, but it has no MLmodel file" in json.dumps(out), out
    assert "coef.json" in json.dumps(out), out
    server.cli("endpoint", "delete", "nosig-ep", "-w", workspace)
