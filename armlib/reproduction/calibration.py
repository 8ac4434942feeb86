"""Calibrating a scale's T on what does not favour ARM, on seeds the report never uses.

A scale's number of SGD steps T decides whether the reproduction can test ARM at all: too short and ARM's 53
parameters never leave their initialisation (every "ARM" row is then the base model again), or coarse labels
barely cost the base model anything (then no method against label noise can show). So T is chosen by three
measurements that say nothing about ARM's gain (DEVELOPERS.md: calibrate on the base model and on whether
ARM learns, never on ARM's gain):

1. the base model's learning curve, mIoU against T, on fine and on coarse labels (one calibration seed);
2. the cost of coarse labels at T, as a share of the fine mIoU (criterion: ≥ :data:`MIN_COARSE_COST`; the
   paper's Cityscapes figures give 13 %: 80.76 fine, 70.33 coarse);
3. whether ARM's curve moves (:func:`armlib.arm.arm_moved`) in every calibration seed at T, on coarse labels and
   on fine labels (both are primary comparisons of the paper: Table 2's ARM rows).

The rule: the smallest candidate T (in increasing order) that meets 2 and 3. Its first version, fixed before any
run, checked 3 on coarse labels only; the quick reference then showed ARM unmoved in one fine-label reporting seed
(seed 1, shape change 0.031 at T = 3200), so the rule now checks fine labels too (fine-label ARM is trained at a T
only once every coarse-label seed moved there). Both checks are on whether ARM learns, never on its gain. The ARM
and base runs at each T also give the paired SD of ARM − base, which sizes the reporting seeds
(:func:`armlib.reproduction.stats.seeds_needed`); its mean is written down and never used to choose anything.

Calibration seeds start at 100 (:data:`CALIBRATION_SEEDS`), apart from the reporting seeds 0, 1, …: a scale
calibrated on the seeds it reports would be tuned on its own test data. ``armlib calibrate`` runs it and writes
``reports/<scale>/calibration/{learning_curve,arm_learns}.csv`` and ``calibration.json``, which the report
shows.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import signal
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from armlib.arm import MOVED_THRESHOLD, curve_shape_change, curve_suppression, shape_pull
from armlib.reproduction.calibration_files import (ARM_FILE, CALIBRATION_DIR, CURVE_FILE, SUMMARY_FILE, UNRESOLVED_IOU,
                                      coarse_cost)
from armlib.commands import CALIBRATION_SEEDS, DEFAULT_ITERATIONS, flatten
from armlib.reproduction.executors import ClusterOptions, cluster_options, execute, signals_as_interrupts
from armlib.reproduction.experiments import Run, experiment_id, run_config
from armlib.metrics import reported_metrics
from armlib.errors import UsageError
from armlib.runs import CURVES, read_record
from armlib.training.step import build_criterion
from armlib.paths import REPO_ROOT, atomic_write_text, replace_tree, resolve
from armlib.reproduction.sections import ARM_ROW, get_scale, row
from armlib.reproduction.stats import minimal_detectable_effect, seeds_needed

MIN_COARSE_COST = 0.08   # issue 11: coarse labels must cost the base model ≥ 8 % of its fine mIoU
RULE_HISTORY = ("The fine-label clause was added on 2026-11-30, after the quick reference showed ARM's curve flat in "
                "one fine-label reporting seed (seed 1); the first rule checked coarse labels only.")
ANNOTATIONS = ("coarse", "fine")   # ARM must move on both (coarse first: fine is trained only where coarse passed)


def _run(spec: dict, seed: int, scale, runs_dir, data_root, label: str) -> Run:
    spec = {**spec, "model": scale.models[spec["model"]]}   # the role ("r101") → the scale's model
    experiment = experiment_id(spec, scale, data_root)
    return Run(label, seed, spec, resolve(runs_dir) / scale.name / "calibration" / f"{experiment}_s{seed}", experiment)


def learning_curve_runs(scale, iterations, seed: int, runs_dir, data_root) -> list[Run]:
    """The base model on fine and on coarse labels at each T (one seed)."""
    return [_run({**row(annotation=a), "iterations": t}, seed, scale, runs_dir, data_root, f"base_{a}@{t}")
            for t in iterations for a in ("fine", "coarse")]


def arm_runs(scale, t: int, seeds, runs_dir, data_root, annotation: str = "coarse") -> list[Run]:
    """ARM and the base model on ``annotation`` labels ("coarse" or "fine") at T, paired by seed."""
    pair = (("base", row(annotation=annotation)), ("arm", row(annotation=annotation, **ARM_ROW)))
    return [_run({**spec, "iterations": t}, seed, scale, runs_dir, data_root, f"{name}_{annotation}@{t}")
            for seed in seeds for name, spec in pair]


def curve_table(runs: list[Run]) -> pd.DataFrame:
    """One row per learning-curve run: annotation, T, seed, mIoU, mIoU_all_classes and each class's IoU."""
    rows = []
    for r in runs:
        rec = read_record(r.out)
        rows.append({"annotation": r.spec["annotation"], "T": r.spec["iterations"], "seed": r.seed,
                     "mIoU": rec["metrics"]["mIoU"], "mIoU_all_classes": rec["metrics"].get("mIoU_all_classes"),
                     "train_time_s": rec.get("train_time_s"),
                     **{f"IoU {name}": iou for name, iou in zip(rec["class_names"], rec["IoU"])}})
    return pd.DataFrame(rows)


def moved_at(curves_csv: Path) -> int | None:
    """First logged iteration at which ARM's curve (``curves.csv``: iteration, v, w) has moved from the one logged
    at iteration 0 (:func:`armlib.arm.curve_shape_change` ≥ ``MOVED_THRESHOLD``); None if it never did."""
    curves = pd.read_csv(curves_csv).sort_values(["iteration", "v"])
    by_it = {int(it): g["w"].to_numpy() for it, g in curves.groupby("iteration")}
    init = by_it[min(by_it)]
    return next((it for it, w in sorted(by_it.items()) if curve_shape_change(init, w) >= MOVED_THRESHOLD), None)


def _miou(record: dict, unresolved) -> float:
    """The record's mIoU, or with ``unresolved`` given, the mean IoU over the other classes, as
    :func:`armlib.metrics.reported_metrics` takes it: the same quantity whichever classes the run's config left
    out when it trained."""
    if unresolved is None:
        return record["metrics"]["mIoU"]
    per_class = {"aAcc": record["metrics"]["aAcc"], "Acc": record["Acc"], "IoU": record["IoU"]}
    return float(reported_metrics({**per_class, "mIoU": math.nan}, record["class_names"], unresolved)["mIoU"])


def arm_table(runs: list[Run], scale=None, data_root="data", unresolved=None) -> pd.DataFrame:
    """One row per (T, annotation, seed): base and ARM mIoU (over the classes not in ``unresolved`` when given,
    else each record's mIoU), ARM's curve at init and at the end, whether and when it moved, and the pull on its
    shape at init (:func:`armlib.arm.shape_pull`, rebuilt exactly as the trainer builds it)."""
    by_key = {(r.spec["iterations"], r.spec["annotation"], r.seed, r.spec["reweight"]): (r, read_record(r.out))
              for r in runs}
    rows = []
    for (t, annotation, seed, reweight), (run, arm) in sorted(by_key.items()):
        if reweight != "arm":
            continue
        base = by_key[(t, annotation, seed, "none")][1]
        # run_config leaves the seed out (the trainer gets it on its command line); ARM's init depends on it.
        cfg = dataclasses.replace(run_config(run, scale, data_root), seed=run.seed) if scale else None
        pull = shape_pull(build_criterion(cfg).weight_fn) if cfg else math.nan
        w0, w1 = arm["arm_curve_init"]["w"], arm["arm_curve"]["w"]
        change = curve_shape_change(w0, w1)
        rows.append({"T": t, "annotation": annotation, "seed": seed,
                     "base mIoU": _miou(base, unresolved), "ARM mIoU": _miou(arm, unresolved),
                     "shape change": change, "moved": change >= MOVED_THRESHOLD,
                     "moved at": moved_at(run.out / CURVES), "shape pull at init": pull,
                     "suppression": curve_suppression(w1),
                     "W(-1)": w1[0], "W(0)": w1[len(w1) // 2], "W(+1)": w1[-1],
                     "W(-1) init": w0[0], "W(0) init": w0[len(w0) // 2], "W(+1) init": w0[-1]})
    return pd.DataFrame(rows)


def unresolved_classes(curves: pd.DataFrame) -> list[str]:
    """Classes whose IoU stays below :data:`UNRESOLVED_IOU` (absent: 0) in every learning-curve run, fine included."""
    columns = [c for c in curves.columns if c.startswith("IoU ")]
    return [c[len("IoU "):] for c in columns if (curves[c].fillna(0.0) < UNRESOLVED_IOU).all()]


def _at(arms: pd.DataFrame, t: int, annotation: str) -> pd.DataFrame:
    """The ARM rows at T on ``annotation`` labels; a table without the column (written before the rule checked
    fine labels) holds coarse-label rows only."""
    on = arms["annotation"] == annotation if "annotation" in arms else pd.Series(annotation == "coarse", arms.index)
    return arms[(arms["T"] == t) & on]


def choose(curves: pd.DataFrame, arms: pd.DataFrame, iterations) -> int | None:
    """The smallest T meeting both criteria (coarse cost ≥ MIN_COARSE_COST; ARM moved in every seed, on coarse
    and on fine labels), or None."""
    for t in sorted(iterations):
        moved = all(len(at) and bool(at["moved"].all()) for at in (_at(arms, t, a) for a in ANNOTATIONS))
        if moved and coarse_cost(curves, t) >= MIN_COARSE_COST:
            return t
    return None


def _moved_count(arms: pd.DataFrame, t: int, annotation: str) -> str:
    at = _at(arms, t, annotation)
    return f"{int(at['moved'].sum())}/{len(at)}" if len(at) else "not run"


def _paired_sd(arms: pd.DataFrame, t: int, annotation: str) -> float:
    at = _at(arms, t, annotation)
    diff = (at["ARM mIoU"] - at["base mIoU"]).to_numpy()
    return float(np.std(diff, ddof=1)) if len(diff) > 1 else math.nan


def summary(curves: pd.DataFrame, arms: pd.DataFrame, iterations, chosen: int | None, alpha: float, power: float,
            effect: float) -> dict:
    """What ``calibration.json`` holds: per T the coarse cost and ARM's moved count on coarse (``arm_moved``) and
    fine labels (``arm_moved_fine``); at the chosen T the paired SD of ARM − base on coarse labels (``paired_sd``)
    and on fine (``paired_sd_fine``), and the seeds a paired t-test needs to detect ``effect`` mIoU at ``alpha``
    with ``power`` from the coarse-label SD (the paper's central claim)."""
    out = {"rule": f"smallest T with coarse cost >= {MIN_COARSE_COST:.0%} and ARM moved in every calibration seed, "
                   "on coarse and on fine labels", "rule_history": RULE_HISTORY,
           "candidates": {}, "chosen_T": chosen, "unresolved_classes": unresolved_classes(curves)}
    for t in sorted(iterations):
        out["candidates"][str(t)] = {"coarse_cost": coarse_cost(curves, t),
                                     "arm_moved": _moved_count(arms, t, "coarse"),
                                     "arm_moved_fine": _moved_count(arms, t, "fine")}
    if chosen is not None:
        sd = _paired_sd(arms, chosen, "coarse")
        out["paired_sd"] = sd
        out["paired_sd_fine"] = _paired_sd(arms, chosen, "fine")
        out["power_target"] = {"effect": effect, "alpha": alpha, "power": power,
                               "seeds_needed": seeds_needed(effect, sd, alpha=alpha, power=power)}
        out["mde_at"] = {str(n): minimal_detectable_effect(sd, n, alpha=alpha, power=power) for n in (5, 6, 8, 10)}
        out["mde_fine_at"] = {str(n): minimal_detectable_effect(out["paired_sd_fine"], n, alpha=alpha, power=power)
                              for n in (5, 6, 8, 10)}
    return out


def committed_dir(scale_name: str) -> Path:
    """Where a scale's calibration is committed: ``reports/<scale>/calibration/`` in the repository. The scale's
    config (its T, its unresolved classes) was chosen from these files, so every report of the scale shows them."""
    return REPO_ROOT / "reports" / scale_name / CALIBRATION_DIR


def attach(scale_name: str, out_dir: str | Path) -> Path | None:
    """Copy the scale's committed calibration into ``<out_dir>/calibration/`` (the report reads it there, so a
    report folder holds every file it shows), replacing an older copy; returns the folder, or None when the
    scale was never calibrated. The committed reference folder itself is left as it is."""
    source, target = committed_dir(scale_name), resolve(out_dir) / CALIBRATION_DIR
    if not (source / SUMMARY_FILE).exists():
        return None
    replace_tree(source, target)
    return target


def calibrate(scale_name: str = "quick", iterations=DEFAULT_ITERATIONS, seeds=CALIBRATION_SEEDS,
              runs_dir="runs", data_root="data", out_dir: str | Path | None = None, jobs: int | None = None,
              effect: float = 1.0, alpha: float = 0.01, power: float = 0.8, from_records: bool = False,
              executor: str = "pool", cluster: ClusterOptions | None = None) -> dict:
    """Run the calibration of a scale (rule in the module docstring) and write its files; returns the summary.

    ARM is checked at each T in increasing order (coarse labels, then fine), stopping at the first T that meets
    both criteria, so a longer T is trained only when a shorter one fails. ``effect`` (mIoU) is the paper's gain
    taken at our base (ARM on coarse: +1.61 on 70.33 = 2.3 %, about +1.0 at a base of 45); ``alpha`` the
    Holm-adjusted level of the smallest primary p (0.05 / 5).

    With ``from_records`` nothing is trained: the files are written from the records already in ``runs_dir`` (a
    calibration cut off by a time limit, its records copied from another machine). The rule stops at the first T
    whose ARM runs lack records, which ``calibration.json`` lists under ``missing_runs`` (empty when complete);
    its cells say "cut off", with the count over the seed pairs that finished, if any; no T is chosen.
    ``executor`` and ``cluster`` say where the runs train, as for ``armlib reproduce``
    (:func:`armlib.reproduction.executors.execute`).

    Raises:
        ValueError: a seed of ``seeds`` is a reporting seed of the scale (< 100), or fewer than 2 seeds; with
            ``from_records``, a learning-curve run without its record.
    """
    scale = get_scale(scale_name)
    seeds = tuple(seeds)
    if len(seeds) < 2 or min(seeds) < CALIBRATION_SEEDS[0]:
        raise ValueError(f"seeds must be ≥ 2 calibration seeds from {CALIBRATION_SEEDS[0]} up (reporting seeds "
                         f"are never used to calibrate), got {seeds}")
    iterations = tuple(sorted(int(t) for t in iterations))
    out_dir = resolve(out_dir) if out_dir is not None else committed_dir(scale.name)
    missing: list[Run] = []

    def train(runs: list[Run], desc: str) -> list[Run]:
        """The runs with their records: all, after training them; from records, the seed pairs already there."""
        if not from_records:
            execute(runs, scale, data_root, jobs=jobs, desc=desc, executor=executor, cluster=cluster)
            return runs
        missing.extend(r for r in runs if not r.record_path.exists())
        seeds_done = [seed for seed in dict.fromkeys(r.seed for r in runs)
                      if all(r.record_path.exists() for r in runs if r.seed == seed)]
        return [r for r in runs if r.seed in seeds_done]

    curve = learning_curve_runs(scale, iterations, seeds[0], runs_dir, data_root)
    train(curve, "learning curve")
    if missing:
        raise UsageError(f"--from-records: the learning curve has no record in {missing[0].out} "
                         f"({len(missing)} of {len(curve)} runs missing); train it first (armlib calibrate without "
                         "--from-records), or point --runs-dir at the folder that holds it")
    curves = curve_table(curve)
    # ARM − base in the mIoU the report will use (the unresolved classes left out), not in whatever mIoU the runs'
    # config gave: the paired SD that sizes the reporting seeds must be in the reporting unit.
    unresolved = unresolved_classes(curves)
    arm: list[Run] = []
    chosen = None
    for t in iterations:
        if coarse_cost(curves, t) < MIN_COARSE_COST:
            continue   # fails on the base model alone: no need to train ARM there
        for annotation in ANNOTATIONS:
            runs = train(arm_runs(scale, t, seeds, runs_dir, data_root, annotation),
                         f"ARM on {annotation} labels at T={t}")
            arm += runs
            if missing or not _at(arm_table(runs, scale, data_root, unresolved), t, annotation)["moved"].all():
                break   # ARM failed at this T (no need to train it on the other labels), or T is undecided
        chosen = None if missing else choose(curves, arm_table(arm, scale, data_root, unresolved), iterations)
        if chosen is not None or missing:
            break
    arms = (arm_table(arm, scale, data_root, unresolved) if arm
            else pd.DataFrame(columns=["T", "annotation", "seed", "moved"]))
    result = summary(curves, arms, iterations, chosen, alpha, power, effect)
    result["missing_runs"] = [f"{r.row} seed {r.seed}" for r in missing]
    # Started but cut off, not skipped by the rule: the cell must say so, and a count over the finished seed
    # pairs alone ("1/1") must not read as the whole T.
    for t, annotation in dict.fromkeys((r.spec["iterations"], r.spec["annotation"]) for r in missing):
        candidate = result["candidates"][str(t)]
        key = "arm_moved" if annotation == "coarse" else "arm_moved_fine"
        done = len(_at(arms, t, annotation))
        candidate[key] = ("cut off" if not done
                          else f"{candidate[key]} (cut off: {done} of {len(seeds)} seed pairs finished)")
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / CURVE_FILE, curves.to_csv(index=False))
    atomic_write_text(out_dir / ARM_FILE, arms.to_csv(index=False))
    atomic_write_text(out_dir / SUMMARY_FILE, json.dumps(result, indent=2) + "\n")
    return result


def run(args: argparse.Namespace) -> int:
    iterations, seeds = flatten(args.iterations), flatten(args.seeds)   # armlib.commands: the arguments
    try:
        with signals_as_interrupts():   # a time limit's SIGTERM stops the runs instead of orphaning them
            result = calibrate(args.scale, iterations, seeds, args.runs_dir, args.data_root,
                               args.out, args.jobs, from_records=args.from_records, executor=args.executor,
                               cluster=cluster_options(args))
    except KeyboardInterrupt as exc:
        print(f"armlib calibrate: interrupted ({exc.args[0] if exc.args else 'SIGINT'}); every training run was "
              "stopped; the same command resumes from the records and checkpoints", file=sys.stderr)
        return 128 + getattr(exc, "signum", signal.SIGINT)
    print(json.dumps(result, indent=2))
    return 0
