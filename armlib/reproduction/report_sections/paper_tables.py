"""Tables 1–6 — the paper's tables: runs → per-seed results → mean ± std beside the paper, and the bars.

Six report sections share this module (their rows and claims differ only in the manifest,
:data:`armlib.reproduction.sections.TABLES` and :data:`armlib.reproduction.sections.TABLE_CLAIMS`): ``notebooks/table<N>.ipynb`` calls
:func:`measure` and :func:`plot` with its key.
"""
from __future__ import annotations

import json
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from armlib import arm
from armlib.reproduction import executors, experiments, results, sections, stats, verdicts
from armlib.paths import atomic_write_text
from armlib.reproduction.plots import save
from armlib.reproduction.report_sections._runs import read_cache
from armlib.runs import is_failed, read_record
from armlib.reproduction.sections import get_scale


def measure(table: str, scale="quick", seeds=None, data_root="data", device="auto", out_dir="reports",
            runs_dir="runs", jobs=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tables 1–6: runs → per-seed results → mean ± std beside the paper → claims; writes the result files."""
    if table == "table6":
        records = _table6_records(scale, seeds, data_root, device, runs_dir, jobs)
    else:
        records = executors.run_table(table, scale, seeds, runs_dir, data_root, device, jobs)
    per_seed = stats.seed_results(records, table)
    summary = stats.summarize(per_seed, scale, sections.skipped_rows(table, get_scale(scale), data_root), table)
    claims = verdicts.section_claims(table, per_seed, scale, out_dir)
    results.write_section(out_dir, table, per_seed=per_seed, summary=summary)
    return summary, claims


def _table6_records(scale, seeds, data_root, device, runs_dir, jobs) -> pd.DataFrame:
    """One row per (method, seed) with the TTA mIoU of each annotation's run as columns."""
    sc = get_scale(scale)
    runs = experiments.plan("table6", sc, runs_dir, seeds, data_root)
    executors.execute(runs, sc, data_root=data_root, device=device, jobs=jobs, desc="table6")
    rows = {}
    for r in runs:
        method, column = r.row.split("@")
        metrics = tta_metrics(r, sc, device)
        record = read_record(r.out)
        status = record.get("status", "ok")
        rows.setdefault((method, r.seed), {"row": method, "seed": r.seed}).update(
            {column: metrics["mIoU"], f"status_{column}": status, f"experiment_{column}": r.experiment,
             f"arm_moved_{column}": arm.arm_moved(record)})
    return pd.DataFrame(list(rows.values()))


def tta_metrics(run: experiments.Run, scale: sections.Scale, device="auto") -> dict:
    """Multi-scale + flip evaluation of a finished run in the scale's mIoU (its unresolved classes left out, as
    every other table: :func:`armlib.metrics.reported_metrics`), cached in ``<run>/tta.json``."""
    from armlib.reproduction.analysis import evaluate_run
    from armlib.metrics import reported_metrics

    cache = run.out / "tta.json"
    # "classes" in the key: caches written before the TTA mIoU left the unresolved classes out are recomputed
    key = {"scales": list(scale.tta_scales), "flip": True, "classes": "reported"}
    if (stored := read_cache(cache, key, "metrics")) is not None:
        return stored
    record = read_record(run.out)
    if is_failed(record.get("status")):
        metrics = {"aAcc": math.nan, "mAcc": math.nan, "mIoU": math.nan}
    else:
        metrics = evaluate_run(run.out, scales=scale.tta_scales, flip=True, device=device)
        metrics = reported_metrics(metrics, record["class_names"], record["config"].get("unresolved_classes", ()))
    atomic_write_text(cache, json.dumps({"settings": key, "metrics": metrics}, indent=1))
    return metrics


def plot(summary: pd.DataFrame, key: str, out_dir="reports"):
    """mIoU (or Table 6's TTA mIoU per annotation) per row, paper vs ours (mean ± std over finished seeds).

    The x-axis starts at 0: a cut axis makes a 1-point difference look like a large one. Rows whose seeds all
    diverged are labelled "diverged" instead of drawn as an empty bar.
    """
    df = summary[summary.metric.isin(["mIoU", "fine", "coarse", "ade20k"])]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.45 * max(4, df.label.nunique()) + 1), sharey=True)
    labels = df.label + np.where(df.metric == "mIoU", "", " [" + df.metric + "]")
    for ax, col, title in ((axes[0], "paper", "paper"), (axes[1], "mean", "ours (mean ± std over seeds)")):
        ax.barh(labels, df[col].fillna(0), xerr=df["std"].fillna(0) if col == "mean" else None,
                color=sns.color_palette("deep")[0 if col == "paper" else 1])
        for y, value in enumerate(df[col]):
            if pd.isna(value):
                ax.text(0.5, y, "diverged" if col == "paper" or df["n_diverged"].iloc[y] else "not run",
                        va="center", fontsize=8, color="#b00")
        ax.set_title(title)
        ax.set_xlabel("mIoU (%)")
        ax.set_xlim(0, None)
    axes[0].invert_yaxis()
    fig.suptitle(sections.get_section(key).heading)   # words, not the section key
    return save(fig, out_dir, key)
