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

Layout: ``run.py`` is the public ``Run``; ``_records.py`` validates and encodes values;
``_batcher.py`` buffers records and sends them from a background thread (``_retry.py`` backs
off, ``_spill.py`` keeps what could not be sent in ``logs/``); ``_client.py`` is the HTTP
client; ``_online.py`` and ``_offline.py`` are the two backends of a run; ``_upload.py``
prepares files for ``upload_file``; ``_config.py`` reads the ``CAIRN_*`` variables.
"""

from ._client import CairnError, ConnectionFailed, ServerError
from ._version import __version__
from .run import Run

__all__ = ["Run", "CairnError", "ServerError", "ConnectionFailed", "__version__"]
