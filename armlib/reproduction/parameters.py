"""Notebook parameters as papermill delivers them, normalised to what armlib's functions take.

``papermill -p seeds 0,1`` (without ``-y``) injects the *string* ``"0,1"``; iterating it gave the seeds
``'0'``, ``','``, ``'1'``: two runs trained, then ``seed=,`` failed with a message that never named
``seeds``. The table notebooks therefore pass their raw parameters through these functions first, which
accept every form a user can reasonably give and refuse anything else in one line naming the parameter.
"""
from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable

from armlib.errors import UsageError

__all__ = ["parse_seeds", "parse_jobs", "check_notebook"]

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


# Names IPython puts in every kernel's namespace; everything else of a plain data type that is not declared in the
# parameters cell came from papermill's injected cell: a misspelt parameter.
_KERNEL_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "open"})
_DATA = (str, int, float, bool, list, tuple, dict, type(None), os.PathLike)
DEVICES = ("auto", "cpu", "cuda")
_CHECKED = "_armlib_parameters_checked"   # set in the namespace by the first check_notebook


def _text(value, name: str, choices: tuple[str, ...] = ()) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{name}: expected a non-empty string{' (a folder)' if not choices else ''}, got {value!r}"
                         f" ({type(value).__name__})")
    if choices and value not in choices:
        raise UsageError(f"{name}: expected one of {list(choices)}, got {value!r}")
    return value


def _fraction(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise UsageError(f"{name}: expected a number in [0, 1], got {value!r} ({type(value).__name__})")
    return float(value)


# How each parameter of the notebooks is checked and normalised, by name.
CHECKS = {
    "scale": lambda v: _text(v, "scale"),
    "seeds": parse_seeds,
    "jobs": parse_jobs,
    "seed": lambda v: _int(v, f"seed={v!r}", 0),
    "device": lambda v: _text(v, "device", DEVICES),
    "data_root": lambda v: _text(v, "data_root"),
    "out_dir": lambda v: _text(v, "out_dir"),
    "runs_dir": lambda v: _text(v, "runs_dir"),
    "noise": lambda v: _fraction(v, "noise"),
}


def check_notebook(namespace: dict) -> dict:
    """Check a notebook's parameters where papermill left them: its kernel namespace (``globals()``), right after
    the parameters cell and papermill's injected cell. Returns the parameters, normalised (``seeds="0,1"`` →
    ``[0, 1]``, ``jobs="2"`` → ``2``, a path → str), and writes them back into ``namespace`` so that the cells
    below pass checked values.

    The parameters are the names the parameters cell declares with an annotation (``scale: str = "quick"``,
    collected by Python in ``namespace["__annotations__"]``). Papermill only warns about a name the notebook does
    not declare and runs on at the default: here such a name is refused, with the closest declared one, at the
    first call in a kernel only (a setup cell rerun by hand in JupyterLab finds the names later cells defined).

    Raises:
        UsageError: one line naming the parameter: an undeclared name (``sclae``), or a value of the wrong type
            or outside its choices (:data:`CHECKS`).
    """
    declared = dict(namespace.get("__annotations__", {}))
    # Papermill injects its cell once, before the first check; a later call is a cell rerun by hand, when the
    # cells below have defined plain-data names of their own (a dict of results, a float): not parameters.
    first_call = not namespace.get(_CHECKED, False)
    unknown = [name for name, value in namespace.items()
               if first_call and not name.startswith("_") and name not in declared and name not in _KERNEL_NAMES
               and isinstance(value, _DATA)]
    if unknown:
        hints = [f"{n!r}" + (f" (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(n, declared, 1))
                             else "") for n in unknown]
        raise UsageError(f"unknown notebook parameter {', '.join(hints)}; this notebook takes "
                         f"{', '.join(declared)}")
    checked = {name: CHECKS[name](namespace[name]) if name in CHECKS else namespace[name]
               for name in declared if name in namespace}
    namespace.update(checked)
    namespace[_CHECKED] = True
    return checked
