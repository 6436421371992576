"""MLflow's model registry through Cairn's native registry (MlflowClient calls)."""

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException


def test_registered_models_create_search_tag_rename_delete(server, workspace):
    client = MlflowClient()
    client.create_registered_model("wine", tags={"team": "a"}, description="red wine")
    client.create_registered_model("beer")
    with pytest.raises(MlflowException) as e:
        client.create_registered_model("wine")
    assert e.value.error_code == "RESOURCE_ALREADY_EXISTS"
    with pytest.raises(MlflowException) as e:
        client.create_registered_model("bad/name")
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"

    m = client.get_registered_model("wine")
    assert (m.name, m.description, m.tags) == ("wine", "red wine", {"team": "a"})
    assert [x.name for x in client.search_registered_models()] == ["beer", "wine"]
    assert [x.name for x in client.search_registered_models("name LIKE 'wi%'")] == ["wine"]
    assert [x.name for x in client.search_registered_models("tags.team = 'a'")] == ["wine"]

    client.set_registered_model_tag("wine", "stage", "dev")
    client.delete_registered_model_tag("wine", "team")
    client.update_registered_model("wine", description="updated")
    m = client.get_registered_model("wine")
    assert (m.description, m.tags) == ("updated", {"stage": "dev"})

    client.rename_registered_model("wine", "vino")
    with pytest.raises(MlflowException) as e:
        client.get_registered_model("wine")
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    # The native registry sees the same model.
    assert "vino" in server.cli("model", "list", "-w", workspace, "-o", "json")
    client.delete_registered_model("vino")
    assert [x.name for x in client.search_registered_models()] == ["beer"]


def test_register_logged_model_then_load_by_name_and_alias(server, workspace, wine):
    import numpy as np
    from sklearn.linear_model import ElasticNet

    X, y = wine
    model = ElasticNet(alpha=0.3, l1_ratio=0.5, random_state=42).fit(X, y)
    mlflow.set_experiment("wine")
    with mlflow.start_run() as run:
        info = mlflow.sklearn.log_model(model, name="wine_model")
    mv = mlflow.register_model(info.model_uri, "wine")
    assert (mv.name, mv.version) == ("wine", "1")
    expected = model.predict(X.head(40))
    loaded = mlflow.pyfunc.load_model("models:/wine/1")
    np.testing.assert_allclose(loaded.predict(X.head(40)), expected)

    client = MlflowClient()
    v = client.get_model_version("wine", "1")
    # (this client does not read model_id back from the wire; source names the logged model)
    assert v.run_id == run.info.run_id and v.source == info.model_uri, v
    # registering the same files again makes version 2, and the bytes are not copied twice
    mv2 = mlflow.register_model(info.model_uri, "wine")
    assert mv2.version == "2"
    client.set_registered_model_alias("wine", "champion", "2")
    assert client.get_model_version_by_alias("wine", "champion").version == "2"
    np.testing.assert_allclose(mlflow.pyfunc.load_model("models:/wine@champion").predict(X.head(40)), expected)
    assert client.get_registered_model("wine").aliases == {"champion": "2"}
    client.set_model_version_tag("wine", "1", "validated", "yes")
    assert client.get_model_version("wine", "1").tags == {"validated": "yes"}
    client.delete_model_version_tag("wine", "1", "validated")
    assert [v.version for v in client.search_model_versions("name = 'wine'")] == ["2", "1"]
    assert client.get_latest_versions("wine", stages=["None"])[0].version == "2"
    client.delete_registered_model_alias("wine", "champion")
    with pytest.raises(MlflowException) as e:
        client.get_model_version_by_alias("wine", "champion")
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"

    # The native registry has the same versions, with the framework read from MLmodel.
    out = server.cli("model", "list", "-w", workspace, "-o", "json")
    assert "wine" in out, out
    status, native = server.api("GET", f"/api/v1/workspaces/{workspace}/models/wine/versions/1")
    assert status == 200, native
    assert native["framework"] == "sklearn", native
    status, files = server.api("GET", f"/api/v1/workspaces/{workspace}/models/wine/versions/1/files")
    assert status == 200, files
    assert {"MLmodel", "model.skops"} <= {f["path"] for f in files}, files

    # A source that is not there: 404 naming it.
    with pytest.raises(MlflowException) as e:
        client.create_model_version("wine", f"runs:/{run.info.run_id}/no/such/path", run.info.run_id)
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST", e.value
    assert "no/such/path" in e.value.message

    # ... and a version registered natively (local files, `cairn model register`) is one MLflow loads.
    local = mlflow.artifacts.download_artifacts(info.model_uri)
    server.cli("model", "register", "-w", workspace, "--name", "native", "--path", local)
    np.testing.assert_allclose(mlflow.pyfunc.load_model("models:/native/1").predict(X.head(40)), expected)

    client.delete_model_version("wine", "1")
    assert [v.version for v in client.search_model_versions("name = 'wine'")] == ["2"]


def test_search_model_versions_filters_and_orders_like_mlflow(server, workspace, tmp_path):
    client = MlflowClient()
    exp = client.create_experiment("versions")
    runs = []
    for i in range(3):
        run = client.create_run(exp)
        folder = tmp_path / f"m{i}"
        folder.mkdir()
        (folder / "weights.txt").write_text(str(i))
        client.log_artifacts(run.info.run_id, str(folder), "model")
        runs.append(run.info.run_id)
    client.create_registered_model("a")
    client.create_registered_model("b")
    for name, run in [("a", runs[0]), ("a", runs[1]), ("b", runs[2]), ("a", runs[2])]:
        client.create_model_version(name, f"runs:/{run}/model", run_id=run)
    # A run_id that is not the source's run is refused (as MLflow does), and nothing is made.
    for wrong in [runs[1], "0" * 32]:
        with pytest.raises(MlflowException) as e:
            client.create_model_version("b", f"runs:/{runs[0]}/model", run_id=wrong)
        assert e.value.error_code == "INVALID_PARAMETER_VALUE" and "must identify" in e.value.message

    def got(filter_string, **kw):
        return [(v.name, v.version) for v in client.search_model_versions(filter_string, **kw)]

    # MLflow's default order: name ascending, then version descending.
    assert got("") == [("a", "3"), ("a", "2"), ("a", "1"), ("b", "1")]
    assert got(f"run_id IN ('{runs[0]}', '{runs[2]}')") == [("a", "3"), ("a", "1"), ("b", "1")]
    assert got("name = 'a' and version_number >= 2", order_by=["version_number ASC"]) == [("a", "2"), ("a", "3")]
    assert got(f"source_path = 'runs:/{runs[1]}/model'") == [("a", "2")]
    assert got("name LIKE 'b%'") == [("b", "1")]
    for bad in ["colour = 'red'", "version_number > 'x'"]:
        with pytest.raises(MlflowException) as e:
            client.search_model_versions(bad)
        assert e.value.error_code == "INVALID_PARAMETER_VALUE", bad
    with pytest.raises(MlflowException) as e:
        client.search_model_versions("", order_by=["colour DESC"])
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"

    assert [m.name for m in client.search_registered_models(order_by=["name DESC"])] == ["b", "a"]
    with pytest.raises(MlflowException) as e:
        client.search_registered_models(order_by=["version_number DESC"])
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"


def test_prompts_register_load_alias_search_and_delete(server, workspace):
    """MLflow's prompt registry is its model registry with prompt tags and no files: versions with
    a placeholder source, `@latest`, aliases, a search that keeps prompts and models apart."""
    client = MlflowClient()
    first = mlflow.genai.register_prompt(name="greet", template="Hello {{name}}", commit_message="first",
                                         tags={"team": "a"})
    second = mlflow.genai.register_prompt(name="greet", template="Hi {{name}}!")
    assert (first.version, second.version) == (1, 2)
    loaded = mlflow.genai.load_prompt("prompts:/greet/1")
    assert loaded.format(name="x") == "Hello x" and loaded.commit_message == "first"
    assert mlflow.genai.load_prompt("prompts:/greet@latest").version == 2
    mlflow.genai.set_prompt_alias("greet", alias="prod", version=1)
    assert mlflow.genai.load_prompt("prompts:/greet@prod").format(name="y") == "Hello y"

    chat = [{"role": "system", "content": "be {{style}}"}, {"role": "user", "content": "{{q}}"}]
    mlflow.genai.register_prompt(name="chat", template=chat)
    assert mlflow.genai.load_prompt("prompts:/chat/1").format(style="brief", q="why")[0]["content"] == "be brief"
    assert sorted(p.name for p in mlflow.genai.search_prompts()) == ["chat", "greet"]
    assert [p.name for p in mlflow.genai.search_prompts(filter_string="name LIKE 'gr%'")] == ["greet"]
    # A model beside them: each search sees only its own kind, and a prompt is one of the models.
    client.create_registered_model("a-model")
    assert [m.name for m in client.search_registered_models()] == ["a-model"]
    assert sorted(p.name for p in mlflow.genai.search_prompts()) == ["chat", "greet"]
    versions = client.search_model_versions("name = 'greet'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    assert server.cli("model", "show", "greet:2", "-w", workspace, "--output", "json")

    client.set_prompt_version_tag("greet", 1, "reviewed", "yes")
    assert client.get_prompt_version("greet", 1).tags["reviewed"] == "yes"
    mlflow.genai.delete_prompt_alias("greet", alias="prod")
    with pytest.raises(MlflowException):
        mlflow.genai.load_prompt("prompts:/greet@prod")
    client.delete_prompt_version("greet", 2)
    assert mlflow.genai.load_prompt("prompts:/greet@latest").version == 1
    client.delete_prompt_version("chat", 1)
    client.delete_prompt("chat")
    assert [p.name for p in mlflow.genai.search_prompts()] == ["greet"]


def test_a_prompt_version_needs_a_placeholder_source(server, workspace):
    """As MLflow's server: a version tagged as a prompt names no files, so a real source is refused
    (400) and nothing is registered; nor is lineage to a run that is not there. (Raw REST: the
    client itself never sends these.)"""
    api = f"/workspaces/{workspace}/mlflow/api/2.0/mlflow"
    prompt_tag = [{"key": "mlflow.prompt.is_prompt", "value": "true"}]
    status, _ = server.api("POST", f"{api}/registered-models/create", {"name": "p", "tags": prompt_tag})
    assert status == 200
    for body in ({"name": "p", "source": "runs:/0123/model", "tags": prompt_tag},
                 {"name": "p", "source": "dummy-source", "run_id": "nope", "tags": prompt_tag}):
        status, err = server.api("POST", f"{api}/model-versions/create", body)
        assert (status, err["error_code"]) == (400, "INVALID_PARAMETER_VALUE"), err
    assert "placeholder" in server.api("POST", f"{api}/model-versions/create",
                                       {"name": "p", "source": "x", "tags": prompt_tag})[1]["message"]
    status, found = server.api("GET", f"{api}/model-versions/search?filter=name%3D%27p%27")
    assert status == 200 and found.get("model_versions", []) == [], found
    status, made = server.api("POST", f"{api}/model-versions/create",
                              {"name": "p", "source": "prompt-template", "tags": prompt_tag})
    assert status == 200 and made["model_version"]["version"] == "1", made
