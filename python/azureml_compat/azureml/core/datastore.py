"""``azureml.core.Datastore``: Cairn's datastores already have Azure ML's upload/download API."""

from cairn.datastore import DataReference, Datastore

__all__ = ["Datastore", "DataReference"]
