"""What one logged value looks like, how it is validated and how it is put on the wire.

Validation happens here, in the script's own thread, so that a mistake (a string passed as
a metric, an over-long key) raises where it was made instead of failing a whole batch on
the server later. Nothing in this module does I/O.
"""

from __future__ import annotations

import math
import numbers
import operator
import time
import unicodedata
from typing import Any, Dict, NamedTuple, Union

#: Longest metric, param or tag key the server accepts (characters).
MAX_KEY_LENGTH = 250
#: Longest param value the server accepts (UTF-8 bytes).
MAX_PARAM_VALUE_BYTES = 6000

_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


class Metric(NamedTuple):
    """One point of a metric series."""

    key: str
    value: float
    step: int
    timestamp: int  # milliseconds since the Unix epoch


class Param(NamedTuple):
    """A run parameter (hyper-parameter); values are strings."""

    key: str
    value: str


class Tag(NamedTuple):
    """A run tag; values are strings."""

    key: str
    value: str


Record = Union[Metric, Param, Tag]


def now_ms() -> int:
    """The current time in milliseconds since the Unix epoch, as the server stores it."""
    return int(time.time() * 1000)


def check_key(key: Any, what: str = "metric name") -> str:
    """Return ``key`` if it is a usable key, else raise ``TypeError``/``ValueError`` naming the rule."""
    if not isinstance(key, str):
        raise TypeError(f"{what} must be a string, not {type(key).__name__} ({key!r})")
    if key == "":
        raise ValueError(f"{what} must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(
            f"{what} {key[:40]!r}... is {len(key)} characters long; the limit is {MAX_KEY_LENGTH}"
        )
    if any(unicodedata.category(c) == "Cc" for c in key):
        raise ValueError(f"{what} {key!r} contains control characters (newlines, tabs …)")
    return key


def check_param_value(key: str, value: str) -> str:
    """Return ``value`` if the server will store it as a param, else raise ``ValueError``."""
    size = len(value.encode("utf-8"))
    if size > MAX_PARAM_VALUE_BYTES:
        raise ValueError(
            f"param {key!r} is {size} bytes long; the limit is {MAX_PARAM_VALUE_BYTES} "
            "(store long text as a file with upload_file())"
        )
    return value


def to_metric_value(name: str, value: Any) -> float:
    """Coerce a metric value to ``float`` or raise ``TypeError`` with a message naming the metric.

    Accepted: ``int``, ``float``, ``bool`` and anything else ``float()`` understands that is not
    text (numpy scalars, 0-d arrays, one-element tensors, ``Decimal``, ``Fraction``). NaN and
    infinities are valid values.
    """
    if isinstance(value, (str, bytes, bytearray)) or value is None or isinstance(value, complex):
        raise TypeError(_not_numeric(name, value))
    if isinstance(value, numbers.Real):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(_not_numeric(name, value)) from None


def _not_numeric(name: str, value: Any) -> str:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return (
        f"metric {name!r}: value {shown} of type {type(value).__name__} is not numeric; "
        "log numbers (int, float, bool, numpy scalars), or use set_tags()/log_param() for text"
    )


def to_step(name: str, step: Any) -> int:
    """Return ``step`` as an ``int`` (numpy integers allowed) or raise ``TypeError``."""
    if isinstance(step, bool):
        raise TypeError(f"metric {name!r}: step must be an integer, not bool")
    try:
        return operator.index(step)
    except TypeError:
        raise TypeError(
            f"metric {name!r}: step must be an integer, not {type(step).__name__} ({step!r})"
        ) from None


def to_text(value: Any) -> str:
    """Params and tags are strings on the server; ``None`` becomes the empty string."""
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def encode_value(value: float) -> Union[float, str]:
    """JSON has no literal for NaN or infinities: the server takes them as these strings."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def decode_value(value: Any) -> Any:
    """Inverse of :func:`encode_value` for values read back from the server."""
    if isinstance(value, str) and value in _NON_FINITE:
        return _NON_FINITE[value]
    return value


def metric_json(metric: Metric) -> Dict[str, Any]:
    """The wire form of one metric in a ``log-batch`` body."""
    return {
        "key": metric.key,
        "value": encode_value(metric.value),
        "step": metric.step,
        "timestamp": metric.timestamp,
    }
