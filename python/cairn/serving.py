"""What a scoring script (``score.py``) may import from Cairn inside an online-endpoint replica.

    from cairn.serving import Model, AMLRequest, AMLResponse, rawhttp

* ``Model.get_model_path(name, version=None)`` finds a deployed model's files under
  ``AZUREML_MODEL_DIR`` the way Azure ML's ``azureml.core.model.Model`` does in a container.
* ``rawhttp``, ``AMLRequest`` and ``AMLResponse`` mirror ``azureml.contrib.services.aml_request`` /
  ``aml_response`` of ``azureml-inference-server-http``: a ``run(request)`` decorated with
  ``@rawhttp`` receives the request itself and may answer with any status, headers and body.
  Azure's own imports (``from azureml.contrib.services.aml_request import AMLRequest, rawhttp``,
  ``from azureml.contrib.services.aml_response import AMLResponse``) give these same objects: the
  ``azureml`` compatibility layer re-exports them.

Model layout that ``get_model_path`` expects (Azure ML v1's; Cairn materialises a deployment's
models this way, the files read-only):

* several models: ``AZUREML_MODEL_DIR/NAME/VERSION/<files>``, one version of each model;
* one model: ``AZUREML_MODEL_DIR`` *is* ``.../NAME/VERSION`` and holds the files directly.

Resolution, for ``get_model_path(name, version)``:

1. ``AZUREML_MODEL_DIR/NAME`` is a folder: take ``VERSION`` under it (``version`` given) or the
   highest numeric version folder (``version=None``);
2. else, if ``AZUREML_MODEL_DIR`` itself ends in ``NAME/VERSION`` (``VERSION`` matching ``version``
   when given), take ``AZUREML_MODEL_DIR``;
3. in the folder found, exactly one entry (a model registered from one file or one folder) ⇒ the
   path of that entry, as Azure returns it (``Model.get_model_path('wine_model')`` →
   ``.../wine_model/1/model.pkl``). Several entries ⇒ the version folder itself (Azure raises
   "can contain only 1 file or folder" here; Cairn is lenient so multi-file models load too).

Not found ⇒ ``ModelNotFoundError`` naming the models that are there (``NAME:VERSION``). Azure's last
fallback (``./NAME`` under the current directory) is left out on purpose: a replica's answer must
not depend on its working directory.

This module is standard library only and knows nothing about sockets; the replica worker
(``cairn.replica``) does the serving.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union
from urllib.parse import parse_qsl

__all__ = ["Model", "ModelNotFoundError", "AMLRequest", "AMLResponse", "rawhttp"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")


class ModelNotFoundError(LookupError):
    """The model (or the version) asked for is not among the files materialised for this replica."""


def _listing(folder: str, limit: int = 20) -> str:
    try:
        entries = sorted(os.listdir(folder))
    except OSError as e:
        return f"<cannot list: {e.strerror}>"
    if not entries:
        return "<empty>"
    shown = ", ".join(entries[:limit])
    return shown + (f", … ({len(entries) - limit} more)" if len(entries) > limit else "")


def _deployed(root: str) -> str:
    """The models ``root`` (an ``AZUREML_MODEL_DIR``) holds, as ``NAME:VERSION``, for messages."""
    parent, leaf = os.path.split(root)
    if leaf.isdigit():
        return f"{os.path.basename(parent)}:{leaf}"
    found = []
    try:
        for name in sorted(os.listdir(root)):
            folder = os.path.join(root, name)
            if os.path.isdir(folder):
                versions = sorted(int(v) for v in os.listdir(folder) if v.isdigit())
                found += [f"{name}:{v}" for v in versions]
    except OSError as e:
        return f"<cannot list: {e.strerror}>"
    return ", ".join(found) if found else f"no NAME/VERSION folder ({_listing(root)})"


class Model:
    """The deployed-model side of Azure ML's ``Model`` class: only path resolution."""

    @staticmethod
    def get_model_path(model_name: str, version: Optional[int] = None) -> str:
        """Path of the deployed model's file or folder (see the module doc for the layout)."""
        if not isinstance(model_name, str) or not _NAME.match(model_name) or model_name in (".", ".."):
            raise ValueError(
                f"invalid model name {model_name!r}: use letters, digits, '.', '_' or '-' "
                "(no path separators)"
            )
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise ValueError(f"version should be an int, not {version!r}")
        root = os.environ.get("AZUREML_MODEL_DIR", "")
        if not root:
            raise ModelNotFoundError(
                f"model {model_name!r}: AZUREML_MODEL_DIR is not set (it is set in an endpoint replica)"
            )
        root = os.path.abspath(root)
        folder = Model._version_folder(root, model_name, version)
        entries = os.listdir(folder)
        if len(entries) == 1:
            return os.path.join(folder, entries[0])
        return folder

    @staticmethod
    def _version_folder(root: str, name: str, version: Optional[int]) -> str:
        by_name = os.path.join(root, name)
        if os.path.isdir(by_name):
            versions = sorted(int(v) for v in os.listdir(by_name) if v.isdigit())
            if version is None:
                if not versions:
                    raise ModelNotFoundError(
                        f"model {name!r}: {by_name} holds no version folder (found: {_listing(by_name)})"
                    )
                version = versions[-1]
            folder = os.path.join(by_name, str(version))
            if not os.path.isdir(folder):
                raise ModelNotFoundError(
                    f"model {name!r} has no version {version} in {by_name} "
                    f"(versions: {', '.join(map(str, versions)) or 'none'})"
                )
            return folder
        parent, leaf = os.path.split(root)
        if os.path.basename(parent) == name and leaf.isdigit() and (version is None or int(leaf) == version):
            return root
        if os.path.basename(parent) == name and leaf.isdigit():
            raise ModelNotFoundError(
                f"model {name!r} has no version {version} here: AZUREML_MODEL_DIR holds version {leaf}"
            )
        raise ModelNotFoundError(
            f"model {name!r} not found in AZUREML_MODEL_DIR={root} (models deployed here: {_deployed(root)})"
        )


_RAW_HTTP_REQUESTED = False


def rawhttp(func: Any) -> Any:
    """Marks ``run(request)`` as wanting the whole request (an ``AMLRequest``) instead of its body."""
    global _RAW_HTTP_REQUESTED
    _RAW_HTTP_REQUESTED = True
    try:
        func.__cairn_rawhttp__ = True
    except AttributeError:  # a builtin or slotted callable: the module-wide flag still says it
        pass
    return func


def wants_raw_request(func: Any) -> bool:
    """Whether the script's ``run`` was decorated with ``rawhttp`` (used by the replica worker)."""
    return bool(getattr(func, "__cairn_rawhttp__", False)) or _RAW_HTTP_REQUESTED


class _Headers:
    """Case-insensitive read-only headers, as werkzeug's ``Headers`` behaves for scripts: names
    spelled as Flask spells them (``X-Client``, from the WSGI environ), lookups in any case,
    iteration over ``(name, value)`` pairs, ``dict(request.headers)`` by name."""

    def __init__(self, items: Mapping[str, str]) -> None:
        self._items = {k.lower(): (k.title(), v) for k, v in items.items()}

    def get(self, name: str, default: Any = None, type: Any = None) -> Any:  # noqa: A002 (Flask's name)
        """The value, converted by ``type``; ``default`` when absent or when ``type`` raises."""
        item = self._items.get(name.lower())
        if item is None:
            return default
        if type is None:
            return item[1]
        try:
            return type(item[1])
        except (ValueError, TypeError):
            return default

    def getlist(self, name: str, type: Any = None) -> List[Any]:  # noqa: A002
        """``[value]`` or ``[]`` (the gateway hands over one value per name)."""
        if name not in self:
            return []
        try:
            return [self[name] if type is None else type(self[name])]
        except (ValueError, TypeError):
            return []

    def __getitem__(self, name: str) -> str:
        item = self._items.get(name.lower())
        if item is None:
            raise KeyError(name)
        return item[1]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[Tuple[str, str]]:
        return iter(list(self._items.values()))

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"

    def keys(self) -> List[str]:
        return [k for k, _ in self._items.values()]

    def values(self) -> List[str]:
        return [v for _, v in self._items.values()]

    def items(self) -> List[Tuple[str, str]]:
        return list(self._items.values())

    def to_dict(self) -> Dict[str, str]:
        return dict(self._items.values())


def _read_only(self: Any, *args: Any, **kwargs: Any) -> Any:
    raise TypeError(f"{type(self).__name__} objects are immutable")


class ImmutableMultiDict(dict):
    """Query arguments, read-only, as werkzeug's ``ImmutableMultiDict`` behaves for scripts.

    A ``dict`` of each key's *first* value, so what scripts do with Flask's ``request.args``
    works as there: ``args["a"]`` (``KeyError`` when absent), ``get``, ``in``, ``len``, iteration,
    ``keys``/``values``/``items``, ``dict(args)`` and ``json.dumps(args)`` all see first values;
    ``getlist`` and ``to_dict(flat=False)`` see every value, in query order. A dict subclass (as
    werkzeug's is) so ``isinstance(args, dict)`` and JSON encoding hold.
    """

    def __init__(self, pairs: Iterable[Tuple[str, str]] = ()) -> None:
        self._pairs: List[Tuple[str, str]] = list(pairs)
        first: Dict[str, str] = {}
        for k, v in self._pairs:
            first.setdefault(k, v)
        super().__init__(first)

    def get(self, key: str, default: Any = None, type: Any = None) -> Any:  # noqa: A002 (Flask's name)
        """First value of ``key``, converted by ``type``; ``default`` when absent or when ``type``
        raises ``ValueError``/``TypeError`` (``args.get("n", 10, type=int)``), as werkzeug does."""
        if key not in self:
            return default
        value = self[key]
        if type is None:
            return value
        try:
            return type(value)
        except (ValueError, TypeError):
            return default

    def getlist(self, key: str, type: Any = None) -> List[Any]:  # noqa: A002
        """Every value of ``key`` (``[]`` when absent); with ``type``, those it converts."""
        values = [v for k, v in self._pairs if k == key]
        if type is None:
            return values
        out = []
        for v in values:
            try:
                out.append(type(v))
            except (ValueError, TypeError):
                pass
        return out

    def items(self, multi: bool = False) -> Any:  # type: ignore[override]
        """``(key, first value)`` per key; with ``multi=True`` every pair, in query order."""
        return iter(self._pairs) if multi else super().items()

    def lists(self) -> Iterable[Tuple[str, List[str]]]:
        return iter([(k, self.getlist(k)) for k in self])

    def to_dict(self, flat: bool = True) -> Dict[str, Any]:
        """A plain ``dict``: first values, or with ``flat=False`` the list of every value."""
        return dict(self) if flat else {k: self.getlist(k) for k in self}

    def copy(self) -> Dict[str, str]:  # type: ignore[override]
        return dict(self)

    def __copy__(self) -> "ImmutableMultiDict":
        return self

    def __reduce__(self) -> Any:  # pickle/deepcopy rebuild from the pairs, not by item assignment
        return (type(self), (self._pairs,))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._pairs!r})"

    # dict's mutators work on the C level and would bypass __setitem__: refuse each.
    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only


class AMLRequest:
    """The request a ``@rawhttp`` ``run(request)`` receives: the attributes of Flask's request that
    scoring scripts use (``method``, ``path``, ``full_path``, ``args``, ``headers``, ``data``,
    ``get_data()``, ``content_type``, ``mimetype``, ``is_json``, ``json``, ``get_json()``)."""

    def __init__(self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes,
                 content_type: str = "") -> None:
        self.method = method.upper()
        self.path = path
        self.query_string = query.encode()
        self.full_path = f"{path}?{query}"
        self.args = ImmutableMultiDict(parse_qsl(query, keep_blank_values=True))
        self.headers = _Headers(headers)
        self.data = body
        self.content_type = content_type or self.headers.get("content-type", "")
        self.mimetype = self.content_type.split(";", 1)[0].strip().lower()

    @property
    def is_json(self) -> bool:
        mt = self.mimetype
        return mt == "application/json" or (mt.startswith("application/") and mt.endswith("+json"))

    # werkzeug's signatures, so positional calls mean the same (get_data(True) is cache=True, bytes).
    # The body is always in memory: ``cache`` and ``parse_form_data`` change nothing here.
    def get_data(self, cache: bool = True, as_text: bool = False,
                 parse_form_data: bool = False) -> Union[bytes, str]:
        return self.data.decode("utf-8", "replace") if as_text else self.data

    def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        """Parsed JSON body; like Flask 2.3, a wrong content type or bad JSON raises (here a
        ``ValueError``, where Flask raises its 415/400 errors) unless silent."""
        if not (force or self.is_json):
            if silent:
                return None
            raise ValueError(f"expected Content-Type application/json, got {self.content_type!r}")
        try:
            return json.loads(self.data)
        except ValueError:
            if silent:
                return None
            raise

    @property
    def json(self) -> Any:
        return self.get_json()


class AMLResponse:
    """A response with its own status and headers, returned from ``run()``.

    ``AMLResponse(message, status_code, response_headers={}, json_str=False)``: with ``json_str``
    the message is sent as JSON; otherwise a ``str``/``bytes`` message is sent as is
    (``text/html; charset=utf-8`` unless the headers say otherwise). ``None`` sends ``{}``. A
    header value with commas is sent as several values of that header, as the reference does.
    """

    def __init__(self, message: Any, status_code: int, response_headers: Optional[Mapping[str, str]] = None,
                 json_str: bool = False, run_function_failed: bool = False) -> None:
        headers = dict(response_headers or {})
        if message is None:
            body, content_type = b"{}", "application/json"
        elif json_str:
            body, content_type = json.dumps(message).encode(), "application/json"
        else:
            body = message if isinstance(message, bytes) else str(message).encode()
            content_type = "text/html; charset=utf-8"
            for k in list(headers):
                if k.lower() == "content-type":
                    content_type = headers.pop(k)
        self.status_code = int(status_code)
        self.body = body
        self.content_type = content_type
        self.headers: Dict[str, str] = {
            k: ", ".join(v.strip() for v in str(value).split(",")) for k, value in headers.items()
        }
        self.headers["x-ms-run-function-failed"] = str(bool(run_function_failed))

    # Flask's Response names, for scripts that read them back.
    @property
    def status(self) -> int:
        return self.status_code

    def get_data(self) -> bytes:
        return self.body
