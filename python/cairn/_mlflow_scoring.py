"""No-code scoring of an MLflow pyfunc model (``CAIRN_SCORING_MODE=mlflow``).

The model is loaded once from ``AZUREML_MODEL_DIR`` (the folder holding ``MLmodel``, or its only
subfolder that does). Each ``/invocations`` request is answered by MLflow's own scoring function
(``mlflow.pyfunc.scoring_server.invocations``), so the bodies, content types and errors are
exactly those of ``mlflow models serve``: JSON with one of ``dataframe_split``,
``dataframe_records``, ``instances`` or ``inputs`` (plus ``params``), or CSV; the answer is
``{"predictions": …}``; bad input is 400 with MLflow's ``{"error_code", "message"}`` body.

Only this module imports ``mlflow`` (and through it pandas): the environment of an MLflow-mode
deployment has them; script-mode replicas never pay for the import.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any

from ._scoring import Reply


def find_model_folder(root: str) -> str:
    """The folder holding ``MLmodel``: ``root`` itself or its only subfolder that has one."""
    if os.path.isfile(os.path.join(root, "MLmodel")):
        return root
    candidates = [os.path.join(root, e) for e in sorted(os.listdir(root))
                  if os.path.isfile(os.path.join(root, e, "MLmodel"))]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise FileNotFoundError(f"no MLmodel file in {root} or its subfolders (found: "
                                f"{', '.join(sorted(os.listdir(root))) or 'nothing'})")
    raise ValueError(f"several MLflow models under {root}: {', '.join(candidates)}; deploy one")


class MlflowModel:
    def __init__(self, root: str) -> None:
        self.folder = find_model_folder(root)
        self._model: Any = None
        self._schema: Any = None

    def load(self) -> None:
        import mlflow.pyfunc  # deferred: see the module doc

        self._model = mlflow.pyfunc.load_model(self.folder)
        self._schema = self._model.metadata.get_input_schema()

    def invoke(self, method: str, content_type: str, body: bytes) -> Reply:
        if method != "POST":
            return Reply(405, "application/json", {},
                         json.dumps({"error_code": "BAD_REQUEST",
                                     "message": "/invocations accepts POST only"}).encode())
        from mlflow.exceptions import MlflowException
        from mlflow.pyfunc import scoring_server

        try:
            result = scoring_server.invocations(body, content_type or "application/json", self._model,
                                                self._schema)
        except MlflowException as e:
            return Reply(e.get_http_status_code(), "application/json", {}, e.serialize_as_json().encode())
        except Exception as e:  # a failing predict(): MLflow's server also answers 500 with the message
            sys.stderr.write(f"Encountered Exception: {traceback.format_exc()}")
            sys.stderr.flush()
            body_out = {"error_code": "INTERNAL_ERROR", "message": f"{type(e).__name__}: {e}"}
            return Reply(500, "application/json", {}, json.dumps(body_out).encode())
        out = result.response
        data = out.encode() if isinstance(out, str) else bytes(out)
        return Reply(result.status, result.mimetype or "application/json", {}, data)
