"""``azureml.core.Datastore``: Cairn's datastores already have Azure ML's upload/download API;
registering Azure storage (blob containers, file shares, data lakes) is not supported."""

from __future__ import annotations

from typing import Any

import cairn.datastore as _sdk
from cairn.datastore import DataReference

from .._compat import unsupported


class Datastore(_sdk.Datastore):
    """A datastore of a workspace (``Datastore.get(ws, name)``, ``ws.get_default_datastore()``)."""

    def __init__(self, workspace: Any, name: str, **kwargs: Any) -> None:
        _sdk.Datastore.__init__(self, workspace, name, **kwargs)

    @staticmethod
    def register_azure_blob_container(*args: Any, **kwargs: Any) -> "Datastore":
        raise unsupported("Datastore.register_azure_blob_container", "register a local or S3 datastore with `cairn datastore create`")

    @staticmethod
    def register_azure_file_share(*args: Any, **kwargs: Any) -> "Datastore":
        raise unsupported("Datastore.register_azure_file_share", "register a local or S3 datastore with `cairn datastore create`")

    @staticmethod
    def register_azure_data_lake_gen2(*args: Any, **kwargs: Any) -> "Datastore":
        raise unsupported("Datastore.register_azure_data_lake_gen2", "register a local or S3 datastore with `cairn datastore create`")

    def set_as_default(self) -> None:
        raise unsupported("Datastore.set_as_default", 'the default datastore is the one named "default"')


__all__ = ["Datastore", "DataReference"]
