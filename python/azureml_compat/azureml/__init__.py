"""Cairn's Azure ML v1 compatibility layer: the ``azureml.*`` names that v1 scripts use, mapped onto
the ``cairn`` SDK (standard library only).

Azure-only arguments (subscription, resource group, location, tenant, VM priority …) are
accepted and reported once, on stderr, as ignored; what Cairn does not support raises
``NotImplementedError`` naming the feature. Inside Cairn jobs this package is on ``PYTHONPATH``
next to the ``cairn`` runtime, so ``from azureml.core import Run`` works unchanged.
"""
