"""The scoring-script semantics of ``azureml-inference-server-http``, without HTTP.

``UserScript`` loads ``score.py``, checks ``init``/``run``, calls ``init()`` once and turns one
request (method, query, headers, body) into one ``Reply`` (status, content type, headers, body)
exactly as the reference server's ``/score`` and ``/swagger.json`` routes do:

* undecorated ``run(raw_data)``: POST body decoded as UTF-8 (else 400) and passed as a ``str``;
  GET query arguments become a dict (values JSON-parsed when they parse, repeated keys ⇒ list)
  passed as a JSON string;
* ``run`` decorated with the ``inference_schema`` package's ``@input_schema`` (when the script's
  environment has that package): POST needs ``Content-Type: application/json`` (else 415) and a
  JSON object (else 400); each parameter of ``run`` is taken from it by name (missing and no
  default ⇒ 400 "A value is not provided for the 'x' parameter.");
* ``@rawhttp`` (``cairn.serving``): ``run(request)`` gets an ``AMLRequest``, for every method;
* a parameter named ``request_headers`` receives the request headers as a dict, keys spelled as
  Flask spells them (``X-Request-Id``), looked up regardless of case;
* the result: an ``AMLResponse`` passes through (status ≥ 500 sets ``x-ms-run-function-failed``);
  anything else is ``json.dumps``-ed with 200 (so a returned ``str`` becomes a JSON string);
* an exception in ``run()`` ⇒ 500 ``{"message": "An unexpected error occurred in scoring script.
  Check the logs for more info."}`` with the traceback on stderr; a result ``json.dumps`` cannot
  encode ⇒ 500 "An unexpected internal error occurred. Check the logs for more info.";
* OPTIONS without ``@rawhttp`` ⇒ 200 with an empty body; other methods ⇒ 405.

Left to the gateway (Rust): request ids (``x-request-id``, ``x-ms-client-request-id``, 431 when
too long), CORS, the scoring timeout and access logs. Skipped: the reference's App Insights and
model data collection, and swagger generation for ``inference_schema`` versions other than what
the package itself reports.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import sys
import time
import traceback
from types import ModuleType
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional
from urllib.parse import parse_qsl

from . import serving

RUN_FAILED = "An unexpected error occurred in scoring script. Check the logs for more info."
INTERNAL_ERROR = "An unexpected internal error occurred. Check the logs for more info."


class ScriptError(Exception):
    """The scoring script cannot be served (import failed, no init/run, bad run signature)."""


class Reply(NamedTuple):
    status: int
    content_type: str
    headers: Dict[str, str]
    body: bytes


class RequestHeaders(dict):
    """What ``run(..., request_headers)`` gets: a plain dict whose keys are spelled as the
    reference's Flask spells them (``X-Ms-Client-Request-Id``, ``Content-Type``), since that is
    what scripts written for it look up; lookups ignore case, since HTTP headers do."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        super().__init__((k.title(), v) for k, v in headers.items())

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.title() if isinstance(key, str) else key)

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.title() if isinstance(key, str) else key, default)

    def __contains__(self, key: object) -> bool:
        return super().__contains__(key.title() if isinstance(key, str) else key)


def json_reply(status: int, value: Any, headers: Optional[Dict[str, str]] = None) -> Reply:
    return Reply(status, "application/json", headers or {}, json.dumps(value).encode())


def error_reply(status: int, message: str, run_failed: Optional[bool] = None) -> Reply:
    headers = {} if run_failed is None else {"x-ms-run-function-failed": str(run_failed)}
    return json_reply(status, {"message": message}, headers)


class _BadInput(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def query_arguments(query: str) -> Dict[str, Any]:
    """``/score?a=1&b=[1,2]&c=x&c=y`` → ``{"a": 1, "b": [1, 2], "c": ["x", "y"]}``."""
    grouped: Dict[str, List[str]] = {}
    for k, v in parse_qsl(query, keep_blank_values=True):
        grouped.setdefault(k, []).append(v)
    return {k: _json_or_text(vs[0]) if len(vs) == 1 else [_json_or_text(v) for v in vs]
            for k, vs in grouped.items()}


def _schema_util() -> Optional[ModuleType]:
    """``inference_schema.schema_util`` if the script's environment has it (only then can ``run`` be
    decorated with it)."""
    if "inference_schema" not in sys.modules:
        return None
    try:
        from inference_schema import schema_util  # type: ignore[import-not-found]
    except ImportError:
        return None
    return schema_util


class UserScript:
    """One loaded ``score.py``; ``invoke`` may be called from several threads (the caller decides
    how many ``run()`` calls may overlap)."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.app_root = os.path.dirname(self.path)
        self.module: Optional[ModuleType] = None
        self._run: Callable[..., Any] = lambda *a: None
        self._init: Callable[[], Any] = lambda: None
        self._params: List[inspect.Parameter] = []
        self._mode = "string"  # "string" | "schema" | "raw"
        self._wants_headers = False

    def load(self) -> None:
        """Imports the script (its folder first on ``sys.path``) and checks ``init`` and ``run``.
        Exceptions from the script's own code propagate unchanged (traceback intact)."""
        if not os.path.isfile(self.path):
            raise ScriptError(f"scoring script {self.path} does not exist")
        if self.app_root not in sys.path:
            sys.path.insert(0, self.app_root)
        spec = importlib.util.spec_from_file_location("entry_module", self.path)
        if spec is None or spec.loader is None:
            raise ScriptError(f"cannot import {self.path} as a Python module")
        module = importlib.util.module_from_spec(spec)
        # Registered so pickle and dataclasses can find classes the script defines.
        sys.modules["entry_module"] = module
        spec.loader.exec_module(module)
        for fn in ("init", "run"):
            if not callable(getattr(module, fn, None)):
                raise ScriptError(f"scoring script {self.path} does not have a {fn}() function defined.")
        self.module = module
        run = module.run
        # Some Azure SDKs wrap the script in a "driver module"; the reference calls the inner run().
        driver = getattr(module, "driver_module", None)
        if isinstance(driver, ModuleType) and callable(getattr(driver, "run", None)):
            run = driver.run
        self._run, self._init = run, module.init
        self._analyze_run()

    def _analyze_run(self) -> None:
        params = list(inspect.signature(self._run).parameters.values())
        allowed = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        if any(p.kind not in allowed for p in params):
            raise ScriptError("run() cannot accept positional-only arguments, *args, or **kwargs.")
        self._wants_headers = any(p.name == "request_headers" for p in params)
        params = [p for p in params if p.name != "request_headers"]
        if not params:
            if self._wants_headers:
                raise ScriptError('run() needs to accept an argument other than "request_headers".')
            raise ScriptError("run() needs to accept an argument for input data.")
        self._params = params
        util = _schema_util()
        decorated = bool(util and util.is_schema_decorated(self._run))
        raw = serving.wants_raw_request(self._run)
        if raw and decorated:
            raise ScriptError("run() cannot be decorated with both @rawhttp and @input_schema")
        self._mode = "raw" if raw else "schema" if decorated else "string"

    def init(self) -> None:
        self._init()

    # -- requests -------------------------------------------------------------------------------

    def invoke(self, method: str, query: str, headers: Mapping[str, str], content_type: str,
               body: bytes) -> Reply:
        """One ``/score`` request."""
        try:
            kwargs = self._arguments(method, query, headers, content_type, body)
        except _BadInput as e:
            return error_reply(e.status, e.message, run_failed=False)
        if kwargs is None:
            if method == "OPTIONS":
                return Reply(200, "text/html; charset=utf-8", {"x-ms-run-function-failed": "False"}, b"")
            return error_reply(405, "Method not allowed", run_failed=False)
        if self._wants_headers:
            kwargs["request_headers"] = RequestHeaders(headers)
        started = time.perf_counter()
        try:
            result = self._run(**kwargs)
        except (Exception, SystemExit):
            sys.stderr.write(f"Encountered Exception: {traceback.format_exc()}")
            sys.stderr.flush()
            return error_reply(500, RUN_FAILED, run_failed=True)
        elapsed = f"{(time.perf_counter() - started) * 1000:.3f}"
        if isinstance(result, serving.AMLResponse):
            out = dict(result.headers)
            if result.status_code >= 500:
                out["x-ms-run-function-failed"] = "True"
            out["x-ms-run-fn-exec-ms"] = elapsed
            return Reply(result.status_code, result.content_type, out, result.body)
        try:
            encoded = json.dumps(result).encode()
        except (TypeError, ValueError):
            sys.stderr.write(
                f"Encountered Exception: run() returned a value json.dumps cannot encode:\n"
                f"{traceback.format_exc()}"
            )
            sys.stderr.flush()
            return error_reply(500, INTERNAL_ERROR)
        return Reply(200, "application/json",
                     {"x-ms-run-function-failed": "False", "x-ms-run-fn-exec-ms": elapsed}, encoded)

    def _arguments(self, method: str, query: str, headers: Mapping[str, str], content_type: str,
                   body: bytes) -> Optional[Dict[str, Any]]:
        """The keyword arguments of ``run()``, or None when the method is not served."""
        first = self._params[0].name
        if self._mode == "raw":
            return {first: serving.AMLRequest(method, "/score", query, headers, body, content_type)}
        if method == "GET":
            args = query_arguments(query)
            return {first: json.dumps(args)} if self._mode == "string" else self._by_name(args)
        if method != "POST":
            return None
        if self._mode == "string":
            try:
                return {first: str(body, "utf-8")}
            except UnicodeDecodeError as e:
                raise _BadInput(400, f"Input cannot be decoded as UTF-8: {e}") from None
        mimetype = content_type.split(";", 1)[0].strip().lower()
        if not (mimetype == "application/json" or (mimetype.startswith("application/")
                                                     and mimetype.endswith("+json"))):
            raise _BadInput(415, "Expects Content-Type to be application/json")
        try:
            parsed = json.loads(body)
        except ValueError as e:
            if body:
                raise _BadInput(400, f"POST body could not be decoded as JSON: {e}") from None
            raise _BadInput(400, "POST body is empty. Expecting a JSON dictionary.") from None
        if not isinstance(parsed, dict):
            raise _BadInput(400, "POST body should be a JSON dictionary.")
        return self._by_name(parsed)

    def _by_name(self, values: Mapping[str, Any]) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for p in self._params:
            value = values.get(p.name, p.default)
            if value is inspect.Parameter.empty:
                raise _BadInput(400, f"A value is not provided for the {p.name!r} parameter.")
            out[p.name] = value
        return out

    # -- swagger --------------------------------------------------------------------------------

    def swagger(self, query: str) -> Reply:
        """``GET /swagger.json?version=2|2.0|3|3.0|3.1``: the app root's own file if there is one,
        else generated (schemas from ``inference_schema`` when ``run`` uses it)."""
        version = dict(parse_qsl(query, keep_blank_values=True)).get("version", "2")
        known = {"2": "2", "2.0": "2", "3": "3", "3.0": "3", "3.1": "3.1"}
        supported = self._swagger_versions()
        if version not in known:
            return error_reply(404, f"Swagger version [{version}] is not valid. "
                                    f"Supported versions: [{', '.join(supported)}].")
        canonical = known[version]
        if canonical not in supported:
            return error_reply(404, f"Swagger version [{version}] is not supported for the scoring "
                                    f"script. Supported swagger versions: [{', '.join(supported)}].")
        user_files = {"2": ["swagger.json", "swagger2.json"], "3": ["swagger3.json"],
                      "3.1": ["swagger3.1.json"]}[canonical]
        for name in user_files:
            path = os.path.join(self.app_root, name)
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as f:
                    return Reply(200, "application/json", {}, json.dumps(json.load(f)).encode())
        util = _schema_util()
        if util and util.is_schema_decorated(self._run):
            schemas = (util.get_input_schema(self._run), util.get_output_schema(self._run))
        else:
            schemas = ({"type": "object", "example": {}}, {"type": "object", "example": {}})
        return json_reply(200, generic_swagger(canonical, *schemas))

    def _swagger_versions(self) -> List[str]:
        util = _schema_util()
        if util and util.is_schema_decorated(self._run):
            reported = set(util.get_supported_versions(self._run))
            aliases = {"2": {"2", "2.0"}, "3": {"3", "3.0"}, "3.1": {"3.1"}}
            return [v for v in ("2", "3", "3.1") if aliases[v] & reported]
        return ["2", "3", "3.1"]


def generic_swagger(version: str, service_input: Any, service_output: Any) -> Dict[str, Any]:
    """A swagger document for ``/`` (health) and ``/score``, named after ``SERVICE_NAME``,
    ``SERVICE_VERSION`` and ``SERVICE_PATH_PREFIX`` as the reference server does."""
    name = os.environ.get("SERVICE_NAME", "ML service")
    service_version = os.environ.get("SERVICE_VERSION", "1.0")
    prefix = os.environ.get("SERVICE_PATH_PREFIX", "").strip("/")
    prefix = f"/{prefix}" if prefix else ""
    error = {"type": "object", "properties": {"message": {"type": "string"}}}
    info = {"title": name, "description": f"API specification for {name}", "version": service_version}
    if version == "2":
        ref = "#/definitions/"
        doc: Dict[str, Any] = {"swagger": "2.0", "info": info, "schemes": ["https"],
                               "consumes": ["application/json"], "produces": ["application/json"],
                               "securityDefinitions": {"Bearer": {"type": "apiKey", "name": "Authorization",
                                                                  "in": "header"}},
                               "definitions": {"ServiceInput": service_input,
                                               "ServiceOutput": service_output, "ErrorResponse": error}}

        def responses(ok: str) -> Dict[str, Any]:
            return {"200": {"description": ok, "schema": {"$ref": ref + "ServiceOutput"}},
                    "default": {"description": "The service failed to execute due to an error.",
                                "schema": {"$ref": ref + "ErrorResponse"}}}

        score = {"operationId": "RunMLService", "description": "Run web service's model and get the prediction output",
                 "security": [{"Bearer": []}],
                 "parameters": [{"name": "serviceInputPayload", "in": "body", "description": "The input payload "
                                 "for executing the real-time machine learning service.",
                                 "schema": {"$ref": ref + "ServiceInput"}}],
                 "responses": responses("The service processed the input correctly and provided a result "
                                        "prediction, if applicable.")}
    else:
        ref = "#/components/schemas/"
        doc = {"openapi": "3.1.0" if version == "3.1" else "3.0.1", "info": info,
               "components": {"securitySchemes": {"Bearer": {"type": "apiKey", "name": "Authorization",
                                                             "in": "header"}},
                              "schemas": {"ServiceInput": service_input, "ServiceOutput": service_output,
                                          "ErrorResponse": error}}}

        def responses(ok: str) -> Dict[str, Any]:
            def content(schema: str) -> Dict[str, Any]:
                return {"application/json": {"schema": {"$ref": ref + schema}}}
            return {"200": {"description": ok, "content": content("ServiceOutput")},
                    "default": {"description": "The service failed to execute due to an error.",
                                "content": content("ErrorResponse")}}

        score = {"operationId": "RunMLService", "description": "Run web service's model and get the prediction output",
                 "security": [{"Bearer": []}],
                 "requestBody": {"description": "The input payload for executing the real-time machine learning "
                                 "service.", "content": {"application/json": {"schema": {"$ref": ref + "ServiceInput"}}}},
                 "responses": responses("The service processed the input correctly and provided a result "
                                        "prediction, if applicable.")}
    health = {"operationId": "ServiceHealthCheck", "description": "Simple health check endpoint to ensure the "
              "service is up at any given point.",
              "responses": {"200": {"description": "If service is up and running, this response will be returned "
                                    "with the content 'Healthy'"},
                            "default": {"description": "The service failed to execute due to an error."}}}
    doc["paths"] = {f"{prefix}/": {"get": health}, f"{prefix}/score": {"post": score}}
    return doc
