"""``azureml.contrib.services.aml_request``: ``rawhttp`` and ``AMLRequest``, from ``cairn.serving``."""

from cairn.serving import AMLRequest, rawhttp

__all__ = ["AMLRequest", "rawhttp"]
