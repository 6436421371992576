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
    status, native = server.api("GET", f"/api/v1/workspaces/{workspace}/models")
    if status == 200:  # the native listing arrives with the registry's routes
        names = [x["name"] for x in (native["items"] if isinstance(native, dict) else native)]
        assert "vino" in names, native
    client.delete_registered_model("vino")
    assert [x.name for x in client.search_registered_models()] == ["beer"]
