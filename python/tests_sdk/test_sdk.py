"""Each SDK class's round trips against a real ``cairn server`` (see conftest.py)."""

from __future__ import annotations

import hashlib
import os
import socket
import zlib
from pathlib import Path

import pytest

import cairn
from cairn import (
    BadRequest,
    ComputeTarget,
    Conflict,
    Datastore,
    Environment,
    Experiment,
    LocalCluster,
    NotFound,
    RunFailed,
    ScriptRunConfig,
    ServerUnreachable,
    Unauthorized,
    Workspace,
)
from conftest import unique


# -- workspace ---------------------------------------------------------------------------------


def test_workspace_create_get_list_and_conflict(connected):
    name = unique("ws")
    ws = Workspace.create(name, description="first")
    assert ws.get_details()["description"] == "first"
    assert Workspace.get(name).name == name
    assert name in [w.name for w in Workspace.list()]
    with pytest.raises(Conflict, match=name):
        Workspace.create(name)
    assert Workspace.create(name, exist_ok=True).get_details()["description"] == "first"
    with pytest.raises(NotFound, match="nope-ws"):
        Workspace.get("nope-ws")


def test_from_config_reads_the_environment(connected, monkeypatch):
    name = unique("ws")
    Workspace.create(name)
    monkeypatch.setenv("CAIRN_WORKSPACE", name)
    assert Workspace.from_config().name == name
    monkeypatch.delenv("CAIRN_WORKSPACE")
    with pytest.raises(ValueError, match="CAIRN_WORKSPACE"):
        Workspace.from_config()


def test_from_config_finds_the_local_server_by_its_data_dir(server, monkeypatch):
    """No URL and no token anywhere: the local server's server.json and admin-token are used."""
    for var in ("CAIRN_URL", "CAIRN_TOKEN", "CAIRN_WORKSPACE", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(server.home))
    monkeypatch.setenv("CAIRN_HOME", str(server.data_dir))
    name = unique("ws")
    assert Workspace.create(name).url == server.url
    assert Workspace.from_config(workspace=name).name == name


def test_wrong_token_is_unauthorized(connected):
    with pytest.raises(Unauthorized) as caught:
        Workspace.get("anything", token="not-a-token")
    assert caught.value.status == 401


def test_no_server_names_the_url_and_how_to_start_one(connected):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(ServerUnreachable) as caught:
        Workspace.get("w", url=url, token="t")
    assert url in str(caught.value) and "cairn server" in str(caught.value)


# -- datastore ---------------------------------------------------------------------------------


def make_tree(root: Path, files: dict) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_datastore_upload_skip_conflict_overwrite_download(ws, tmp_path, capsys):
    src = make_tree(tmp_path / "src", {"a.csv": "1,2\n", "sub/b.txt": "bee"})
    ds = ws.get_default_datastore()
    ref = ds.upload(src, target_path="data", overwrite=False, show_progress=True)
    assert ref.uri == "datastore://default/data"
    assert "Uploaded 2 files" in capsys.readouterr().out
    assert sorted(f["path"] for f in ds.list_files("data")) == ["data/a.csv", "data/sub/b.txt"]

    # The same bytes again: skipped, not sent.
    ds.upload(src, target_path="data", show_progress=True)
    assert "Uploaded 0 files" in capsys.readouterr().out

    # Different content without overwrite: refused, and nothing at all is written.
    changed = make_tree(tmp_path / "changed", {"a.csv": "9,9\n", "sub/b.txt": "bee", "new.txt": "n"})
    with pytest.raises(Conflict, match="data/a.csv.*nothing was uploaded"):
        ds.upload(changed, target_path="data", show_progress=False)
    assert sorted(f["path"] for f in ds.list_files("data")) == ["data/a.csv", "data/sub/b.txt"]

    ds.upload(changed, target_path="data", overwrite=True, show_progress=False)
    out = tmp_path / "out"
    assert ds.download(out, prefix="data", show_progress=False) == 3
    assert (out / "data" / "a.csv").read_text() == "9,9\n"
    assert (out / "data" / "sub" / "b.txt").read_text() == "bee"
    with pytest.raises(FileExistsError, match="nothing was downloaded"):
        ds.download(out, prefix="data", show_progress=False)
    assert ds.download(out, prefix="data/a.csv", overwrite=True, show_progress=False) == 1


def test_datastore_upload_of_an_empty_folder_uploads_nothing_and_says_so(ws, tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "only" / "folders").mkdir(parents=True)
    ds = ws.get_default_datastore()
    with pytest.warns(UserWarning, match="holds no files to upload; nothing was uploaded"):
        ref = ds.upload(empty, target_path="nothing", show_progress=True)
    assert ref.path_on_datastore == "nothing"
    assert "Uploaded 0 files" in capsys.readouterr().out
    assert ds.list_files() == []
    # Still a request: a datastore that is not there is not written to silently.
    with pytest.raises(NotFound, match="nope"), pytest.warns(UserWarning):
        Datastore(ws, "nope").upload(empty, show_progress=False)


def test_datastore_upload_sends_new_files_once_with_a_crc32_and_cuts_a_file_that_changes(ws, tmp_path):
    """A file the plan did not ask a checksum for is read once, chunked, its CRC-32 in a trailer
    (the server records the SHA-256 of what it received); if the file changed while it was read,
    the request is cut short and the server keeps nothing of it."""
    from cairn._client import CairnError
    from cairn.datastore import _unchanged

    ds = ws.get_default_datastore()
    http = ws.connection.http
    data = os.urandom(3 * (1 << 20) + 5)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    path = ws.path("datastores", "default", "files", "crc", "big.bin", query={"overwrite": "false"})

    def changed() -> None:
        raise CairnError("big.bin changed while it was being uploaded")

    with open(src, "rb") as body, pytest.raises(CairnError, match="changed while"):
        http.put_stream_crc32(path, body, changed)
    with pytest.raises(NotFound):  # nothing stored: no such folder
        ds.list_files("crc")

    with open(src, "rb") as body:
        result = http.put_stream_crc32(path, body, lambda: None)
    assert (result["status"], result["sha256"]) == ("created", hashlib.sha256(data).hexdigest())
    assert [f["path"] for f in ds.list_files("crc")] == ["crc/big.bin"]

    # The check itself: a modification between the start and the end of the read is caught.
    with open(src, "rb") as body:
        check = _unchanged(src, body)
        body.read()
        check()  # nothing changed yet
        os.utime(src, ns=(1, 1))
        with pytest.raises(CairnError, match="big.bin changed while it was being uploaded; nothing was stored"):
            check()

    # Through upload(): a new file goes this way, and the same bytes again are skipped.
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "big.bin").write_bytes(data)
    assert ds.upload(tree, target_path="again", show_progress=False).path_on_datastore == "again"
    assert [f["path"] for f in ds.list_files("again")] == ["again/big.bin"]
    ds.upload(tree, target_path="again", show_progress=False)
    out = tmp_path / "out"
    assert ds.download(out, prefix="again", show_progress=False) == 1
    assert (out / "again" / "big.bin").read_bytes() == data


def test_datastore_upload_sends_small_files_in_batches_whole_or_not_at_all(ws, tmp_path, monkeypatch):
    """Small files travel many to a request (``…/upload-batch``), large ones alone; odd names come
    back as they were; a batch with one bad checksum stores none of its files."""
    from cairn import datastore as datastore_module
    from cairn._client import Http, ServerError

    calls = {"batches": [], "puts": 0, "fetched": []}
    real_post_files, real_put_crc32 = Http.post_files, Http.put_stream_crc32
    real_fetch_files = Http.fetch_files

    def fetch_files(self, path, names):
        calls["fetched"].append(len(names))
        return real_fetch_files(self, path, names)

    def post_files(self, path, files):
        calls["batches"].append(len(files))
        return real_post_files(self, path, files)

    def put_stream_crc32(self, path, body, check):
        calls["puts"] += 1
        return real_put_crc32(self, path, body, check)

    monkeypatch.setattr(Http, "post_files", post_files)
    monkeypatch.setattr(Http, "put_stream_crc32", put_stream_crc32)
    monkeypatch.setattr(Http, "fetch_files", fetch_files)

    odd = ['quote"d.txt', "caf\u00e9 \u6f22\u5b57.txt", "100%.txt", "a#b&c=d.txt", "semi;colon.txt"]
    src = tmp_path / "many"
    contents = {}
    for i in range(230):
        contents[f"shard-{i // 50}/f{i:04d}.bin"] = os.urandom(1 + i * 37 % 4096)
    for name in odd:
        contents[f"odd/{name}"] = name.encode("utf-8") * 3
    contents["big/large.bin"] = os.urandom(datastore_module.BATCH_FILE_MAX + 1)
    for rel, data in contents.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)

    ds = ws.get_default_datastore()
    ds.upload(src, target_path="batched", show_progress=False)
    small = len(contents) - 1
    assert sum(calls["batches"]) == small, calls
    assert max(calls["batches"]) <= datastore_module.BATCH_FILES and len(calls["batches"]) >= 3, calls
    assert calls["puts"] == 1, "the large file goes alone"
    listed = {f["path"]: f["size"] for f in ds.list_files("batched")}
    assert listed == {f"batched/{rel}": len(data) for rel, data in contents.items()}
    out = tmp_path / "out"
    assert ds.download(out, prefix="batched", show_progress=False) == len(contents)
    for rel, data in contents.items():
        assert (out / "batched" / rel).read_bytes() == data, rel
    # They come back the same way: the small ones in batches (``…/download-batch``).
    assert sum(calls["fetched"]) == small and max(calls["fetched"]) <= datastore_module.BATCH_FILES, calls
    assert not list(out.rglob("*.cairn-partial"))
    with pytest.raises(ServerError) as missing:
        ws.connection.http.fetch_files(
            ws.path("datastores", "default", "download-batch"), ["batched/odd/100%.txt", "batched/nope.txt"]
        )
    assert missing.value.status == 404 and "batched/nope.txt" in missing.value.message

    # The same files again: every one skipped, nothing sent.
    calls["batches"].clear()
    calls["puts"] = 0
    ds.upload(src, target_path="batched", show_progress=False)
    assert (calls["batches"], calls["puts"]) == ([], 0)

    # Changed small files with overwrite: replaced through a batch (the plan's SHA-256 for files
    # of a size already there, a CRC-32 for the others).
    first, second = "shard-0/f0000.bin", "shard-0/f0001.bin"
    contents[first] = b"x" * len(contents[first])
    contents[second] = b"grown" * 300
    for rel in (first, second):
        (src / rel).write_bytes(contents[rel])
    ds.upload(src, target_path="batched", overwrite=True, show_progress=False)
    assert calls["batches"] == [2], calls
    out2 = tmp_path / "out2"
    ds.download(out2, prefix="batched/shard-0", show_progress=False)
    assert (out2 / "batched" / first).read_bytes() == contents[first]
    assert (out2 / "batched" / second).read_bytes() == contents[second]

    # One wrong checksum in a batch: 422 naming the file, and none of the batch is stored.
    http = ws.connection.http
    path = ws.path("datastores", "default", "upload-batch", query={"overwrite": "false"})
    good = ("whole/good.txt", b"good", ("x-cairn-crc32", f"{zlib.crc32(b'good'):08x}"))
    bad = ("whole/bad.txt", b"bad", ("x-cairn-crc32", f"{zlib.crc32(b'other'):08x}"))
    with pytest.raises(ServerError, match="whole/bad.txt") as refused:
        http.post_files(path, [good, bad])
    assert refused.value.status == 422
    with pytest.raises(NotFound):  # nothing stored: no such folder
        ds.list_files("whole")
    with pytest.raises(BadRequest):
        http.post_files(path, [good, ("whole/../escape.txt", b"e", ("x-cairn-crc32", f"{zlib.crc32(b'e'):08x}"))])
    with pytest.raises(NotFound):  # nothing stored: no such folder
        ds.list_files("whole")
    assert [r["path"] for r in http.post_files(path, [good])["files"]] == ["whole/good.txt"]


def test_datastore_upload_refuses_a_path_that_is_a_file_and_a_folder_before_sending_anything(ws, tmp_path):
    ds = ws.get_default_datastore()
    ds.upload(make_tree(tmp_path / "first", {"shape/a": "a file"}), show_progress=False)
    clashing = make_tree(tmp_path / "clashing", {"shape/a/b.txt": "under a file", "shape/new.txt": "new"})
    for overwrite in (False, True):
        with pytest.raises(Conflict, match=r"1 file\(s\) cannot be stored.*shape/a is a file in this datastore.*nothing was uploaded"):
            ds.upload(clashing, overwrite=overwrite, show_progress=False)
    assert [f["path"] for f in ds.list_files("shape")] == ["shape/a"]


def test_a_batch_part_is_refused_if_its_file_changed_while_it_was_read(tmp_path):
    from cairn._client import CairnError
    from cairn.datastore import _Planned, _read_part

    src = tmp_path / "small.txt"
    src.write_bytes(b"0123456789")
    listed = _Planned(src, "d/small.txt", 10)
    name, content, checksum = _read_part(listed)
    assert (name, content, checksum) == ("d/small.txt", b"0123456789", ("x-cairn-crc32", f"{zlib.crc32(content):08x}"))
    listed.sha256 = hashlib.sha256(content).hexdigest()
    assert _read_part(listed)[2] == ("x-cairn-sha256", listed.sha256)
    src.write_bytes(b"01234567890123")  # grew since it was listed
    with pytest.raises(CairnError, match="small.txt changed while it was being uploaded"):
        _read_part(listed)


def test_datastore_bad_paths_and_names(ws, tmp_path):
    src = make_tree(tmp_path / "src", {"a.csv": "1"})
    ds = ws.get_default_datastore()
    with pytest.raises(ValueError, match=r"\.\."):
        ds.upload(src, target_path="../escape")
    with pytest.raises(NotFound):
        Datastore.get(ws, "nope")
    with pytest.raises(NotFound):
        ds.download(tmp_path / "out", prefix="no/such/file.csv", show_progress=False)
    assert not (tmp_path / "out" / "no" / "such" / "file.csv").exists()
    with pytest.raises(NotFound, match='"no/such" in datastore "default" not found'):
        ds.list_files("no/such")
    upload_files_ref = ds.upload_files([src / "a.csv"], relative_root=src, target_path="single", show_progress=False)
    assert upload_files_ref.path_on_datastore == "single"
    assert [f["path"] for f in ds.list_files("single")] == ["single/a.csv"]


# -- compute and environment -------------------------------------------------------------------


def test_compute_get_or_create(ws):
    config = LocalCluster.provisioning_configuration(vm_size="STANDARD_D2_V2", min_nodes=0, max_nodes="2")
    created = ComputeTarget.create(ws, "cpucluster", config)
    assert (created.vm_size, created.min_nodes, created.max_nodes) == ("STANDARD_D2_V2", 0, 2)
    again = ComputeTarget.create(ws, "cpucluster", LocalCluster.provisioning_configuration(max_nodes=1))
    assert again.max_nodes == 2  # the existing target, unchanged
    assert ComputeTarget(ws, "cpucluster").get_status()["busy_nodes"] == 0
    assert "cpucluster" in ws.compute_targets
    with pytest.raises(BadRequest, match="unknown size"):
        ComputeTarget.create(ws, "big", LocalCluster.provisioning_configuration(vm_size="NO_SUCH_SIZE"))
    with pytest.raises(NotFound):
        ComputeTarget(ws, "nope")
    with pytest.raises(ValueError, match="max_nodes"):
        LocalCluster.provisioning_configuration(max_nodes="two")


def test_environment_register_get_versions(ws):
    env = Environment("tools", conda_packages=["python=3.11", "scikit-learn"], pip_packages=["joblib>=1"])
    env.register(ws)
    assert env.version == 1
    fetched = Environment.get(ws, "tools")
    assert fetched.version == 1 and fetched.python_version == "3.11"
    assert fetched.pip_packages == ["joblib>=1", "scikit-learn"]
    Environment("tools", pip_packages=["joblib"]).register(ws)
    assert Environment.get(ws, "tools").version == 2
    assert Environment.get(ws, "tools", version=1).pip_packages == ["joblib>=1", "scikit-learn"]
    assert ws.environments["tools"].version == 2
    with pytest.raises(NotFound, match="nope"):
        Environment.get(ws, "nope")
    with pytest.raises(ValueError, match="cudatoolkit"):
        Environment("gpu", conda_packages=["cudatoolkit"]).register(ws)
    with pytest.raises(BadRequest):
        Environment("bad", pip_packages=["--index-url=http://evil"]).register(ws)


def test_environment_build_reuse_and_failure(ws):
    env = Environment("empty")
    first = env.build(ws)  # registers, then builds
    assert env.version == 1 and first["ready"]
    again = Environment.get(ws, "empty").build(ws)
    assert again["reused"] and again["hash"] == first["hash"]
    broken = Environment("broken", pip_packages=["cairn-test-no-such-package-zz9==0.0.1"])
    with pytest.raises(BadRequest) as caught:
        broken.build(ws)
    assert caught.value.status == 422
    assert "cairn-test-no-such-package-zz9" in caught.value.message


# -- jobs and runs -----------------------------------------------------------------------------


@pytest.fixture
def job_setup(ws, tmp_path):
    """A workspace with a cluster, an environment without packages and some data."""
    cluster = ComputeTarget.create(ws, "cpu", LocalCluster.provisioning_configuration(max_nodes=2))
    env = Environment("plain").register(ws)
    ws.get_default_datastore().upload(make_tree(tmp_path / "data", {"d/x.txt": "42"}), "inputs", show_progress=False)
    code = tmp_path / "code"
    code.mkdir()
    return ws, cluster, env, code


def test_submit_wait_metrics_files(job_setup, capsys, tmp_path):
    ws, cluster, env, code = job_setup
    (code / "train.py").write_text(
        "import os, sys\n"
        "from cairn import Run\n"
        "run = Run.get_context()\n"
        "folder = sys.argv[2]\n"
        "print('read', open(os.path.join(folder, 'inputs', 'd', 'x.txt')).read())\n"
        "run.log('rmse', 0.5)\n"
        "run.log_list('loss', [3, 2, 1])\n"
        "os.makedirs('outputs', exist_ok=True)\n"
        "open('outputs/model.txt', 'w').write('model')\n"
        "os.makedirs('outputs/parts', exist_ok=True)\n"
        "for i in range(3):\n"
        "    open(f'outputs/parts/{i}.txt', 'w').write(str(i))\n"
    )
    ds = ws.get_default_datastore()
    config = ScriptRunConfig(code, script="train.py", arguments=["--data", ds.as_mount()],
                             compute_target=cluster, environment=env)
    experiment = Experiment(ws, "expt")
    run = experiment.submit(config, tags={"who": "test"})
    details = run.wait_for_completion(show_output=True)
    assert details["status"] == "Completed"
    out = capsys.readouterr().out
    assert "read 42" in out and "Status: Completed" in out
    assert run.get_metrics() == {"rmse": 0.5, "loss": [3.0, 2.0, 1.0]}
    assert run.get_metrics("rmse") == {"rmse": 0.5}
    assert run.get_tags()["who"] == "test"
    names = run.get_file_names()
    assert "outputs/model.txt" in names and "logs/std_log.txt" in names
    assert run.download_file("outputs/model.txt", tmp_path).read_text() == "model"
    got = run.download_files(prefix="outputs", output_directory=tmp_path / "all")
    # Small files come in one batch request; every file lands whole at its own path.
    assert sorted((p.relative_to(tmp_path / "all").as_posix(), p.read_text()) for p in got) == [
        ("outputs/model.txt", "model"), ("outputs/parts/0.txt", "0"), ("outputs/parts/1.txt", "1"),
        ("outputs/parts/2.txt", "2")]
    got = run.download_files(prefix="outputs/parts", output_directory=tmp_path / "parts", append_prefix=False)
    assert sorted(p.relative_to(tmp_path / "parts").as_posix() for p in got) == ["0.txt", "1.txt", "2.txt"]
    assert run.id in [r.id for r in experiment.get_runs()]
    assert "expt" in ws.experiments


def test_failed_run_raises_with_error_and_log_tail(job_setup):
    ws, cluster, env, code = job_setup
    (code / "train.py").write_text("import sys\nprint('about to fail: bad column')\nsys.exit(3)\n")
    run = Experiment(ws, "expt").submit(ScriptRunConfig(code, script="train.py", compute_target="cpu", environment="plain"))
    with pytest.raises(RunFailed) as caught:
        run.wait_for_completion()
    assert caught.value.status == "Failed"
    assert "exit code 3" in str(caught.value)
    assert "about to fail: bad column" in str(caught.value)
    assert run.wait_for_completion(raise_on_error=False)["status"] == "Failed"


def test_submit_refuses_what_the_server_cannot_run(job_setup):
    ws, cluster, env, code = job_setup
    (code / "train.py").write_text("print(1)\n")
    with pytest.raises(NotFound, match="nope"):
        Experiment(ws, "expt").submit(ScriptRunConfig(code, script="train.py", compute_target="nope", environment=env))
    with pytest.raises(NotFound):
        Experiment(ws, "expt").submit(ScriptRunConfig(code, script="train.py", compute_target=cluster, environment="nope"))
    with pytest.raises(NotADirectoryError):
        Experiment(ws, "expt").submit(ScriptRunConfig(code / "missing", script="train.py", compute_target=cluster, environment=env))


def test_command_with_data_references(job_setup, capsys):
    ws, cluster, env, code = job_setup
    ds = ws.get_default_datastore()
    config = ScriptRunConfig(
        code,
        # A list is an argv: every word is quoted, so "&&" is a file name here, not a shell operator.
        command=["ls", ds.path("inputs/d").as_download(), "&&"],
        compute_target=cluster,
        environment=env,
    )
    run = Experiment(ws, "expt").submit(config)
    assert run.wait_for_completion(show_output=True, raise_on_error=False)["status"] == "Failed"
    out = capsys.readouterr().out
    assert "x.txt" in out and "cannot access '&&'" in out
    shell = ScriptRunConfig(code, command="ls && echo listed", arguments=[], compute_target=cluster,
                            environment=env)
    Experiment(ws, "expt").submit(shell).wait_for_completion(show_output=True)
    assert "listed" in capsys.readouterr().out


def test_cancel_and_children(job_setup):
    ws, cluster, env, code = job_setup
    (code / "train.py").write_text("import time\nprint('sleeping', flush=True)\ntime.sleep(600)\n")
    run = Experiment(ws, "expt").submit(ScriptRunConfig(code, script="train.py", compute_target=cluster, environment=env))
    run.cancel()
    with pytest.raises(RunFailed) as caught:
        run.wait_for_completion()
    assert caught.value.status == "Canceled"
    child = ws.call("POST", "runs", body={"experiment": "expt", "parent_run_id": run.id})
    assert [c.id for c in run.get_children()] == [child["id"]]
