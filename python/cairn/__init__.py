"""Cairn's in-job Python runtime (standard library only).

The job runner puts this package on ``PYTHONPATH`` of every training job::

    from cairn import Run

    run = Run.get_context()       # the job's run, or an offline run outside a job
    run.log("rmse", 0.61)         # buffered; a background thread sends batches
    run.complete()

Set by the job runner: ``CAIRN_TRACKING_URI``, ``CAIRN_WORKSPACE``, ``CAIRN_RUN_ID``,
``CAIRN_RUN_TOKEN``, ``CAIRN_EXPERIMENT`` and ``CAIRN_RUN_MANAGED=1`` (the runner then owns the
final status, so ``complete()`` only flushes). Without ``CAIRN_RUN_ID`` the run is offline: it
prints ``[cairn offline] log rmse=0.61`` and keeps values in memory.

Tuning (seconds): ``CAIRN_LOG_FLUSH_SECONDS`` (1), ``CAIRN_LOG_RETRY_INITIAL_SECONDS`` (0.5,
doubling), ``CAIRN_LOG_RETRY_SECONDS`` (30, per batch), ``CAIRN_LOG_EXIT_TIMEOUT_SECONDS`` (30,
the at-exit flush), ``CAIRN_HTTP_TIMEOUT_SECONDS`` (10, per request). Batches the server
rejects or never takes are appended to ``logs/cairn_unsent_<run_id>.jsonl`` (one ``log-batch``
body per line, under ``"batch"``) and reported on stderr.

The same package is the client SDK (standard library only; ``pip install ./python``)::

    from cairn import Workspace, Experiment, ScriptRunConfig, Environment, LocalCluster, ComputeTarget

    ws = Workspace.from_config()                      # CAIRN_URL/TOKEN/WORKSPACE, cairn login, or the local server
    ds = ws.get_default_datastore()
    ds.upload("winedata", target_path="winedata", overwrite=True)
    cluster = ComputeTarget.create(ws, "cpucluster", LocalCluster.provisioning_configuration(max_nodes=2))
    env = Environment("wine-env", pip_packages=["scikit-learn", "pandas"]).register(ws)
    config = ScriptRunConfig("winecode", script="train.py", arguments=["--data-folder", ds.as_mount()],
                             compute_target=cluster, environment=env)
    run = Experiment(ws, "wine_expt").submit(config)
    run.wait_for_completion(show_output=True)
    print(run.get_metrics())

SDK modules: ``workspace.py`` (connection rules), ``datastore.py``, ``compute.py``,
``environment.py`` (with ``_conda.py``), ``experiment.py`` (ScriptRunConfig, SubmittedRun,
snapshots), ``model.py`` (registered models), ``webservice.py`` (deployed services) and ``errors.py``. They are imported on first use, so the runtime stays light.

Layout of the runtime: ``run.py`` is the public ``Run``; ``_records.py`` validates and encodes values;
``_batcher.py`` buffers records and sends them from a background thread (``_retry.py`` backs
off, ``_spill.py`` keeps what could not be sent in ``logs/``); ``_client.py`` is the HTTP
client; ``_online.py`` and ``_offline.py`` are the two backends of a run; ``_upload.py``
prepares files for ``upload_file``; ``_config.py`` reads the ``CAIRN_*`` variables.
"""

from typing import Any

from ._client import CairnError, ConnectionFailed, ServerError
from ._version import __version__
from .run import Run

#: SDK names, imported from their module on first use (PEP 562).
_SDK = {
    "Workspace": "workspace",
    "Datastore": "datastore",
    "DataReference": "datastore",
    "ComputeTarget": "compute",
    "LocalCluster": "compute",
    "ProvisioningConfiguration": "compute",
    "Environment": "environment",
    "Experiment": "experiment",
    "ScriptRunConfig": "experiment",
    "SubmittedRun": "experiment",
    "Model": "model",
    "InferenceConfig": "webservice",
    "DeploymentConfiguration": "webservice",
    "Webservice": "webservice",
    "DeploymentFailed": "webservice",
    "UpdateFailed": "webservice",
    "ScoringError": "webservice",
    "BadRequest": "errors",
    "Conflict": "errors",
    "Forbidden": "errors",
    "NotFound": "errors",
    "RunFailed": "errors",
    "ServerUnreachable": "errors",
    "Unauthorized": "errors",
}


def __getattr__(name: str) -> Any:
    module = _SDK.get(name)
    if module is None:
        raise AttributeError(f"module 'cairn' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = ["Run", "CairnError", "ServerError", "ConnectionFailed", "__version__", *_SDK]
