"""Where things are, from one place, and atomic writes.

Relative paths given to armlib (``data_root="data"``, ``out_dir="reports"``) are relative to the
repository root, not to the current directory, so a notebook in ``notebooks/``, its nbval golden in
``tests/notebooks/`` and the CLI all mean the same folders.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
# Tracked folders that armlib itself writes (the committed reference report): rewriting them is not a change
# of the code that produced them.
TRACKED_OUTPUTS = ("reports",)


def resolve(path: str | os.PathLike) -> Path:
    """An absolute path: ``path`` itself if absolute, else relative to the repository root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


def git_revision(root: str | os.PathLike = REPO_ROOT, short: bool = True) -> str | None:
    """HEAD's commit hash (short or full), with ``+dirty`` when a tracked file outside
    :data:`TRACKED_OUTPUTS` differs from it; None outside a git checkout or without git.

    The outputs are left out of the check because regenerating the committed reference (``armlib reproduce
    --out-dir reports/quick``) rewrites tracked files: counting them stamped every fresh reference "+dirty".
    """
    excludes = [f":(exclude){folder}" for folder in TRACKED_OUTPUTS]
    try:
        head = subprocess.run(["git", "rev-parse", *(["--short"] if short else []), "HEAD"], cwd=root,
                              capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *excludes],
                                cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if status.stdout.strip() else "")


def public_mode() -> int:
    """0666 less the process umask (usually 0644): the mode ``open()`` would have given a new file."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write via a temp file in the same folder and ``os.replace``: readers never see half a file."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, public_mode())   # mkstemp creates 0600; results are for everyone who may read the folder
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
