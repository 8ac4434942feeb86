"""Fig. 4 — where low-variance pixels lie, painted on validation images and measured.

One report section: its manifest entry is ``sections.get_section('variance_maps')``; its notebook
``notebooks/variance_maps.ipynb`` calls :func:`measure` (runs → ``results/variance_maps*.csv``)
and :func:`plot` (→ ``figures/variance_maps.png``).
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from armlib.reproduction import analysis, results, verdict_rules, verdicts
from armlib.reproduction.plots import not_run_figure, rgb, save
from armlib.reproduction.report_sections._runs import ANALYSIS_IMAGES, FIGURE_IMAGES, base_run, ensure, pixels, unusable
from armlib.reproduction.sections import get_scale


def measure(scale="quick", seeds=None, data_root="data", device="auto", out_dir="reports", runs_dir="runs",
            jobs=None) -> tuple[dict, list[dict]]:
    """Fig. 4: low-variance pixels painted on validation images, and where they lie, measured."""
    sc = get_scale(scale)
    run = base_run(sc, runs_dir, seeds, data_root)
    ensure(run, sc, data_root, device, jobs)
    why = unusable(run)
    if why:   # a base run that learned nothing: the claim is not run, the page says why
        shares = pd.DataFrame(columns=["pixels", "share on boundaries"])
        claims = verdict_rules.threshold_claims_frame(verdicts.thresholds("variance_maps", {}, why=why))
        results.write_section(out_dir, "variance_maps", summary=shares, claims=claims)
        return {"image": [], "why": why, "shares": shares}, claims
    px = pixels(run, "val", device, ANALYSIS_IMAGES)
    share = analysis.low_variance_boundary_share(px["v"], px["target"])
    shares = pd.DataFrame([{"pixels": "lowest 5 % of v", "share on boundaries": share["low_var_on_boundary"]},
                           {"pixels": "all labelled", "share on boundaries": share["all_on_boundary"]}])
    claims = verdict_rules.threshold_claims_frame(verdicts.thresholds("variance_maps", share))
    results.write_section(out_dir, "variance_maps", summary=shares, claims=claims)
    maps = {"image": px["image"][:FIGURE_IMAGES], "v": px["v"][:FIGURE_IMAGES],
            "target": px["target"][:FIGURE_IMAGES], "threshold": share["threshold"], "shares": shares}
    return maps, claims


def plot(maps: dict, out_dir="reports"):
    """Fig. 4: low-variance pixels painted green (top) and the intensity 1 − v (bottom)."""
    n = len(maps["image"])
    if not n:
        return save(not_run_figure("Where the model is confident", maps["why"]), out_dir, "variance_maps")
    fig, axes = plt.subplots(2, n, figsize=(3.2 * n, 3.6), squeeze=False)
    for i in range(n):
        image = rgb(maps["image"][i])
        low = (maps["v"][i] <= maps["threshold"]).cpu().numpy()
        painted = image.copy()
        painted[low] = [0.0, 1.0, 0.0]
        axes[0, i].imshow(painted)
        axes[1, i].imshow((1 - maps["v"][i].cpu().numpy()) / 2, cmap="gray", vmin=0, vmax=1)
        for ax in axes[:, i]:
            ax.axis("off")
    axes[0, 0].set_title("lowest 5 % of v in green", loc="left")
    axes[1, 0].set_title("brightness = low variance", loc="left")
    fig.suptitle("Where the model is confident: the variance of its softmax per pixel")
    return save(fig, out_dir, "variance_maps")
