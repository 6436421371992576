"""What the layer shares: reporting ignored Azure-only arguments once, and refusing unsupported
features by name."""

from __future__ import annotations

import sys
from typing import Any, Iterable, Set

_reported: Set[str] = set()


def ignored(where: str, names: Iterable[str], why: str = "Cairn has no Azure resources") -> None:
    """Report, once per ``where`` and argument, that Azure-only arguments are ignored."""
    fresh = [n for n in names if f"{where}:{n}" not in _reported]
    if not fresh:
        return
    _reported.update(f"{where}:{n}" for n in fresh)
    try:
        sys.stderr.write(f"azureml (Cairn): {where}: ignoring {', '.join(fresh)} ({why})\n")
    except (OSError, ValueError):
        pass


def given(**kwargs: Any) -> list:
    """The names of the arguments that were actually given (not None/False/empty)."""
    return [k for k, v in kwargs.items() if v not in (None, False, "", [], {})]


def unsupported(feature: str, hint: str = "") -> NotImplementedError:
    return NotImplementedError(
        f"{feature} is not supported by Cairn's azureml compatibility layer" + (f": {hint}" if hint else "")
    )
