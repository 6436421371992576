"""The ``azureml`` compatibility layer's own round trips and refusals, against a real server."""

from __future__ import annotations

import json

import pytest

from cairn import Conflict, NotFound, RunFailed
from conftest import unique


@pytest.fixture
def aws(connected):
    from azureml.core import Workspace

    return Workspace.create(unique("aml"), subscription_id="s", resource_group="r", show_output=False)


def test_workspace_get_create_from_config(aws, tmp_path, monkeypatch):
    from azureml.core import Workspace

    assert Workspace.get(aws.name, subscription_id="s").name == aws.name
    assert [w.name for w in Workspace.list("s")[aws.name]] == [aws.name]
    with pytest.raises(Conflict):
        Workspace.create(aws.name, show_output=False)
    assert Workspace.create(aws.name, exist_ok=True, show_output=False).name == aws.name
    (tmp_path / "config.json").write_text(json.dumps({"subscription_id": "s", "resource_group": "r",
                                                      "workspace_name": aws.name}))
    assert Workspace.from_config(path=str(tmp_path)).name == aws.name
    assert Workspace(subscription_id="s", resource_group="r", workspace_name=aws.name).name == aws.name
    monkeypatch.chdir(tmp_path)
    aws.write_config()
    assert Workspace.from_config(path=str(tmp_path / ".azureml" / "config.json")).name == aws.name
    with pytest.raises(NotFound):
        Workspace.get("no-such-workspace")
    with pytest.raises(NotImplementedError, match="model registry"):
        aws.models


def test_compute_environment_and_datastore(aws, tmp_path):
    from azureml.core import Datastore, Environment
    from azureml.core.compute import AmlCompute, ComputeTarget
    from azureml.core.conda_dependencies import CondaDependencies

    config = AmlCompute.provisioning_configuration(vm_size="STANDARD_D2_V2", vm_priority="lowpriority", max_nodes=2)
    target = ComputeTarget.create(aws, "cpucluster", config)
    assert ComputeTarget.create(aws, "cpucluster", AmlCompute.provisioning_configuration(max_nodes=1)).max_nodes == 2
    assert ComputeTarget(workspace=aws, name="cpucluster").name == target.name
    target.wait_for_completion(show_output=False)

    env = Environment("env-a")
    env.python.conda_dependencies = CondaDependencies.create(
        conda_packages=["scikit-learn"], pip_packages=["azureml-defaults", "joblib"])
    env.register(workspace=aws)
    got = Environment.get(aws, "env-a")
    # azureml-* packages are provided by Cairn itself and not installed from PyPI.
    assert (got.version, list(got.python.conda_dependencies.pip_packages)) == (1, ["joblib", "scikit-learn"])
    with pytest.raises(NotFound, match="missing-env"):
        Environment.get(aws, "missing-env")
    env.python.user_managed_dependencies = True
    with pytest.raises(NotImplementedError, match="user-managed"):
        env.register(aws)

    ds = Datastore.get(aws, "default")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.txt").write_text("x")
    ds.upload(src_dir=str(tmp_path / "d"), target_path="t", overwrite=True, show_progress=False)
    assert [f["path"] for f in aws.get_default_datastore().list_files("t")] == ["t/f.txt"]
    with pytest.raises(NotImplementedError, match="register_azure_blob_container"):
        Datastore.register_azure_blob_container(aws, "blob", "container", "account")


def test_script_run_config_submit_and_failure(aws, tmp_path, capsys):
    from azureml.core import Environment, Experiment, Run, ScriptRunConfig
    from azureml.core.compute import AmlCompute, ComputeTarget

    target = ComputeTarget.create(aws, "cpu", AmlCompute.provisioning_configuration(max_nodes=1))
    code = tmp_path / "code"
    code.mkdir()
    (code / "score.py").write_text(
        "import sys\nfrom azureml.core import Run\nrun = Run.get_context()\n"
        "run.log('accuracy', float(sys.argv[2]))\nrun.log('accuracy', 0.9)\nrun.complete()\n"
    )
    (code / "fail.py").write_text("raise SystemExit('no data found')\n")
    env = Environment("plain-aml")  # registered on submit
    config = ScriptRunConfig(source_directory=str(code), script="score.py", arguments=["--acc", 0.5],
                             compute_target=target, environment=env)
    run = Experiment(aws, "aml_expt").submit(config)
    assert isinstance(run, Run)
    run.wait_for_completion(show_output=False)
    assert run.get_metrics() == {"accuracy": [0.5, 0.9]}
    assert env.version == 1

    failing = ScriptRunConfig(source_directory=str(code), script="fail.py", compute_target=target, environment=env)
    failed = Experiment(aws, "aml_expt").submit(failing)
    with pytest.raises(RunFailed, match="no data found"):
        failed.wait_for_completion(show_output=True)
    assert [r.id for r in Experiment(aws, "aml_expt").get_runs()] == [failed.id, run.id]
    with pytest.raises(NotImplementedError, match="register_model"):
        run.register_model(model_name="m", model_path="outputs/m.pkl")
    with pytest.raises(NotImplementedError, match="run_config"):
        ScriptRunConfig(source_directory=str(code), script="score.py", run_config=object())
