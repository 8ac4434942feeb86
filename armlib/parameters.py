"""Notebook parameters as papermill delivers them, normalised to what armlib's functions take.

``papermill -p seeds 0,1`` (without ``-y``) injects the *string* ``"0,1"``; iterating it gave the seeds
``'0'``, ``','``, ``'1'``: two runs trained, then ``seed=,`` failed with a message that never named
``seeds``. The table notebooks therefore pass their raw parameters through these functions first, which
accept every form a user can reasonably give and refuse anything else in one line naming the parameter.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

from armlib.errors import UsageError

__all__ = ["parse_seeds", "parse_jobs"]

_SEPARATORS = re.compile(r"[\s,]+")


def _int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool):  # True is an int to Python, never a seed
        raise UsageError(f"{name}: expected an integer, got {value!r}")
    if isinstance(value, str):
        value = value.strip()
        if not re.fullmatch(r"[+-]?\d+", value):
            raise UsageError(f"{name}: expected an integer, got {value!r}")
    elif not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise UsageError(f"{name}: expected an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if value < minimum:
        raise UsageError(f"{name}: expected an integer >= {minimum}, got {value}")
    return value


def parse_seeds(value, name: str = "seeds") -> list[int] | None:
    """Training seeds from a notebook parameter: None (the scale's own), an int, a list/tuple/range of ints (or
    of digit strings), or a string ``"0,1"`` / ``"0 1"`` / ``"[0, 1]"``. Returns a list of distinct
    non-negative ints in the given order, or None.

    >>> parse_seeds("0,1"), parse_seeds("[0, 1]"), parse_seeds(2), parse_seeds(None)
    ([0, 1], [0, 1], [2], None)

    Raises:
        UsageError: naming ``name`` for anything else (``"0,a"``, ``True``, ``[]``, a repeated seed).
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("", "none", "null"):
            return None
        text = text[1:-1] if text[:1] + text[-1:] in ("[]", "()") else text
        items: Iterable = [part for part in _SEPARATORS.split(text) if part]
    elif isinstance(value, (list, tuple, range)):
        items = list(value)
    else:
        items = [value]
    seeds = [_int(item, f"{name}={value!r}", 0) for item in items]
    if not seeds:
        raise UsageError(f"{name}={value!r}: expected at least one seed, or None for the scale's own")
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"{name}={value!r}: a seed is repeated; expected distinct seeds")
    return seeds


def parse_jobs(value, name: str = "jobs") -> int | None:
    """Concurrent training runs from a notebook parameter: None (the scale's default) or an int >= 1, also
    given as a string (``papermill -p jobs 2`` passes ``2``, ``-r jobs 2`` passes ``"2"``)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        return None
    return _int(value, f"{name}={value!r}", 1)
