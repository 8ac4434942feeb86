"""Fig. 5 — mean loss per normalised-variance bin of the CE-trained model.

One report section: its manifest entry is ``sections.get_section('loss_vs_variance')``; its notebook
``notebooks/loss_vs_variance.ipynb`` calls :func:`measure` (runs → ``results/loss_vs_variance*.csv``)
and :func:`plot` (→ ``figures/loss_vs_variance.png``).
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from armlib.reproduction import analysis, results, verdict_rules, verdicts
from armlib.reproduction.plots import save
from armlib.reproduction.report_sections._runs import measured_loss_curve


def measure(scale="quick", seeds=None, data_root="data", device="auto", out_dir="reports",
            runs_dir="runs", jobs=None) -> tuple[pd.DataFrame, list[dict]]:
    """Fig. 5: mean CE per normalised-variance bin on the validation images of the CE-trained model."""
    curve, why = measured_loss_curve(scale, seeds, data_root, device, runs_dir, jobs)
    claims = verdict_rules.threshold_claims_frame(verdicts.thresholds(
        "loss_vs_variance", {"spearman_rho": analysis.falling_trend(curve)}, why=why))
    results.write_section(out_dir, "loss_vs_variance", summary=curve, claims=claims)
    return curve, claims


def plot(curve: pd.DataFrame, out_dir="reports"):
    fig, ax = plt.subplots(figsize=(6, 3.5))
    c = curve[curve["count"] > 0]
    ax.bar(c.v_mid, c.mean_loss, width=(c.v_hi - c.v_lo) * 0.9)
    ax.set_xlabel("normalised variance v")
    ax.set_ylabel("mean CE loss")
    ax.set_title("Fig. 5: mean loss per variance bin")
    return save(fig, out_dir, "loss_vs_variance")
