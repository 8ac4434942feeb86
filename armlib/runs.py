"""Run folders: the files a training run writes, provenance, and the store that keys a run by its content.

A run folder holds ``checkpoint.pt`` (the latest), ``record.json`` (the result), ``log.csv`` and ``curves.csv``
(written by :mod:`armlib.train`). :func:`run_key` names a run by a hash of everything that can change its
result, so a changed config or trainer trains a new run and an unchanged one is reused (the store of
``armlib reproduce``).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import platform
import resource
import sys
import tempfile
from pathlib import Path

import torch

from armlib.config import RUNTIME_ONLY
from armlib.paths import atomic_write_text, public_mode

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
                                     "cpu_fused_sgd": False, "matmul_resize": False}

# Statuses of a run that learned nothing (status: why): it stays in every table, marked, and takes the metric's
# worst value in every comparison (README, "How a verdict is made"; armlib.stats). A new such status is one entry.
FAILED_STATUSES: dict[str, str] = {"diverged": "the loss became non-finite"}


def is_failed(status: str | None) -> bool:
    """True for a run that learned nothing (:data:`FAILED_STATUSES`): the one test the statistics use."""
    return status in FAILED_STATUSES


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
    """A run's ``record.json``. Raises FileNotFoundError naming the folder when the run has not finished."""
    path = Path(run_dir) / RECORD
    if not path.exists():
        raise FileNotFoundError(f"{path}: no record (the run has not finished)")
    return json.loads(path.read_text())


def atomic_torch_save(obj, path: Path) -> None:
    """``torch.save`` to a temp file in the same folder, fsync, then ``os.replace``: a crash or a failed
    write leaves the previous file intact and no partial file under ``path``'s name."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, public_mode())   # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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

