"""ARM's learned W(v) per seed, whether it moved and suppresses, and the Hölder prediction (not in
the paper).

One report section: its manifest entry is ``sections.get_section('learned_curve')``; its notebook
``notebooks/learned_curve.ipynb`` calls :func:`measure` (runs → ``results/learned_curve*.csv``)
and :func:`plot` (→ ``figures/learned_curve.png``).
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from armlib import arm
from armlib.reproduction import analysis, executors, experiments, results, sections, stats, verdict_rules, verdicts
from armlib.reproduction.plots import legend_beside, save
from armlib.reproduction.report_sections._runs import train_loss_curve
from armlib.runs import is_failed, read_record
from armlib.reproduction.sections import get_scale


def measure(scale="quick", seeds=None, data_root="data", device="auto", out_dir="reports", runs_dir="runs",
            jobs=None) -> tuple[dict, pd.DataFrame]:
    """ARM's W(v) per seed at init and at the end; did it move, does it suppress confident pixels, and does it
    follow the Hölder prediction from the same model's measured loss curve (seeds where it moved only)."""
    sc, section = get_scale(scale), sections.get_section("learned_curve")
    runs = [r for r in experiments.plan("table2", sc, runs_dir, seeds, data_root) if r.row == "norm_l2"]
    executors.execute(runs, sc, data_root=data_root, device=device, jobs=jobs, desc="learned_curve")
    per_seed, rows, claims = [], [], []
    for r in runs:
        record = read_record(r.out)
        if is_failed(record.get("status")) or "arm_curve" not in record:
            rows.append({"seed": r.seed, "status": record.get("status", "no curve")})
            continue
        v = np.asarray(record["arm_curve"]["v"])
        w = np.asarray(record["arm_curve"]["w"])
        w0 = np.asarray(record["arm_curve_init"]["w"])
        change = arm.curve_shape_change(w0, w)
        suppression = arm.curve_suppression(w)
        has_moved = section.threshold("curve_moved").holds(change)
        corr = math.nan
        predicted = None
        curve = None
        # a curve that never left its initialisation says nothing about where ARM converges
        if has_moved:
            curve = train_loss_curve(r, device)
            predicted = analysis.holder_prediction(curve, p=2.0)
            learned_at_bins = np.interp(curve["v_mid"], v, w)
            ok = (curve["count"].to_numpy() >= 100) & np.isfinite(predicted)
            corr = float(np.corrcoef(learned_at_bins[ok], predicted[ok])[0, 1]) if ok.sum() > 2 else math.nan
        seed_claims = verdicts.thresholds("learned_curve", {"shape_change": change, "suppression": suppression,
                                                            "holder_correlation": corr}, seed=r.seed)
        holds = {t.id: c["verdict"] == stats.HOLDS for t, c in zip(section.thresholds, seed_claims)}
        moved, suppresses = holds["curve_moved"], holds["curve_suppresses"]
        per_seed.append({"seed": r.seed, "v": v, "w": w, "w_init": w0, "curve": curve, "predicted": predicted})
        rows.append({"seed": r.seed, "status": "ok", "W(-1) init": w0[0], "W(0) init": w0[len(w0) // 2],
                     "W(+1) init": w0[-1], "W(-1)": w[0], "W(0)": w[len(w) // 2], "W(+1)": w[-1],
                     "shape change": change, "suppression": suppression, "moved": moved,
                     "suppresses": suppresses, "corr with Hölder prediction": corr})
        claims += seed_claims
    summary = pd.DataFrame(rows)
    claims = verdict_rules.threshold_claims_frame(claims)
    results.write_section(out_dir, "learned_curve", summary=summary, claims=claims)
    return {"summary": summary, "per_seed": per_seed,
            "thresholds": sections.get_section("learned_curve").criteria}, claims


def plot(learned: dict, out_dir="reports"):
    """ARM's W(v) per seed at the end (solid) and at initialisation (dashed), each divided by its mean (a
    uniform scale of W does nothing after normalisation), with the Hölder prediction where ARM moved (dotted)."""
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    handles = []   # one entry per seed (its colour) and one per line style: 5 seeds × 3 curves read at a glance
    for i, s in enumerate(learned["per_seed"]):
        colour = sns.color_palette("deep")[i % 10]
        ax.plot(s["v"], s["w"] / s["w"].mean(), color=colour)
        ax.plot(s["v"], s["w_init"] / s["w_init"].mean(), "--", color=colour, lw=1)
        if s["predicted"] is not None:
            pred = s["predicted"] / np.nanmean(s["predicted"])
            ax.plot(s["curve"].v_mid, pred, ":", color=colour)
        handles.append(Line2D([], [], color=colour, label=f"seed {s['seed']}"))
    handles += [Line2D([], [], color="k", ls=ls, lw=lw, label=label) for ls, lw, label in
                (("-", 1.5, "learned (end)"), ("--", 1, "at initialisation"), (":", 1.5, "Hölder prediction"))]
    ax.set_xlabel("v (normalised variance; +1 confident)")
    ax.set_ylabel("W(v) / mean W")
    ax.set_title("ARM's learned weight curve W(v), per seed")
    legend_beside(ax, handles=handles, fontsize=8)
    return save(fig, out_dir, "learned_curve")
