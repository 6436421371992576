"""Pure logic of the SDK and the azureml layer (no server)."""

from __future__ import annotations

import json
import re

import pytest

from conftest import ROOT
from cairn import _conda
from cairn.datastore import DataReference, Datastore, check_relative
from cairn.experiment import ScriptRunConfig, snapshot_files
from cairn.workspace import resolve_connection


def rust_table(name: str) -> str:
    src = (ROOT / "crates/cairn-jobs/src/env/conda.rs").read_text()
    start = src.index(f"const {name}")
    return src[start : src.index("];", start)]


def test_conda_tables_equal_the_rust_ones():
    assert _conda.CONDA_TO_PYPI == dict(re.findall(r'\("([^"]+)", "([^"]+)"\)', rust_table("CONDA_TO_PYPI")))
    assert _conda.CONDA_ONLY == set(re.findall(r'"([^"]+)"', rust_table("CONDA_ONLY").split("=", 1)[1]))
    assert _conda.CONDA_VARIANT_SELECTORS == set(
        re.findall(r'"([^"]+)"', rust_table("CONDA_VARIANT_SELECTORS").split("=", 1)[1])
    )


@pytest.mark.parametrize(
    "conda,pip",
    [
        ("", ""),
        ("=1.26", "==1.26.*"),
        ("=1.26.*", "==1.26.*"),
        ("=1.26.4=py311h64a7726_0", "==1.26.4.*"),
        ("==1.26.4", "==1.26.4"),
        (">=1.2", ">=1.2"),
        (" 1.26", "==1.26"),
        (" 1.26.*", "==1.26.*"),
    ],
)
def test_conda_versions_become_pip_specifiers(conda, pip):
    assert _conda.conda_version(conda) == pip


def test_conda_packages_translate_like_the_cli():
    python, packages, notes = _conda.translate(["python=3.11", "scikit-learn", "pytorch=2.1", "cpuonly", "pip"])
    assert python == "3.11"
    assert packages == ["scikit-learn", "torch==2.1.*"]
    assert notes and "cpuonly" in notes[0]
    with pytest.raises(_conda.CondaOnlyPackage, match="cudatoolkit"):
        _conda.translate(["cudatoolkit=11.8"])
    with pytest.raises(ValueError, match="python is given twice"):
        _conda.translate(["python=3.10", "python=3.11"])


def test_connection_rules_mirror_the_cli(tmp_path):
    home = tmp_path / "home"
    (home / ".cairn").mkdir(parents=True)
    (home / ".cairn" / "server.json").write_text(json.dumps({"url": "http://127.0.0.1:9999"}))
    (home / ".cairn" / "admin-token").write_text("local-admin\n")
    env = {"HOME": str(home)}
    # The local server, found through its data directory.
    assert resolve_connection(environ=env) == ("http://127.0.0.1:9999", "local-admin", None)
    # Environment variables win; the local token is not sent to another server.
    assert resolve_connection(environ=dict(env, CAIRN_URL="http://other:1")) == ("http://other:1", None, None)
    # The saved config (cairn login) wins over the local server, its token only for its URL.
    config = home / ".config" / "cairn"
    config.mkdir(parents=True)
    (config / "config.toml").write_text('url = "http://saved:2"\ntoken = "saved-token"\nworkspace = "w"\n')
    assert resolve_connection(environ=env) == ("http://saved:2", "saved-token", "w")
    assert resolve_connection(environ=dict(env, CAIRN_URL="http://other:1"))[1] is None
    assert resolve_connection("http://x:3", "t", "mine", environ=env) == ("http://x:3", "t", "mine")
    # CAIRN_HOME moves the local server's data directory.
    assert resolve_connection(environ={"HOME": str(tmp_path), "CAIRN_HOME": str(home / ".cairn")})[0] == (
        "http://127.0.0.1:9999"
    )


def test_relative_paths_refuse_traversal():
    assert check_relative("a/./b/", "p") == "a/b"
    for bad in ("../x", "a/../../x", "/etc/passwd", "a\\b"):
        with pytest.raises(ValueError):
            check_relative(bad, "p")


def test_data_references_become_job_inputs():
    ds = Datastore(None, "default")  # type: ignore[arg-type]
    config = ScriptRunConfig(
        "src",
        script="train.py",
        arguments=["--data-folder", ds.as_mount(), "--raw", ds.path("raw").as_download(), "--name", "a b", 10],
        compute_target="c",
        environment="e",
    )
    command, inputs = config.command_line()
    assert command == (
        "python train.py --data-folder ${{inputs.data}} --raw ${{inputs.data_1}} --name 'a b' 10"
    )
    assert inputs == {
        "data": {"path": "datastore://default/", "mode": "mount"},
        "data_1": {"path": "datastore://default/raw", "mode": "download"},
    }
    with pytest.raises(ValueError):
        ScriptRunConfig("src", compute_target="c", environment="e")
    with pytest.raises(ValueError):
        DataReference(ds, "../up")


def test_snapshots_skip_hidden_and_ignored_files(tmp_path):
    (tmp_path / "train.py").write_text("print(1)")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "big.csv").write_text("x")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "util.py").write_text("")
    (tmp_path / "pkg" / "util.pyc").write_text("")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("")
    (tmp_path / ".amlignore").write_text("data/\n*.pyc\n")
    assert [f["path"] for _, f in snapshot_files(tmp_path)] == ["pkg/util.py", "train.py"]


def test_conda_dependencies_round_trip(tmp_path):
    from azureml.core.conda_dependencies import CondaDependencies

    deps = CondaDependencies.create(conda_packages=["scikit-learn", "numpy=1.26"], pip_packages=["joblib>=1"])
    deps.add_conda_package("pandas")
    deps.add_pip_package("joblib")  # replaces joblib>=1
    deps.set_python_version("3.11")
    text = deps.serialize_to_string()
    assert "- python=3.11\n- scikit-learn\n- numpy=1.26\n- pandas\n- pip:\n  - joblib\n" in text
    path = tmp_path / "env.yml"
    path.write_text(text)
    again = CondaDependencies(path)
    assert list(again.conda_packages) == ["scikit-learn", "numpy=1.26", "pandas"]
    assert list(again.pip_packages) == ["joblib"]
    assert again.get_python_version() == "3.11"
    assert again.serialize_to_string() == text


def test_azure_only_arguments_are_reported_once(capsys):
    from azureml.core.authentication import InteractiveLoginAuthentication

    InteractiveLoginAuthentication(tenant_id="tenant-for-once-test")
    InteractiveLoginAuthentication(tenant_id="tenant-for-once-test")
    err = capsys.readouterr().err
    assert err.count("ignoring tenant_id") == 1


def test_unsupported_features_raise_naming_them():
    from azureml.core.compute import AksCompute
    from azureml.train.estimator import Estimator

    with pytest.raises(NotImplementedError, match="AksCompute.attach_configuration"):
        AksCompute.attach_configuration(resource_id="x")
    with pytest.raises(NotImplementedError, match="distributed training"):
        Estimator("src", entry_script="t.py", compute_target="c", node_count=2)


def test_estimator_script_params_become_arguments():
    from azureml.core import Environment
    from azureml.train.estimator import Estimator

    est = Estimator("src", entry_script="train.py", compute_target="c",
                    script_params={"--max-depth": 10, "--verbose": ""}, environment_definition=Environment("e"))
    assert est.arguments == ["--max-depth", 10, "--verbose"]
    packaged = Estimator("src", entry_script="train.py", compute_target="c", conda_packages=["scikit-learn"])
    same = Estimator("src", entry_script="train.py", compute_target="c", conda_packages=["scikit-learn"])
    assert packaged.environment.name == same.environment.name
    assert list(packaged.environment.python.conda_dependencies.conda_packages) == ["scikit-learn"]


def test_download_batches_are_read_part_by_part_and_refused_when_malformed():
    from cairn._client import _mixed_parts

    kind = "multipart/mixed; boundary=b0"
    body = (
        b"--b0\r\nContent-Disposition: attachment; filename*=UTF-8''d%2Fcaf%C3%A9%20%22q%22.txt\r\n"
        b"Content-Length: 7\r\n\r\n--b0\r\nx\r\n"
        b"--b0\r\nContent-Length: 0\r\nContent-Disposition: attachment; filename*=UTF-8''e\r\n\r\n\r\n"
        b"--b0--\r\n"
    )
    # A part's length is counted, not searched for: content that looks like a boundary is content.
    assert _mixed_parts(kind, body) == [('d/caf\u00e9 "q".txt', b"--b0\r\nx"), ("e", b"")]
    for bad_kind, bad_body, says in [
        ("application/json", body, "not multipart/mixed"),
        (kind, body.replace(b"Content-Length: 7", b"Content-Length: 6"), "not as long"),
        (kind, body.replace(b"filename*=UTF-8''e", b'filename="e"'), "does not name"),
        (kind, b"garbage", "does not start"),
        (kind, body[:40], "no end to its headers"),
    ]:
        with pytest.raises(ValueError, match=says):
            _mixed_parts(bad_kind, bad_body)
