"""No-code scoring of an MLflow pyfunc model (``CAIRN_SCORING_MODE=mlflow``).

The model is loaded once from ``AZUREML_MODEL_DIR`` (the folder holding ``MLmodel``, or its only
subfolder that does). Each ``/invocations`` request is answered by MLflow's own scoring function
(``mlflow.pyfunc.scoring_server.invocations``), so the bodies, content types and errors are
exactly those of ``mlflow models serve``: JSON with one of ``dataframe_split``,
``dataframe_records``, ``instances`` or ``inputs`` (plus ``params``), or CSV; the answer is
``{"predictions": …}``; bad input is 400 with MLflow's ``{"error_code", "message"}`` body.

``infer`` answers the Open Inference Protocol v2 (the gateway's ``/v2/models/…/infer``, route
``/v2/infer`` here). The gateway has already checked the request against the model's signature
(``cairn_core::inference``), so this only converts: each input's ``data`` (flat or nested,
row-major) becomes a numpy array of its datatype and shape; a column-based signature gets a
DataFrame of the named 1-D tensors (in the signature's order), a tensor-based one the single array
(or a dict of named arrays). The prediction becomes ``{"outputs": [{name, datatype, shape, data}]}``:
an array is one tensor (named by the output signature, else ``output-0``), a DataFrame one tensor
per column, a dict one per key. Request ``parameters`` reach ``predict(params=…)`` only when the
model declares a params schema. Errors are ``{"error": …}``.

Only this module imports ``mlflow`` (and through it pandas): the environment of an MLflow-mode
deployment has them; script-mode replicas never pay for the import.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any

from ._scoring import Reply, json_reply

# Open Inference Protocol datatypes as numpy dtypes.
_NUMPY = {"BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
          "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64", "FP16": "float16",
          "FP32": "float32", "FP64": "float64", "BYTES": "object"}


def _oip_error(status: int, message: str) -> Reply:
    return json_reply(status, {"error": message})


def _flatten(data: Any, out: list) -> list:
    if isinstance(data, list):
        for item in data:
            _flatten(item, out)
    else:
        out.append(data)
    return out


def _array(tensor: Any) -> Any:
    """One request tensor as a numpy array of its datatype and shape."""
    import numpy as np

    flat = _flatten(tensor["data"], [])
    return np.array(flat, dtype=_NUMPY[tensor["datatype"]]).reshape(tensor["shape"])


def _datatype(dtype: Any) -> str:
    bits = dtype.itemsize * 8
    return {"b": "BOOL", "i": f"INT{bits}", "u": f"UINT{bits}", "f": f"FP{bits}"}.get(dtype.kind, "BYTES")


def _tensor(name: str, value: Any) -> dict:
    import numpy as np

    arr = np.asarray(value)
    datatype = _datatype(arr.dtype)
    flat = arr.reshape(-1)
    if datatype == "BYTES":
        data = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat]
    else:
        data = flat.tolist()
        if datatype.startswith("FP"):  # JSON has no NaN: null marks a missing value
            data = [None if v != v else v for v in data]
    return {"name": name, "datatype": datatype, "shape": list(arr.shape), "data": data}


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
        self._outputs = self._model.metadata.get_output_schema()
        self._params = self._model.metadata.get_params_schema()

    def _model_input(self, inputs: list) -> Any:
        arrays = {t["name"]: _array(t) for t in inputs}
        schema = self._schema
        if schema is not None and not schema.is_tensor_spec():
            import pandas as pd

            if schema.has_input_names():
                order = [n for n in schema.input_names() if n in arrays]
                return pd.DataFrame({n: arrays[n] for n in order})
            # Unnamed columns (input-N) go by position.
            return pd.DataFrame({i: arrays[f"input-{i}"] for i in range(len(arrays))})
        if len(arrays) == 1 and (schema is None or not schema.has_input_names()):
            return next(iter(arrays.values()))
        return arrays

    def _output_names(self) -> list:
        if self._outputs is not None and self._outputs.has_input_names():
            return list(self._outputs.input_names())
        return []

    def infer(self, body: bytes) -> Reply:
        try:
            req = json.loads(body)
            model_input = self._model_input(req["inputs"])
        except (ValueError, KeyError, TypeError) as e:
            return _oip_error(400, f"cannot convert the inputs: {type(e).__name__}: {e}")
        kwargs = {}
        if self._params is not None and isinstance(req.get("parameters"), dict):
            kwargs["params"] = req["parameters"]
        from mlflow.exceptions import MlflowException

        try:
            result = self._model.predict(model_input, **kwargs)
        except MlflowException as e:
            return _oip_error(e.get_http_status_code(), e.message)
        except Exception as e:  # a failing predict(): the message, and the traceback in the log
            sys.stderr.write(f"Encountered Exception: {traceback.format_exc()}")
            sys.stderr.flush()
            return _oip_error(500, f"{type(e).__name__}: {e}")
        names = self._output_names()
        try:
            import pandas as pd

            if isinstance(result, pd.DataFrame):
                outputs = [_tensor(c if isinstance(c, str) else f"output-{i}", result[c].to_numpy())
                           for i, c in enumerate(result.columns)]
            elif isinstance(result, dict):
                outputs = [_tensor(str(k), v) for k, v in result.items()]
            else:
                if isinstance(result, pd.Series):
                    result = result.to_numpy()
                outputs = [_tensor(names[0] if names else "output-0", result)]
        except (ValueError, TypeError) as e:
            return _oip_error(500, f"the prediction has no tensor form: {type(e).__name__}: {e}")
        return json_reply(200, {"outputs": outputs})

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
