"""Multipart artifact uploads through Cairn's MLflow artifact proxy, with the stock client: the
file goes up in parts to signed URLs (no token), comes back whole, and nothing stays staged."""

import hashlib
import os

import mlflow
import requests
from mlflow import MlflowClient
from mlflow.store.artifact.http_artifact_repo import HttpArtifactRepository

MiB = 1024 * 1024


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def record_parts(monkeypatch):
    """Wraps the client's part upload so the test sees each part's credential."""
    seen = []
    original = HttpArtifactRepository._upload_part

    def recording(credential, local_file, size, start_byte):
        seen.append(credential)
        return original(credential, local_file, size, start_byte)

    monkeypatch.setattr(HttpArtifactRepository, "_upload_part", staticmethod(recording))
    return seen


def staged_files(server):
    staging = server.tmp / "data" / "artifacts" / "mlflow-uploads"
    return [p for p in staging.rglob("*") if p.is_file()] if staging.exists() else []


def test_a_large_artifact_goes_up_in_parts_and_comes_back_whole(server, workspace, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD", "true")
    monkeypatch.setenv("MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE", str(MiB))
    monkeypatch.setenv("MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE", str(5 * MiB))
    parts = record_parts(monkeypatch)
    data = os.urandom(12 * MiB + 12345)
    big = tmp_path / "weights.bin"
    big.write_bytes(data)
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(big), artifact_path="model")

    assert sorted(c.part_number for c in parts) == [1, 2, 3]
    assert all("signature=" in c.url and c.headers == {} for c in parts), parts
    files = MlflowClient().list_artifacts(run.info.run_id, "model")
    assert [(f.path, f.file_size) for f in files] == [("model/weights.bin", len(data))]
    out = MlflowClient().download_artifacts(run.info.run_id, "model/weights.bin", str(tmp_path / "dl"))
    with open(out, "rb") as f:
        assert sha256(f.read()) == sha256(data)
    assert staged_files(server) == []
    # The upload is over: its part URLs no longer lead anywhere.
    r = requests.put(parts[0].url, data=b"late")
    assert (r.status_code, r.json()["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST"), r.text


def test_without_the_client_flag_large_files_go_up_in_one_put(server, workspace, tmp_path, monkeypatch):
    # /server-info does not advertise multipart (it is slower through this proxy), so the stock
    # client uploads even a file past its multipart threshold in one streamed PUT.
    monkeypatch.delenv("MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD", raising=False)
    monkeypatch.setenv("MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE", str(MiB))
    monkeypatch.setenv("MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE", str(MiB))
    parts = record_parts(monkeypatch)
    # Past the 8 MiB the server buffers at once: streamed to a staging file, and not hashed.
    data = os.urandom(9 * MiB + MiB // 2)
    f = tmp_path / "data.bin"
    f.write_bytes(data)
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(f))
    assert parts == []
    out = MlflowClient().download_artifacts(run.info.run_id, "data.bin", str(tmp_path / "dl"))
    with open(out, "rb") as g:
        assert sha256(g.read()) == sha256(data)
    info = requests.get(server.url + f"/workspaces/{workspace}/mlflow/api/3.0/mlflow/server-info",
                        headers={"Authorization": "Bearer " + server.token})
    assert info.status_code == 200 and info.json()["multipart_uploads_enabled"] is False, info.text