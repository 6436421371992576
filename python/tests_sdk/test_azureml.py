"""The ``azureml`` compatibility layer's own round trips and refusals, against a real server."""

from __future__ import annotations

import json
from pathlib import Path

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
    assert aws.models == {}


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
        "run.log('accuracy', float(sys.argv[2]))\nrun.log('accuracy', 0.9)\n"
        "run.add_properties({'stage': 'test'})\nrun.complete()\n"
    )
    (code / "fail.py").write_text("raise SystemExit('no data found')\n")
    env = Environment("plain-aml")  # registered on submit
    config = ScriptRunConfig(source_directory=str(code), script="score.py", arguments=["--acc", 0.5],
                             compute_target=target, environment=env)
    run = Experiment(aws, "aml_expt").submit(config)
    assert isinstance(run, Run)
    run.wait_for_completion(show_output=False)
    assert run.get_metrics() == {"accuracy": [0.5, 0.9]}
    assert run.get_properties() == {"stage": "test"}
    assert env.version == 1
    again = Run.get(aws, run.id)
    assert (type(again), again.id, again.experiment.name) == (Run, run.id, "aml_expt")
    assert (run.get_environment().name, run.get_environment().version) == ("plain-aml", 1)
    assert run.get_portal_url().endswith(f"/w/{aws.name}/runs/{run.id}")
    assert isinstance(run.display_name, str)

    failing = ScriptRunConfig(source_directory=str(code), script="fail.py", compute_target=target, environment=env)
    failed = Experiment(aws, "aml_expt").submit(failing)
    with pytest.raises(RunFailed, match="no data found"):
        failed.wait_for_completion(show_output=True)
    assert [r.id for r in Experiment(aws, "aml_expt").get_runs()] == [failed.id, run.id]
    with pytest.raises(NotFound):
        run.register_model(model_name="m", model_path="outputs/m.pkl")
    assert "m" not in aws.models
    with pytest.raises(NotImplementedError, match="run_config"):
        ScriptRunConfig(source_directory=str(code), script="score.py", run_config=object())


SCORE_PY = """
import json
from azureml.core.model import Model

def init():
    global coef
    with open(Model.get_model_path('wine_model')) as f:
        coef = json.load(f)

def run(raw_data):
    rows = json.loads(raw_data)['data']
    return [sum(w * x for w, x in zip(coef['w'], row)) + coef['b'] for row in rows]
"""


def test_register_model_deploy_and_predict(aws, tmp_path, monkeypatch, capsys):
    import urllib.request

    from azureml.core import Environment, Experiment, ScriptRunConfig
    from azureml.core.compute import AksCompute, AmlCompute, ComputeTarget
    from azureml.core.model import InferenceConfig, Model
    from azureml.core.webservice import AciWebservice, AksWebservice, LocalWebservice, Webservice

    target = ComputeTarget.create(aws, "cpu", AmlCompute.provisioning_configuration(max_nodes=1))
    code = tmp_path / "winecode"
    code.mkdir()
    (code / "train.py").write_text(
        "import json, os\n"
        "os.makedirs('outputs', exist_ok=True)\n"
        "json.dump({'w': [2.0, -1.0], 'b': 1.0}, open('outputs/wine_model.json', 'w'))\n"
    )
    (code / "score.py").write_text(SCORE_PY)
    env = Environment("plain-aml")
    run = Experiment(aws, "wine").submit(ScriptRunConfig(source_directory=str(code), script="train.py",
                                                         compute_target=target, environment=env))
    run.wait_for_completion()
    model = run.register_model(model_name="wine_model", model_path="outputs/wine_model.json",
                               tags={"area": "wine", "type": "json"}, description="quality wine")
    assert (model.name, model.id, model.version) == ("wine_model", "wine_model:1", 1)
    assert isinstance(model, Model) and model.tags == {"area": "wine", "type": "json"}
    again = Model.register(aws, str(tmp_path / "winecode" / "train.py"), "wine_model", tags={"k": "v"})
    assert again.version == 2 and Model(aws, "wine_model", version=1).description == "quality wine"
    # Tags as v1 changes and filters them: add, filter by [name, value], replace with update.
    model.add_tags({"stage": "prod"})
    assert Model(aws, "wine_model", version=1).tags == {"area": "wine", "type": "json", "stage": "prod"}
    assert [m.version for m in Model.list(aws, tags=[["stage", "prod"]])] == [1]
    assert [m.version for m in Model.list(aws, name="wine_model", tags=["k"])] == [2]
    assert Model.list(aws, tags=[["stage", "dev"]]) == []
    model.update(tags={"only": "this"}, description="replaced")
    got = Model(aws, "wine_model", version=1)
    assert (got.tags, got.description) == ({"only": "this"}, "replaced")
    # A scoring script tried locally, as Azure ML v1 allows: with _workspace the version is
    # downloaded under ./azureml-models/NAME/VERSION/.
    monkeypatch.chdir(tmp_path)
    path = Model.get_model_path("wine_model", version=1, _workspace=aws)
    assert path == str(Path("azureml-models") / "wine_model" / "1" / "wine_model.json")
    assert json.loads(Path(path).read_text()) == {"w": [2.0, -1.0], "b": 1.0}
    assert Model.get_model_path("wine_model", _workspace=aws).endswith(str(Path("wine_model", "2", "train.py")))

    inference = InferenceConfig(runtime="python", source_directory=str(code), entry_script="score.py",
                                environment=env)
    cluster = ComputeTarget.create(aws, "aks-cluster",
                                   AksCompute.provisioning_configuration(cluster_purpose=AksCompute.ClusterPurpose.DEV_TEST))
    cluster.wait_for_completion(show_output=True)
    assert isinstance(cluster, AksCompute) and cluster.provisioning_state == "Succeeded"
    deploy_config = AksWebservice.deploy_configuration(cpu_cores=1, memory_gb=1)
    service = Model.deploy(workspace=aws, name="wine-service", models=[Model(aws, "wine_model", version=1)],
                           inference_config=inference, deployment_config=deploy_config, deployment_target=cluster)
    capsys.readouterr()
    service.wait_for_deployment(show_output=True)
    assert isinstance(service, Webservice) and service.state == "Healthy"
    # The log is followed, each line printed once, then the final state.
    followed = capsys.readouterr().out
    printed = [line for line in followed.splitlines() if not line.startswith("wine-service: ")]
    assert printed and printed == service.get_logs().splitlines(), followed
    assert followed.rstrip().endswith("wine-service: Healthy"), followed
    assert list(aws.webservices) == ["wine-service"]

    primary_key, _ = service.get_keys()
    request = urllib.request.Request(service.scoring_uri, data=json.dumps({"data": [[1.0, 2.0]]}).encode(),
                                     headers={"Content-Type": "application/json",
                                              "Authorization": "Bearer " + primary_key})
    with urllib.request.urlopen(request) as response:
        assert json.loads(response.read()) == [1.0]
    assert service.run(json.dumps({"data": [[3.0, 0.0]]})) == [7.0]
    assert [m.id for m in service.models] == ["wine_model:1"]
    assert (service.auth_enabled, service.token_auth_enabled) == (True, False)
    service.update(tags={"team": "wine"}, description="wine quality")
    service.add_tags({"stage": "prod"})
    again = Webservice(aws, "wine-service")
    assert (again.tags, again.description) == ({"team": "wine", "stage": "prod"}, "wine quality")
    service.remove_tags(["team"])
    assert Webservice(aws, "wine-service").tags == {"stage": "prod"}
    with pytest.raises(ValueError, match="nothing to change"):
        service.update()
    with pytest.raises(NotImplementedError, match="autoscal"):
        AksWebservice.deploy_configuration(autoscale_enabled=True)
    assert LocalWebservice.deploy_configuration(port=6789).instance_count == 1
    aci = AciWebservice.deploy_configuration(cpu_cores=0.5, memory_gb=2, auth_enabled=True)
    assert (aci.cpu_cores, aci.memory_gb, aci.instance_count) == (0.5, 2, 1)
    service.delete()
    assert aws.webservices == {}


def test_inference_config_from_a_conda_file(aws, tmp_path):
    from azureml.core import Environment
    from azureml.core.conda_dependencies import CondaDependencies
    from azureml.core.model import InferenceConfig, Model

    (tmp_path / "coef.json").write_text(json.dumps({"w": [1.0], "b": 0.0}))
    Model.register(workspace=aws, model_path=str(tmp_path / "coef.json"), model_name="wine_model")
    code = tmp_path / "winecode"
    code.mkdir()
    (code / "score.py").write_text(SCORE_PY)
    (code / "env.yml").write_text(CondaDependencies().serialize_to_string())
    with pytest.raises(ValueError, match="environment or a conda_file"):
        InferenceConfig(entry_script="score.py", source_directory=str(code))
    with pytest.raises(NotImplementedError, match="runtime"):
        InferenceConfig(entry_script="score.py", runtime="spark-py", conda_file="env.yml")
    config = InferenceConfig(runtime="python", source_directory=str(code), entry_script="score.py",
                             conda_file="env.yml")
    service = Model.deploy(aws, "conda-service", [aws.models["wine_model"]], config)
    service.wait_for_deployment()
    assert Environment.get(aws, "conda-service-env").version == 1
    assert service.run(json.dumps({"data": [[4.0]]})) == [4.0]
    service.delete()
