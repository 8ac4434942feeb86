"""Named experiment grids: which training runs each table needs, at each scale, and running them.

A table row is a set of config overrides on top of the scale's base config (``configs/<scale>.yaml``).
Rows that mean the same experiment in several tables (the CE base model on coarse labels appears in
Tables 1–5) resolve to the same run directory, so it is trained once per seed and shared.

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

from armlib.paths import CONFIG_DIR, REPO_ROOT, atomic_write_text, resolve


@dataclass(frozen=True)
class Scale:
    """How big a reproduction is. ``models`` maps the paper's roles to registry names (None: not run)."""

    name: str
    config: str                      # base config file name in configs/
    seeds: tuple[int, ...]           # one run per seed for every row
    jobs: int                        # runs at once (processes)
    threads: int | None              # torch threads per run (None: leave the default)
    models: dict = field(default_factory=dict)   # role ("r50", "r101", "ocr") -> model name
    noise_levels: tuple[float, ...] = ()         # synthetic coarse-label noise sweep
    tta_scales: tuple[float, ...] = (0.75, 1.0, 1.25)
    dataset: str = "synth"           # "synth" or "cityscapes" (then ADE20K rows run too when present)
    dataset_configs: dict = field(default_factory=dict)  # dataset -> its own base config (else ``config``)

    def config_for(self, spec: dict) -> Path:
        """The base config file of one experiment (ADE20K has its own crop size and T at paper scale)."""
        return CONFIG_DIR / self.dataset_configs.get(spec.get("dataset", self.dataset), self.config)


SCALES = {
    "smoke": Scale("smoke", "smoke.yaml", seeds=(0,), jobs=2, threads=1,
                   models={"r50": None, "r101": "deeplabv3plus_tiny", "ocr": "ocr_tiny"},
                   noise_levels=(0.0, 1.0), tta_scales=(0.75, 1.0)),
    "quick": Scale("quick", "quick.yaml", seeds=(0, 1, 2), jobs=2, threads=1,
                   models={"r50": None, "r101": "deeplabv3plus_tiny", "ocr": "ocr_tiny"},
                   noise_levels=(0.0, 0.5, 1.0)),
    "gpu": Scale("gpu", "gpu.yaml", seeds=(0, 1, 2), jobs=4, threads=4,
                 models={"r50": "deeplabv3plus_r50", "r101": "deeplabv3plus_r101", "ocr": "ocr_r101"},
                 noise_levels=(0.0, 0.5, 1.0)),
    "paper": Scale("paper", "paper_cityscapes_coarse.yaml", seeds=(0,), jobs=1, threads=None,
                   models={"r50": "deeplabv3plus_r50", "r101": "deeplabv3plus_r101", "ocr": "ocr_r101"},
                   tta_scales=(0.5, 0.75, 1.0, 1.25, 1.5, 1.75), dataset="cityscapes",
                   dataset_configs={"ade20k": "paper_ade20k.yaml"}),
}


def get_scale(name: str) -> Scale:
    if name not in SCALES:
        raise ValueError(f"scale must be one of {sorted(SCALES)}, got {name!r}")
    return SCALES[name]


# The experiment-defining keys, with the value every row has unless it says otherwise.
ROW_DEFAULTS = {"annotation": "coarse", "loss": "ce", "reweight": "none", "norm_p": 2.0, "indicator": "var",
                "detach": True, "linear_k": -0.5, "model": "r101"}


def row(**changes) -> dict:
    unknown = set(changes) - set(ROW_DEFAULTS) - {"synth_noise", "dataset"}
    if unknown:
        raise ValueError(f"unknown experiment keys {sorted(unknown)}")
    return {**ROW_DEFAULTS, **changes}


ARM = {"reweight": "arm"}
LINEAR = {"reweight": "linear"}

TABLES: dict[str, dict[str, dict]] = {
    "table1": {
        "base": row(),
        "linear_nodetach": row(**LINEAR, detach=False),
        "linear_detach": row(**LINEAR),
        "linear_focusing": row(**LINEAR, linear_k=0.5),
    },
    "table2": {
        "base": row(),
        "norm_l1": row(**ARM, norm_p=1.0),
        "norm_l2": row(**ARM),
        "norm_l3": row(**ARM, norm_p=3.0),
        "input_var": row(**ARM),
        "input_std": row(**ARM, indicator="std"),
        "input_logvar": row(**ARM, indicator="logvar"),
        "input_entropy": row(**ARM, indicator="entropy"),
    },
    "table3": {
        **{f"{a}_{m}_{v}": row(annotation=a, model=m, **(ARM if v == "arm" else {}))
           for a in ("coarse", "fine") for m in ("r50", "r101") for v in ("base", "arm")},
        **{f"{a}_{h}_{v}": row(annotation=a, model="r101" if h == "dlv3p" else "ocr", **(ARM if v == "arm" else {}))
           for a in ("coarse", "fine") for h in ("dlv3p", "ocr") for v in ("base", "arm")},
    },
    "table4": {
        "kl": row(loss="kl"), "ce": row(), "gce": row(loss="gce"),
        "kl_arm": row(loss="kl", **ARM), "ce_arm": row(**ARM), "gce_arm": row(loss="gce", **ARM),
    },
    "table5": {
        **{f"{a}_{m}": row(annotation=a, **({"loss": "ohem"} if m == "ohem" else ARM if m == "arm" else {}))
           for a in ("fine", "coarse") for m in ("base", "ohem", "arm")},
        **{f"ade_{m}": row(dataset="ade20k", annotation="fine",
                           **({"loss": "ohem"} if m == "ohem" else ARM if m == "arm" else {}))
           for m in ("base", "ohem", "arm")},
    },
}

# Table 6: the TTA-evaluated rows, one training run per (method, annotation).
TABLE6_METHODS = {"base": {}, "ohem": {"loss": "ohem"}, "linear_arm": LINEAR, "arm": ARM}
TABLE6_COLUMNS = {"fine": {"annotation": "fine"}, "coarse": {"annotation": "coarse"},
                  "ade20k": {"dataset": "ade20k", "annotation": "fine"}}
NOISE_METHODS = {"base": {}, "linear_arm": LINEAR, "arm": ARM}


def table_rows(table: str, scale: Scale, data_root="data") -> dict[str, dict]:
    """{row: experiment dict} of a table that can run at this scale (model roles resolved; ADE20K rows
    only for real-data scales with ``<data_root>/ade20k`` present)."""
    if table == "table6":
        rows = {f"{m}@{c}": row(**mk, **ck) for m, mk in TABLE6_METHODS.items() for c, ck in TABLE6_COLUMNS.items()}
    elif table == "noise_sweep":
        from armlib.config import load_config

        # The scale's own noise level is the other tables' data set: leave it implicit so those runs are shared.
        default = load_config(CONFIG_DIR / scale.config).synth_noise
        rows = {f"{m}@{noise:g}": row(**mk, **({} if noise == default else {"synth_noise": noise}))
                for noise in scale.noise_levels for m, mk in NOISE_METHODS.items()}
    elif table in TABLES:
        rows = TABLES[table]
    else:
        raise ValueError(f"table must be one of {sorted(TABLES) + ['table6', 'noise_sweep']}, got {table!r}")
    out = {}
    for name, spec in rows.items():
        model = scale.models.get(spec["model"], spec["model"])
        needs_ade = spec.get("dataset") == "ade20k"
        if model is None or (needs_ade and (scale.dataset == "synth" or not (resolve(data_root) / "ade20k").is_dir())):
            continue   # not runnable at this scale (the report says so)
        out[name] = {**spec, "model": model}
    return out


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


def run_name(spec: dict, seed: int) -> str:
    """Readable, canonical directory name: the keys that differ from ROW_DEFAULTS, then the seed."""
    parts = [f"{k}-{v}" for k, v in sorted(spec.items()) if ROW_DEFAULTS.get(k, object()) != v and k != "model"]
    parts.insert(0, str(spec["model"]))
    return "_".join(p.replace("/", "-") for p in parts) + f"_s{seed}"


@dataclass
class Run:
    row: str
    seed: int
    spec: dict
    out: Path

    @property
    def record_path(self) -> Path:
        return self.out / "record.json"


def plan(table: str, scale: Scale, runs_dir: str | Path, seeds=None, data_root="data") -> list[Run]:
    seeds = scale.seeds if seeds is None else tuple(seeds)
    root = resolve(runs_dir) / scale.name
    return [Run(name, seed, spec, root / run_name(spec, seed))
            for name, spec in table_rows(table, scale, data_root).items() for seed in seeds]


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
    """One row per run: row, seed, aAcc, mAcc, mIoU, status, run_dir (records must exist)."""
    rows = []
    for r in runs:
        rec = json.loads(r.record_path.read_text())
        m = rec.get("metrics", rec)
        rows.append({"row": r.row, "seed": r.seed, **{k: m.get(k, math.nan) for k in ("aAcc", "mAcc", "mIoU")},
                     "status": rec.get("status", "ok"), "run_dir": str(r.out)})
    return pd.DataFrame(rows)
