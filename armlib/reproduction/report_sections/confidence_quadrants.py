"""Fig. 2 — loss vs confidence as a sample divider, measured on training pixels with both labels.

One report section: its manifest entry is ``sections.get_section('confidence_quadrants')``; its notebook
``notebooks/confidence_quadrants.ipynb`` calls :func:`measure` (runs → ``results/confidence_quadrants*.csv``)
and :func:`plot` (→ ``figures/confidence_quadrants.png``).
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from armlib.reproduction import analysis, results, verdict_rules, verdicts
from armlib.reproduction.plots import not_run_figure, save
from armlib.reproduction.report_sections._runs import ANALYSIS_IMAGES, base_run, ensure, pixels, unusable
from armlib.reproduction.sections import get_scale


def measure(scale="quick", seeds=None, data_root="data", device="auto", out_dir="reports",
            runs_dir="runs", jobs=None) -> tuple[pd.DataFrame, list[dict]]:
    """Fig. 2 measured on training images with both labels: coarse (trained on) and fine (truth)."""
    sc = get_scale(scale)
    run = base_run(sc, runs_dir, seeds, data_root)
    ensure(run, sc, data_root, device, jobs)
    why = unusable(run)
    if why:   # a base run that learned nothing: the claim is not run, the page says why
        quadrants = pd.DataFrame(columns=["label", "loss", "confidence", "count", "share_of_label",
                                          "mislabelled_rate"])
        quadrants.attrs["why"] = why   # for plot()
        claims = verdict_rules.threshold_claims_frame(verdicts.thresholds("confidence_quadrants", {}, why=why))
        results.write_section(out_dir, "confidence_quadrants", summary=quadrants, claims=claims)
        return quadrants, claims
    px = pixels(run, "train", device, ANALYSIS_IMAGES, with_fine=True)
    both = (px["target"] != 255) & (px["fine"] != 255)
    quadrants = analysis.confidence_quadrants(px["v"][both], px["loss"][both], (px["target"] != px["fine"])[both])
    q = quadrants.set_index(["label", "loss", "confidence"])["mislabelled_rate"]
    hc = q[("correct", "high loss", "high confidence")]
    lc = q[("correct", "high loss", "low confidence")]
    claims = verdict_rules.threshold_claims_frame(verdicts.thresholds("confidence_quadrants",
                                                              {"mislabelled_rate_difference": hc - lc}))
    results.write_section(out_dir, "confidence_quadrants", summary=quadrants, claims=claims)
    return quadrants, claims


def plot(quadrants: pd.DataFrame, out_dir="reports"):
    if not len(quadrants):
        return save(not_run_figure("Loss and confidence of training pixels", quadrants.attrs.get("why", "")),
                    out_dir, "confidence_quadrants")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for ax, label in zip(axes, ("correct", "mislabelled")):
        q = quadrants[quadrants.label == label].pivot(index="loss", columns="confidence", values="share_of_label")
        sns.heatmap(q, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="viridis", ax=ax, cbar=False)
        ax.set_title(f"{label} pixels")
    fig.suptitle("Share of pixels by loss and confidence, correctly labelled vs mislabelled")
    return save(fig, out_dir, "confidence_quadrants")
