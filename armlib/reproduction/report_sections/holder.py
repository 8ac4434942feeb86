"""Eq. 10–13 — the Hölder toy (closed form vs solver) and ARM fitted to the measured loss curve.

One report section: its manifest entry is ``sections.get_section('holder')``; its notebook
``notebooks/holder.ipynb`` calls :func:`measure` (runs → ``results/holder*.csv``)
and :func:`plot` (→ ``figures/holder.png``).
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from armlib import holder
from armlib.reproduction import results, verdict_rules, verdicts
from armlib.reproduction.plots import legend_beside, save
from armlib.reproduction.report_sections._runs import measured_loss_curve


def measure(scale="quick", seeds=None, data_root="data", device="auto", out_dir="reports", runs_dir="runs",
            jobs=None) -> tuple[pd.DataFrame, dict, list[dict]]:
    """Eq. 10–13: closed form vs solver on the paper's toy; ARM trained on a loss curve L(v)."""
    rows = []
    for p in (1.0, 1.5, 2.0, 3.0):
        closed = holder.closed_form(holder.PAPER_LOSSES, p)
        solved = holder.solve(holder.PAPER_LOSSES, p)
        gap = float((closed - solved).abs().max())
        rows.append({"p": p, **{f"closed w{i + 1}": float(x) for i, x in enumerate(closed)},
                     **{f"solver w{i + 1}": float(x) for i, x in enumerate(solved)}, "gap": gap})
    toy = pd.DataFrame(rows)
    # The measured Fig. 5 curve, computed here rather than read from the Fig. 5 notebook's output, so the
    # result does not depend on the order in which notebooks run.
    measured, why = measured_loss_curve(scale, seeds, data_root, device, runs_dir, jobs)
    measured = measured[measured["count"] >= 100]
    source, loss_curve = "measured (CE model, validation images)", measured["mean_loss"].to_numpy()
    # a base run that learned nothing has no loss curve: the ARM claims are marked not run, the toy still stands
    fits = {} if why else {p: holder.fit_arm(loss_curve, p=p) for p in (2.0, 3.0)}
    collapsed = None if why else holder.fit_arm(loss_curve, p=2.0, l1_grad=True)
    rows = [{"ARM trained with": f"L{p:g} norm, L1 factor detached", "gap to closed form": f.gap}
            for p, f in fits.items()]
    if collapsed is not None:
        rows.append({"ARM trained with": "L2 norm, L1 factor differentiated", "gap to closed form": collapsed.gap})
    gaps = pd.DataFrame(rows, columns=["ARM trained with", "gap to closed form"])
    measured = {"toy_gap": float(toy.gap.max()), "arm_gap": max((f.gap for f in fits.values()), default=math.nan),
                "l1_differentiated_gap": collapsed.gap if collapsed is not None else math.nan}
    claims = verdict_rules.threshold_claims_frame(verdicts.thresholds("holder", measured, why=why))
    results.write_section(out_dir, "holder", summary=toy, claims=claims)
    return toy, {"fits": fits, "collapsed": collapsed, "gaps": gaps, "source": source}, claims


def plot(toy: pd.DataFrame, curve: dict, out_dir="reports"):
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    x = np.arange(3)
    for k, p in enumerate(toy.p):
        row = toy[toy.p == p].iloc[0]
        axes[0].bar(x + k * 0.2, [row[f"closed w{i + 1}"] for i in range(3)], width=0.2, label=f"p = {p:g}")
        axes[0].plot(x + k * 0.2, [row[f"solver w{i + 1}"] for i in range(3)], "k.", ms=6)
    axes[0].set_xticks(x + 0.3, ["l=1.2", "l=0.6", "l=0.1"])
    axes[0].set_title("Eq. 10: closed form (bars) vs solver (dots)")
    axes[0].legend()
    for p, fit in curve["fits"].items():
        axes[1].plot(fit.v, fit.closed_form, "k--", lw=1)
        axes[1].plot(fit.v, fit.learned, label=f"ARM, L{p:g}")
    col = curve["collapsed"]
    if col is not None:   # None: the base run learned nothing, so there was no loss curve to fit ARM on
        axes[1].plot(col.v, col.learned, label="ARM, L1 factor differentiated")
    axes[1].set_xlabel("v")
    axes[1].set_ylabel("W(v) / ‖W‖_p")
    axes[1].set_title("ARM by gradient ascent (dashed: Hölder solution)")
    legend_beside(axes[1], fontsize=8)
    return save(fig, out_dir, "holder")
