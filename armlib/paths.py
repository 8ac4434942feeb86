"""Where things are, from one place, and the one atomic, fsynced writer (:func:`atomic_write`).

Relative paths given to armlib (``data_root="data"``, ``out_dir="reports"``) are relative to the
repository root, not to the current directory, so a notebook in ``notebooks/``, its nbval golden in
``tests/notebooks/`` and the CLI all mean the same folders.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

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
    """:func:`atomic_write` of ``text`` (UTF-8)."""
    atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """:func:`atomic_write` of ``data``."""
    atomic_write(path, lambda f: f.write(data))


def replace_tree(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Make ``target`` a copy of the folder ``source``, replacing an older copy: the copy is made beside it under a
    hidden name and renamed into place, so an interrupted copy never leaves a half folder under ``target``'s name.
    Nothing happens when both name the same folder.

    Raises:
        OSError: the copy failed; ``target`` keeps its previous contents.
    """
    source, target = Path(source), Path(target)
    if target.resolve() == source.resolve():
        return
    staging = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """The one writer of every file that matters (records, checkpoints, result files, figures): ``write(f)``
    fills a temp file in the same folder, which is fsynced, renamed over ``path`` (``os.replace``) and the
    folder fsynced. Readers never see half a file, and a crash or a failed write (a full disk) leaves the
    previous file intact and no partial file under ``path``'s name; after a return the file survives a power
    cut.

    Raises:
        OSError: the write failed (e.g. no space left); the message names ``path``. The previous file is intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, public_mode())   # mkstemp creates 0600; results are for everyone who may read the folder
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and str(path) not in str(exc):
            raise OSError(exc.errno, f"could not write {path} ({exc.strerror or exc}); the previous file, if any, "
                          "is intact") from exc
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
