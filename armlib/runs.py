"""Run folders: the files a training run writes, provenance, and the store that keys a run by its content.

A run folder holds ``checkpoint.pt`` (the latest), ``record.json`` (the result), ``log.csv`` and ``curves.csv``
(written by :mod:`armlib.train`). :func:`run_key` names a run by a hash of everything that can change its
result, so a changed config or trainer trains a new run and an unchanged one is reused (the store of
``armlib reproduce``).
"""
from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import math
import os
import pickle
import platform
import resource
import socket
import sys
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path

import torch

from armlib.config import RUNTIME_ONLY
from armlib.errors import UsageError
from armlib.paths import atomic_write, atomic_write_text

CHECKPOINT, RECORD, LOG, CURVES = "checkpoint.pt", "record.json", "log.csv", "curves.csv"

# Bumped whenever the code that turns a config into a result changes (trainer, losses, ARM, models, data
# generator): a run trained by older code then no longer matches its key and is retrained. tests/test_runs.py
# fingerprints those sources and fails until this number (and the fingerprint there) is updated.
TRAINING_CODE_VERSION = 2

# Fields added to TrainConfig after runs were committed, each with the default that reproduces the committed
# behaviour bit for bit. At that default a field is left out of the key, so adding an opt-in field keeps every
# committed run (and its checkpoint) valid; set to anything else it enters the key like any other field.
# tests/test_gpu_session.py checks that every committed gpu record still maps to its folder's key.
OPT_IN_FIELDS: dict[str, object] = {"plan": "", "data_on_device": False, "cpu_channels_last": False,
                                     "cpu_fused_sgd": False, "matmul_resize": False, "cpu_float64": False}

# -- run statuses --------------------------------------------------------------------------------------------
# A run either learned something ("ok") or ended with one of the FAILED statuses (status: why). A failed run is a
# result, not an error: it stays in every table, marked, takes the metric's worst value in every comparison
# (README, "How a verdict is made"; armlib.reproduction.stats), and is never analysed as if it were fine (armlib.reproduction.analysis.load_run
# refuses it). A new such status is one entry.
STATUS_OK = "ok"
FAILED_STATUSES: dict[str, str] = {
    "diverged": "the loss stopped being a finite number",
    "exploded": "the loss exceeded the bound fixed before training (LOSS_BOUND_FACTOR × the first logged loss)",
    "no_labels": "the training set holds no labelled pixel: nothing to learn",
}
STATUSES = (STATUS_OK, *FAILED_STATUSES)

# The explosion bound, fixed before any committed run was looked at (issue 20): a run whose logged loss (the
# mean over a log window, as in log.csv) exceeds 100 × its first logged loss has left every regime in which a
# segmentation model learns. Why 100: at initialisation the loss is about ln C (3 for 19 classes) and training
# only lowers it; a spike to twice or ten times that happens in healthy runs with a high lr, while 100× means
# logits two orders of magnitude larger than at the start (issue 20's base_lr=1e3 run logged 6e15).
LOSS_BOUND_FACTOR = 100.0


def is_failed(status: str | None) -> bool:
    """True for a run that learned nothing (:data:`FAILED_STATUSES`): the one test the statistics, tables and
    analysis use, so a new failed status is counted everywhere at once. ``None`` (no status) counts as "ok"."""
    return status in FAILED_STATUSES


def loss_failure(losses) -> tuple[str, str] | None:
    """Apply the failure rule to a run's logged losses, in order (``log.csv``'s ``loss`` column; empty strings
    and None are non-finite): ("diverged", why) at the first non-finite one, ("exploded", why) at the first
    above :data:`LOSS_BOUND_FACTOR` × the first; None when the run passes. A first loss of 0 (nothing
    labelled) sets no bound."""
    first = None
    for i, value in enumerate(losses):
        x = math.nan if value in (None, "") else float(value)
        if not math.isfinite(x):
            return "diverged", f"logged loss {i + 1} is {x}"
        if first is None:
            first = x
        elif first > 0 and x > LOSS_BOUND_FACTOR * first:
            return "exploded", (f"logged loss {i + 1} is {x:.6g} > {LOSS_BOUND_FACTOR:g} × the first logged loss "
                                f"({first:.6g})")
    return None


class RunFailed(Exception):
    """Training ended without learning (``status`` in :data:`FAILED_STATUSES`); the trainer has written a record
    saying so (:func:`write_failed_record`) before raising."""

    def __init__(self, status: str, message: str):
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


class DamagedRecord(UsageError):
    """A ``record.json`` that cannot be read or holds an unknown status."""


def write_failed_record(out_dir: str | os.PathLike, status: str, message: str, **fields) -> dict:
    """Write ``record.json`` for a run that learned nothing: ``status``, NaN metrics, the message, ``fields``
    (seed, config or spec...). Returns the record."""
    if status not in FAILED_STATUSES:
        raise ValueError(f"status must be one of {list(FAILED_STATUSES)}, got {status!r}")
    record = {"status": status, **fields, "metrics": {"aAcc": math.nan, "mAcc": math.nan, "mIoU": math.nan},
              "message": message}
    atomic_write_text(Path(out_dir) / RECORD, json.dumps(record, indent=1))
    return record


def run_key(config: dict, length: int = 10) -> str:
    """Hex digest naming a run by content: the resolved config (``TrainConfig.to_dict()``, seed included)
    less :data:`armlib.config.RUNTIME_ONLY` and the :data:`OPT_IN_FIELDS` at their default, and
    :data:`TRAINING_CODE_VERSION`.

    ``data_root`` is left out for synthetic data (the generator's settings, which are in the config, fix the
    data wherever it lies) and kept for real datasets (another folder may hold another copy).
    """
    fields = {k: v for k, v in config.items() if k not in RUNTIME_ONLY and k != "data_root"
              and not (k in OPT_IN_FIELDS and v == OPT_IN_FIELDS[k])}
    if config.get("dataset", "synth") != "synth":
        fields["data_root"] = str(config.get("data_root"))
    blob = json.dumps({"config": fields, "code": TRAINING_CODE_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


# -- one writer per folder -------------------------------------------------------------------------------------

LOCK_NAME = ".lock"
_HELD_LOCKS = "ARMLIB_HELD_RUNS_LOCKS"   # lock files an ancestor process holds (os.pathsep-separated)


class RunsFolderBusy(RuntimeError):
    """Another process (an ``armlib reproduce`` or ``armlib train``) holds the folder's lock."""


@contextmanager
def runs_lock(folder: str | Path, shared: bool = False):
    """Hold ``<folder>/.lock`` (a ``flock``, exclusive unless ``shared``) for the duration; reentrant in a process
    and its children.

    ``armlib reproduce`` holds its runs folder exclusively; ``armlib train`` (:func:`run_folder_lock`) holds the
    runs folder above its run folder shared, so a training beside a reproduction of the same runs folder is
    refused while trainings into sibling folders run side by side.

    The OS drops a ``flock`` when its holder dies, however it dies (SIGKILL, OOM, a crashed node), so a lock
    never goes stale and needs no cleaning by hand; a PID file could not tell a dead holder from a live one
    (PIDs are reused, and a PID means nothing on another host sharing the folder).

    Raises:
        RunsFolderBusy: the lock is held by another process; the message names it.
    """
    with _flock(Path(folder) / LOCK_NAME, Path(folder), shared):
        yield


@contextmanager
def run_folder_lock(out_dir: str | Path):
    """What ``armlib train`` holds while it writes ``out_dir``: the runs folder's lock (``out_dir/../.lock``, the one
    ``armlib reproduce`` takes) shared, and ``out_dir/../.<name>.lock`` exclusively: a second writer into the same
    run folder is refused. The lock file lies beside the run folder, not in it, so the folder holds only the run's
    files. See :func:`runs_lock`."""
    out_dir = Path(out_dir)
    with runs_lock(out_dir.parent, shared=True), _flock(out_dir.parent / f".{out_dir.name}.lock", out_dir):
        yield


@contextmanager
def _flock(path: Path, what: Path, shared: bool = False):
    """Hold a ``flock`` on ``path`` (``what``: the folder it guards, for the message); see :func:`runs_lock`."""
    held = [p for p in os.environ.get(_HELD_LOCKS, "").split(os.pathsep) if p]
    if str(path) in held:   # our own reproduce: its notebook kernels and training processes lock again
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")
    try:
        fcntl.flock(f, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise RunsFolderBusy(f"{what} is in use by {holder}; wait for it to end, or pass another folder "
                             "(--out / --runs-dir)") from None
    try:
        if not shared:   # shared holders leave the file alone: it names the last exclusive one
            f.truncate(0)
            f.write(f"armlib pid {os.getpid()} on {socket.gethostname()} since "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            f.flush()
        os.environ[_HELD_LOCKS] = os.pathsep.join(held + [str(path)])
        yield
    finally:
        os.environ[_HELD_LOCKS] = os.pathsep.join(held)
        if not held:
            del os.environ[_HELD_LOCKS]
        f.close()   # releases the flock


def versions() -> dict[str, str]:
    """Versions of every package that computes a number in a record or the report."""
    import numpy
    import pandas
    import scipy
    import torchvision

    out = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
           "numpy": numpy.__version__, "scipy": scipy.__version__, "pandas": pandas.__version__}
    if torch.version.cuda:
        out["cuda"] = torch.version.cuda
    return out


def hardware() -> str:
    """"CPU <model>, N cores" or "<GPU name> ×N"."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} ×{torch.cuda.device_count()}"
    return f"CPU {cpu_name()}, {os.cpu_count()} cores"


def read_record(run_dir: str | os.PathLike) -> dict:
    """A run's ``record.json``, checked: JSON with a known ``status`` (missing: "ok", as in early records).

    Raises:
        FileNotFoundError: naming the folder when the run has not finished.
        DamagedRecord: the file is not JSON or its status is unknown; the message says to delete it to retrain.
    """
    path = Path(run_dir) / RECORD
    if not path.exists():
        raise FileNotFoundError(f"{path}: no record (the run has not finished)")
    try:
        record = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise DamagedRecord(f"{path}: damaged record (not JSON: {exc}); delete it and rerun: the run resumes from "
                            "its checkpoint, or retrains") from None
    if not isinstance(record, dict) or record.get("status", STATUS_OK) not in STATUSES:
        status = record.get("status") if isinstance(record, dict) else type(record).__name__
        raise DamagedRecord(f"{path}: damaged record (status {status!r}; expected one of {list(STATUSES)}); delete "
                            "it and rerun: the run resumes from its checkpoint, or retrains")
    return record


def atomic_torch_save(obj, path: Path) -> None:
    """``torch.save`` through :func:`armlib.paths.atomic_write`: a crash or a failed write leaves the previous
    file intact and no partial file under ``path``'s name.

    Raises:
        OSError: the write failed (a full disk gives torch's "unexpected pos" error); one line naming ``path``
            and the way out.
    """
    path = Path(path)
    try:
        atomic_write(path, lambda f: torch.save(obj, f))
    except RuntimeError as exc:   # torch's zip writer reports a failed write (ENOSPC) as a RuntimeError
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise OSError(f"could not write {path} ({first}); free space on that disk (the previous checkpoint, if "
                      "any, is intact) and rerun with --resume") from exc


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, hex (ties a record to the checkpoint it was computed from)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class CorruptCheckpoint(UsageError):
    """A checkpoint file that cannot be read (zero bytes, truncated, not torch's format)."""


def read_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """A checkpoint written by :func:`atomic_torch_save` (``weights_only``: nothing but tensors and plain data).

    Raises:
        FileNotFoundError: no file at ``path``.
        CorruptCheckpoint: the file is unreadable (a disk that filled up, a kill during a copy); one line naming
            it and the way out: delete it to retrain the run (``armlib reproduce`` sets it aside and retrains by
            itself), or restore a good copy.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except PermissionError:
        raise
    except (EOFError, OSError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, KeyError,
            AttributeError) as exc:   # torch names none of them after the file; a truncated zip is EINVAL
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise CorruptCheckpoint(
            f"{path}: unreadable checkpoint ({path.stat().st_size} bytes; {type(exc).__name__}: {first}); delete it "
            "to retrain this run from the start (armlib reproduce sets it aside and retrains by itself), or restore "
            "a good copy") from exc
    if not isinstance(ckpt, dict) or not {"model", "iteration", "config"} <= set(ckpt):
        raise CorruptCheckpoint(f"{path}: not an armlib checkpoint (expected the keys model, iteration, config); "
                                "delete it to retrain this run from the start")
    return ckpt


def _json_safe(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None  # strict JSON has no NaN: an absent class's IoU is null
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (platform.processor() is often empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _peak_memory(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"peak_memory_bytes": int(torch.cuda.max_memory_allocated(device)),
                "peak_memory_kind": "cuda_max_allocated"}
    # ru_maxrss is in KiB on Linux, bytes on macOS
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return {"peak_memory_bytes": int(rss), "peak_memory_kind": "cpu_max_rss"}


def _truncate_csv(path: Path, last_iteration: int) -> None:
    """Drop rows logged after ``last_iteration`` (written before a crash, redone after resume)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= last_iteration]
    if len(kept) != len(rows):
        buffer = io.StringIO()
        csv.writer(buffer).writerows(kept)
        atomic_write_text(path, buffer.getvalue())


class _CsvLog:
    """Append-only CSV on rank 0 (header on creation; flushed each row so a crash loses nothing logged)."""

    def __init__(self, path: Path, columns: tuple[str, ...], enabled: bool):
        self.file = None
        if enabled:
            new = not path.exists() or path.stat().st_size == 0
            self.file = open(path, "a", newline="")
            self.writer = csv.writer(self.file)
            if new:
                self.writer.writerow(columns)

    def write(self, rows) -> None:
        if self.file is not None:
            self.writer.writerows(rows)
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()

