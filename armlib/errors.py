"""Mistakes a user can make, and the checks that catch them before anything is written.

:class:`UsageError` is the one exception armlib raises for something the user gave wrong (a path, a
setting, a dataset): ``armlib`` (:func:`armlib.cli.main`) prints its message as one line on stderr and
exits with status 2, with the traceback only under ``--debug``. It subclasses ``ValueError`` so that
code catching ``ValueError`` around a config (and tests written that way) still does.

The checks here run first, so a refused command leaves no folder or file behind:

* :func:`check_out_folder` — an output path that is an existing file, or in a folder nothing can be written to;
* :func:`check_writable` — a folder nothing can be written to (read-only, no permission);
* :func:`check_device` — ``device=cuda`` on a machine without a CUDA GPU;
* :func:`check_report_dir` — ``armlib report --out-dir`` naming a folder without result files;
* :func:`armlib.data.checks.check_run_inputs` combines these with the dataset check (the trainer's first call).
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path

__all__ = ["UsageError", "USER_ERRORS", "check_out_folder", "check_writable", "check_device", "check_report_dir",
           "nearest"]


class UsageError(ValueError):
    """Something the user gave is wrong; the message names it and says what was expected, in one line."""


# What `armlib` reports as one line: UsageError, and the OSErrors armlib raises itself about a path the user
# gave (a missing dataset folder names its expected layout; an out folder holding a run says --resume).
USER_ERRORS = (UsageError, FileNotFoundError, FileExistsError)


def nearest(name: str, choices) -> str | None:
    """The valid choice a user most likely meant by ``name``, or None.

    difflib alone misses abbreviations of compound names (``lr`` vs ``base_lr``: similarity 0.44), so a choice
    with ``name`` as one of its ``_``-separated words comes first, then difflib's closest match.
    """
    choices = [str(c) for c in choices]
    words = [c for c in choices if name.lower() in c.lower().split("_")]
    if words:
        return min(words, key=len)
    close = difflib.get_close_matches(name, choices, n=1)
    return close[0] if close else None


def check_out_folder(path: str | os.PathLike, what: str = "--out") -> Path:
    """``path`` as a Path; ``UsageError`` when it exists and is not a folder (``what`` names the option)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{what} {path} is an existing file; expected a folder (new, or one armlib wrote)")
    for parent in path.parents:  # mkdir(parents=True) would fail deep inside with a bare errno
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{what} {path}: {parent} is a file; expected a folder")
            break
    return check_writable(path, what)


def check_writable(path: str | os.PathLike, what: str = "--out") -> Path:
    """``path`` as a Path; ``UsageError`` unless a file can be created in it (or, when it does not exist yet, in
    its nearest existing parent). Probed by creating and removing a temp file: permission bits say nothing for
    root or on a read-only mount, and a failure after training (the record, the report's last file) lost the
    work."""
    import tempfile

    path = Path(path)
    folder = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".armlib-write-probe-"):
            pass
    except OSError as exc:
        raise UsageError(f"{what} {path}: cannot write in {folder} ({exc.strerror or exc}); choose a writable "
                         "folder") from None
    return path


def check_device(device: str, cuda_available: bool | None = None) -> None:
    """``UsageError`` for ``device="cuda"`` when CUDA is not available (``cuda_available`` for tests)."""
    if device != "cuda":
        return
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    if not cuda_available:
        raise UsageError("device='cuda' but no CUDA GPU is available here (torch.cuda.is_available() is False); "
                         "use device=cpu, or device=auto (cuda when there is one)")


def check_report_dir(out_dir: str | os.PathLike, what: str = "--out-dir") -> Path:
    """The resolved report folder; ``UsageError`` unless it holds result files (``results/*.csv|json``).

    Rendering a folder without them wrote an empty report silently, which is what a typo in ``--out-dir``
    produced; the message suggests the closest existing sibling folder.
    """
    from armlib.paths import resolve

    folder = resolve(out_dir)
    results = folder / "results"
    if results.is_dir() and any(p.suffix in (".csv", ".json") for p in results.iterdir()):
        return folder
    hint = ""
    if folder.parent.is_dir():
        siblings = [p.name for p in folder.parent.iterdir() if (p / "results").is_dir()]
        close = difflib.get_close_matches(folder.name, siblings, n=1)
        hint = f" (did you mean {folder.parent / close[0]}?)" if close else ""
    state = "does not exist" if not folder.exists() else "holds no results/*.csv or results/*.json"
    raise UsageError(f"{what} {out_dir}: {folder} {state}; expected the folder a reproduction wrote "
                     f"(armlib reproduce --out-dir){hint}")
