"""``azureml.contrib.services.aml_response``: ``AMLResponse``, from ``cairn.serving`` (the replica
worker recognises a returned response by that class, so this must not be a copy)."""

from cairn.serving import AMLResponse

__all__ = ["AMLResponse"]
