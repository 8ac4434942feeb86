"""Planning and running the training runs of the report's sections (the grid itself is :mod:`armlib.sections`).

A table row is a set of config overrides on top of the scale's base config (``configs/<scale>.yaml``); its runs
live in a folder named by content (:func:`experiment_id`), so rows that mean the same experiment in several
tables share their runs, and a changed config or trainer trains anew instead of reusing a stale record.

Runs are separate ``armlib train`` processes (isolated threads, memory and CUDA context), several at
once where the hardware allows, and a run whose ``record.json`` exists is skipped: an interrupted
reproduction resumes where it stopped.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from armlib.paths import REPO_ROOT, atomic_write_text, resolve
from armlib.runs import RECORD, run_key
from armlib.sections import ROW_DEFAULTS, Scale, get_scale, get_section, table_rows


def overrides(spec: dict, scale: Scale, data_root) -> dict:
    """Trainer config overrides for one experiment at a scale.

    ``data_root`` is where synthetic sets are generated; for real data it is the folder holding
    ``cityscapes/`` and ``ade20k/`` (see data/README.md), and each run gets its dataset's subfolder.
    """
    o = {k: v for k, v in spec.items() if k != "dataset"}
    dataset = spec.get("dataset", scale.dataset)
    if dataset != "synth":
        o["dataset"] = dataset
    o["data_root"] = str(resolve(data_root) if dataset == "synth" else resolve(data_root) / dataset)
    return o


def experiment_id(spec: dict, scale: Scale, data_root="data") -> str:
    """A row's experiment, named by content: the keys that differ from ROW_DEFAULTS (readable), then
    :func:`armlib.runs.run_key` of its resolved config without the seed.

    Two rows of different tables with the same resolved config share the id, so their runs are trained once
    and their comparisons count once; a changed config file, override or training code gives a new id, so a
    stale run is never reused.
    """
    parts = [f"{k}-{v}" for k, v in sorted(spec.items()) if ROW_DEFAULTS.get(k, object()) != v and k != "model"]
    parts.insert(0, str(spec["model"]))
    readable = "_".join(p.replace("/", "-") for p in parts)
    config = run_config(Run("", 0, spec, Path()), scale, data_root).to_dict()
    return f"{readable}-{run_key({**config, 'seed': None})}"


@dataclass
class Run:
    """One training run: a table row at one seed, trained into ``out`` (``<runs_dir>/<scale>/<experiment>_s<seed>``)."""

    row: str
    seed: int
    spec: dict
    out: Path
    experiment: str = ""   # :func:`experiment_id`: the same for every seed of a row

    @property
    def record_path(self) -> Path:
        return self.out / RECORD


def plan(table: str, scale: Scale, runs_dir: str | Path, seeds=None, data_root="data",
         rows: tuple[str, ...] | None = None, first_seed_only: bool = False) -> list[Run]:
    """The runs of a table's rows (all, or ``rows``) at the seeds each row runs with (:meth:`Scale.seeds_for`)."""
    root = resolve(runs_dir) / scale.name
    out = []
    for name, spec in table_rows(table, scale, data_root).items():
        if rows is not None and name not in rows:
            continue
        experiment = experiment_id(spec, scale, data_root)
        row_seeds = scale.seeds_for(name, table, seeds)
        for seed in row_seeds[:1] if first_seed_only else row_seeds:
            out.append(Run(name, seed, spec, root / f"{experiment}_s{seed}", experiment))
    return out


def plan_sections(keys, scale: Scale, runs_dir: str | Path = "runs", seeds=None, data_root="data") -> list[Run]:
    """Every run the given report sections need (:attr:`armlib.sections.Section.needs`), each once."""
    runs = []
    for key in keys:
        for need in get_section(key).needs:
            runs += plan(need.table, scale, runs_dir, seeds, data_root, need.rows, need.first_seed_only)
    return list({str(r.out): r for r in runs}.values())


def run_table(table: str, scale: str = "quick", seeds=None, runs_dir: str | Path = "runs",
              data_root: str | Path = "data", device: str = "auto", jobs: int | None = None,
              progress: bool = True) -> pd.DataFrame:
    """Train (or reuse) every run of a table; return one row per run: row, seed, metrics, run_dir."""
    sc = get_scale(scale)
    runs = plan(table, sc, runs_dir, seeds, data_root)
    execute(runs, sc, data_root=data_root, device=device, jobs=jobs, progress=progress, desc=table)
    return collect(runs)


def execute(runs: list[Run], scale: Scale, data_root="data", device="auto", jobs=None,
            progress=True, desc="runs") -> None:
    """Run every missing run (deduplicated by directory), ``jobs`` at a time, with a progress bar."""
    todo = {str(r.out): r for r in runs if not r.record_path.exists()}
    if not todo:
        return
    _prepare_data(list(todo.values()), scale, data_root)
    jobs = max(1, jobs or scale.jobs)
    gpus = torch.cuda.device_count() if device in ("auto", "cuda") else 0
    bar = tqdm(total=len(todo), desc=desc, unit="run", disable=not progress)
    failures = []

    def launch(i_run):
        i, r = i_run
        env = dict(os.environ)
        if gpus > 1 and scale.name != "paper":
            env["CUDA_VISIBLE_DEVICES"] = str(i % gpus)   # one independent run per GPU, round robin
        ok = _train(r, scale, data_root, device, env, gpus)
        bar.update(1)
        if not ok:
            failures.append(r)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(launch, enumerate(todo.values())))
    bar.close()
    if failures:
        logs = "\n".join(f"  {r.out / 'train.log'}" for r in failures)
        raise RuntimeError(f"{len(failures)} run(s) failed; see their logs:\n{logs}")


def _command(r: Run, scale: Scale, data_root, device, gpus: int) -> list[str]:
    args = ["train", "--config", str(scale.config_for(r.spec)), "--out", str(r.out)]
    settings = {**overrides(r.spec, scale, data_root), "seed": r.seed, "device": device, "quiet": True}
    if scale.threads:
        settings["threads"] = scale.threads
    args += [f"{k}={_yaml_value(v)}" for k, v in settings.items()]
    if scale.name == "paper" and gpus > 1:   # the paper's recipe: one run over all GPUs
        return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={gpus}", "-m", "armlib", *args]
    return [sys.executable, "-m", "armlib", *args]


def _yaml_value(v) -> str:
    return json.dumps(v) if isinstance(v, (bool, list, tuple)) or v is None else str(v)


def _train(r: Run, scale: Scale, data_root, device, env, gpus) -> bool:
    """One training process. A run that diverged (NaN loss) is a result, not a failure: the paper
    reports such rows as NaN (Table 2), so we record NaN metrics for it."""
    r.out.mkdir(parents=True, exist_ok=True)
    log = r.out / "train.log"
    with open(log, "w") as f:
        proc = subprocess.run(_command(r, scale, data_root, device, gpus), stdout=f, stderr=subprocess.STDOUT,
                              env=env, cwd=REPO_ROOT)
    if proc.returncode == 0 and r.record_path.exists():
        return True
    text = log.read_text(errors="replace")
    if "FloatingPointError" in text:
        atomic_write_text(r.record_path, json.dumps({
            "status": "diverged", "seed": r.seed, "spec": r.spec,
            "metrics": {"aAcc": math.nan, "mAcc": math.nan, "mIoU": math.nan},
            "message": text.strip().splitlines()[-1]}, indent=1))
        return True
    return False


def run_config(r: Run, scale: Scale, data_root="data"):
    """The :class:`armlib.config.TrainConfig` a run trains with (its seed aside)."""
    from armlib.config import load_config

    return load_config(scale.config_for(r.spec),
                       [f"{k}={_yaml_value(v)}" for k, v in overrides(r.spec, scale, data_root).items()])


def _prepare_data(runs: list[Run], scale: Scale, data_root) -> None:
    """Generate each synthetic dataset once, before parallel runs could race to create it."""
    from armlib.data.loading import prepare_data

    seen = set()
    for r in runs:
        cfg = run_config(r, scale, data_root)
        key = json.dumps(cfg.to_dict(), sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            prepare_data(cfg)


def collect(runs: list[Run]) -> pd.DataFrame:
    """One row per run: row, seed, aAcc, mAcc, mIoU, status, experiment, run_dir (records must exist)."""
    rows = []
    for r in runs:
        rec = json.loads(r.record_path.read_text())
        m = rec.get("metrics", rec)
        rows.append({"row": r.row, "seed": r.seed, **{k: m.get(k, math.nan) for k in ("aAcc", "mAcc", "mIoU")},
                     "status": rec.get("status", "ok"), "experiment": r.experiment, "run_dir": str(r.out)})
    return pd.DataFrame(rows)
