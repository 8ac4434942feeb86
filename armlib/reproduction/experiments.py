"""Planning the training runs of the report's sections (the grid itself is :mod:`armlib.reproduction.sections`;
:mod:`armlib.reproduction.executors` trains them).

A table row is a set of config overrides on top of the scale's base config (``configs/<scale>.yaml``); its runs
live in a folder named by content (:func:`experiment_id`), so rows that mean the same experiment in several
tables share their runs, and a changed config or trainer trains anew instead of reusing a stale record.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from armlib.arm import arm_moved
from armlib.paths import resolve
from armlib.runs import RECORD, read_record, run_key
from armlib.reproduction.sections import ROW_DEFAULTS, Scale, get_section, planned_seeds, table_rows


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
    """The runs of a table's rows (all, or ``rows``) at the seeds each row runs with (:meth:`Scale.seeds_for`).

    A run at one of its row's confirmatory seeds trains with the hash of the plan that names the seed in its config
    (``plan``), so its record shows the plan it ran under; its experiment id, which names the row, stays the
    pilot's."""
    root = resolve(runs_dir) / scale.name
    out = []
    for name, spec in table_rows(table, scale, data_root).items():
        if rows is not None and name not in rows:
            continue
        experiment = experiment_id(spec, scale, data_root)
        row_seeds = scale.seeds_for(name, table, seeds)
        planned = planned_seeds(table, name, scale)
        for seed in row_seeds[:1] if first_seed_only else row_seeds:
            run_spec = {**spec, "plan": planned[seed]} if seed in planned else spec
            out.append(Run(name, seed, run_spec, root / f"{experiment}_s{seed}", experiment))
    return out


def plan_sections(keys, scale: Scale, runs_dir: str | Path = "runs", seeds=None, data_root="data") -> list[Run]:
    """Every run the given report sections need (:attr:`armlib.reproduction.sections.Section.needs`), each once."""
    runs = []
    for key in keys:
        for need in get_section(key).needs:
            runs += plan(need.table, scale, runs_dir, seeds, data_root, need.rows, need.first_seed_only)
    return list({str(r.out): r for r in runs}.values())


def yaml_value(v) -> str:
    return json.dumps(v) if isinstance(v, (bool, list, tuple)) or v is None else str(v)


def run_config(r: Run, scale: Scale, data_root="data"):
    """The :class:`armlib.config.TrainConfig` a run trains with (its seed aside)."""
    from armlib.config import load_config

    return load_config(scale.config_for(r.spec),
                       [f"{k}={yaml_value(v)}" for k, v in overrides(r.spec, scale, data_root).items()])


def check_data(runs: list[Run], scale: Scale, data_root) -> None:
    """Check, before any run starts, that every real dataset the runs read is laid out as expected: the same
    check (:func:`armlib.data.checks.check_dataset`) the trainer makes before each run, once per distinct config.

    Raises:
        FileNotFoundError: one line naming the first missing folder and what ``--data-root`` must hold.
        armlib.errors.UsageError: a dataset present but not usable (e.g. an unknown class name).
    """
    from armlib.data.checks import check_dataset

    seen = set()
    for r in runs:
        cfg = run_config(r, scale, data_root)
        key = json.dumps(cfg.to_dict(), sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        try:
            check_dataset(cfg)
        except FileNotFoundError as exc:
            # the common slip: naming the dataset folder itself, which then looks for cityscapes/cityscapes/
            hint = (f" (--data-root {data_root} names a dataset folder: pass its parent)"
                    if resolve(data_root).name in ("cityscapes", "ade20k") else "")
            raise FileNotFoundError(f"data not found: {exc}; --data-root must be the folder that holds cityscapes/ "
                                    f"(leftImg8bit/, gtFine/, gtCoarse/) and optionally ade20k/, see "
                                    f"data/README.md{hint}") from None


def collect(runs: list[Run]) -> pd.DataFrame:
    """One row per run: row, seed, aAcc, mAcc, mIoU, status, experiment, arm_moved (None without a learned
    ARM curve; :func:`armlib.arm.arm_moved`), run_dir (records must exist)."""
    rows = []
    for r in runs:
        rec = read_record(r.out)
        m = rec.get("metrics", rec)
        rows.append({"row": r.row, "seed": r.seed, **{k: m.get(k, math.nan) for k in ("aAcc", "mAcc", "mIoU")},
                     "status": rec.get("status", "ok"), "experiment": r.experiment, "arm_moved": arm_moved(rec),
                     "run_dir": str(r.out)})
    return pd.DataFrame(rows)
