"""ARM's gain as the synthetic coarse-label noise grows (not in the paper).

One report section: its manifest entry is ``sections.get_section('noise_sweep')``; its notebook
``notebooks/noise_sweep.ipynb`` calls :func:`measure` (runs → ``results/noise_sweep*.csv``)
and :func:`plot` (→ ``figures/noise_sweep.png``).
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from armlib.reproduction import executors, results, stats, verdicts
from armlib.reproduction.plots import legend_beside, save
from armlib.reproduction.sections import get_scale


def measure(scale="quick", seeds=None, data_root="data", device="auto", out_dir="reports", runs_dir="runs",
            jobs=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Base / Linear ARM / ARM at each synthetic noise level; claims (secondary): each beats the base model."""
    sc = get_scale(scale)
    records = executors.run_table("noise_sweep", scale, seeds, runs_dir, data_root, device, jobs)
    per_seed = stats.seed_results(records, "noise_sweep", ["mIoU"])
    split = per_seed["row"].str.split("@", expand=True)
    finished = per_seed[per_seed.status == "ok"].assign(method=split[0], noise=split[1].astype(float))
    summary = (finished.groupby(["noise", "method"], sort=True)["value"]
               .agg(mean="mean", std="std", n="count").reset_index().assign(scale=sc.name))
    claims = verdicts.section_claims("noise_sweep", per_seed, scale, out_dir)
    results.write_section(out_dir, "noise_sweep", per_seed=per_seed, summary=summary)
    return summary, claims


def plot(summary: pd.DataFrame, out_dir="reports"):
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for method, g in summary.groupby("method"):
        ax.errorbar(g.noise, g["mean"], yerr=g["std"].fillna(0), marker="o", capsize=3, label=method)
    ax.set_xlabel("coarse-label noise")
    ax.set_ylabel("mIoU on fine val (%)")
    ax.set_title("mIoU per method as coarse-label noise grows")
    legend_beside(ax)
    return save(fig, out_dir, "noise_sweep")
