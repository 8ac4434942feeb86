"""Figures for the notebooks and the report (matplotlib/seaborn). Each function draws what a
:mod:`armlib.tables` function returned, saves ``<out_dir>/figures/<key>.png`` and returns the figure."""
from __future__ import annotations

import io

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from armlib.paths import atomic_write_bytes, resolve

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


def _save(fig, out_dir, key: str):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(resolve(out_dir) / "figures" / f"{key}.png", buf.getvalue())
    return fig


def _rgb(image: torch.Tensor) -> np.ndarray:
    """3×H×W image (uint8, or float normalised with ImageNet statistics) → H×W×3 in [0, 1]."""
    x = image.detach().cpu().numpy().transpose(1, 2, 0)
    if image.dtype == torch.uint8:
        return x / 255.0
    return np.clip(x * IMAGENET_STD + IMAGENET_MEAN, 0, 1)


def _colour(mask: torch.Tensor, palette) -> np.ndarray:
    m = mask.detach().cpu().numpy()
    lut = np.zeros((256, 3))
    lut[: len(palette)] = np.asarray(palette) / 255.0
    return lut[np.clip(m, 0, 255)]


def table_bars(summary: pd.DataFrame, key: str, out_dir="reports"):
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
    fig.suptitle(key)
    return _save(fig, out_dir, key)


def fine_vs_coarse(overview: dict, out_dir="reports"):
    """Fig. 1: image, fine and coarse labels of each sample, coloured by the dataset's palette (index = label)."""
    samples, palette = overview["samples"], overview["palette"]
    fig, axes = plt.subplots(len(samples), 3, figsize=(12, 2.2 * len(samples)), squeeze=False)
    for row, (image, coarse, fine) in zip(axes, samples):
        for ax, pic, title in zip(row, (_rgb(image), _colour(fine, palette), _colour(coarse, palette)),
                                  ("image", "fine", "coarse")):
            ax.imshow(pic)
            ax.set_title(title)
            ax.axis("off")
    return _save(fig, out_dir, "data")


def variance_maps(maps: dict, out_dir="reports"):
    """Fig. 4: low-variance pixels painted green (top) and the intensity 1 − v (bottom)."""
    n = len(maps["image"])
    fig, axes = plt.subplots(2, n, figsize=(3.2 * n, 3.6), squeeze=False)
    for i in range(n):
        rgb = _rgb(maps["image"][i])
        low = (maps["v"][i] <= maps["threshold"]).cpu().numpy()
        painted = rgb.copy()
        painted[low] = [0.0, 1.0, 0.0]
        axes[0, i].imshow(painted)
        axes[1, i].imshow((1 - maps["v"][i].cpu().numpy()) / 2, cmap="gray", vmin=0, vmax=1)
        for ax in axes[:, i]:
            ax.axis("off")
    axes[0, 0].set_title("lowest 5 % of v in green", loc="left")
    axes[1, 0].set_title("brightness = low variance", loc="left")
    return _save(fig, out_dir, "variance_maps")


def loss_vs_variance(curve: pd.DataFrame, out_dir="reports"):
    fig, ax = plt.subplots(figsize=(6, 3.5))
    c = curve[curve["count"] > 0]
    ax.bar(c.v_mid, c.mean_loss, width=(c.v_hi - c.v_lo) * 0.9)
    ax.set_xlabel("normalised variance v")
    ax.set_ylabel("mean CE loss")
    ax.set_title("Fig. 5: mean loss per variance bin")
    return _save(fig, out_dir, "loss_vs_variance")


def holder(toy: pd.DataFrame, curve: dict, out_dir="reports"):
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
    axes[1].plot(col.v, col.learned, label="ARM, L1 factor differentiated")
    axes[1].set_xlabel("v")
    axes[1].set_ylabel("W(v) / ‖W‖_p")
    axes[1].set_title("ARM by gradient ascent (dashed: Hölder solution)")
    axes[1].legend(fontsize=8)
    return _save(fig, out_dir, "holder")


def confidence_quadrants(quadrants: pd.DataFrame, out_dir="reports"):
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for ax, label in zip(axes, ("correct", "mislabelled")):
        q = quadrants[quadrants.label == label].pivot(index="loss", columns="confidence", values="share_of_label")
        sns.heatmap(q, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="viridis", ax=ax, cbar=False)
        ax.set_title(f"{label} pixels")
    return _save(fig, out_dir, "confidence_quadrants")


def learned_curve(learned: dict, out_dir="reports"):
    """ARM's W(v) per seed at the end (solid) and at initialisation (dashed), each divided by its mean (a
    uniform scale of W does nothing after normalisation), with the Hölder prediction where ARM moved (dotted)."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for i, s in enumerate(learned["per_seed"]):
        colour = sns.color_palette("deep")[i % 10]
        ax.plot(s["v"], s["w"] / s["w"].mean(), color=colour, label=f"ARM, seed {s['seed']}")
        ax.plot(s["v"], s["w_init"] / s["w_init"].mean(), "--", color=colour, lw=1,
                label=f"at init, seed {s['seed']}")
        if s["predicted"] is not None:
            pred = s["predicted"] / np.nanmean(s["predicted"])
            ax.plot(s["curve"].v_mid, pred, ":", color=colour, label=f"Hölder prediction, seed {s['seed']}")
    ax.set_xlabel("v (normalised variance)")
    ax.set_ylabel("W(v) / mean W")
    ax.legend(fontsize=7)
    return _save(fig, out_dir, "learned_curve")


def noise_sweep(summary: pd.DataFrame, out_dir="reports"):
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for method, g in summary.groupby("method"):
        ax.errorbar(g.noise, g["mean"], yerr=g["std"].fillna(0), marker="o", capsize=3, label=method)
    ax.set_xlabel("coarse-label noise")
    ax.set_ylabel("mIoU on fine val (%)")
    ax.legend()
    return _save(fig, out_dir, "noise_sweep")


def calibration_learning_curve(curves: pd.DataFrame, chosen_t: int | None, out_dir="reports"):
    """The base model's mIoU against T on fine and on coarse labels (``armlib calibrate``'s learning curve), the
    cost of coarse labels written at each T and the chosen T marked; saves ``figures/calibration_learning_curve.png``.

    Args:
        curves: ``learning_curve.csv`` as a frame: columns ``annotation`` ("fine" / "coarse"), ``T`` (SGD steps)
            and ``mIoU`` (%); one row per run (several seeds at a T are averaged).
        chosen_t: the chosen T, or None when no candidate met the criteria (then nothing is marked and the title
            says so).

    Raises:
        ValueError: a column above is missing (the message names it).
    """
    missing = [c for c in ("annotation", "T", "mIoU") if c not in curves.columns]
    if missing:
        raise ValueError(f"learning curve: missing column(s) {missing}; expected annotation, T, mIoU")
    mean = curves.groupby(["annotation", "T"])["mIoU"].mean().unstack("annotation")   # (T, annotation)
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    palette = sns.color_palette("deep")
    for k, annotation in enumerate(("fine", "coarse")):
        if annotation in mean.columns:
            ax.plot(mean.index, mean[annotation], "o-", color=palette[k], label=f"base model, {annotation} labels")
    if {"fine", "coarse"} <= set(mean.columns):
        # The cost is computed here, not taken from armlib.calibration.coarse_cost: plots and calibration are
        # sibling layers that may not import each other. tests/test_calibration_report.py pins the two equal.
        for t, fine, coarse in zip(mean.index, mean["fine"], mean["coarse"]):
            if pd.notna(fine) and pd.notna(coarse) and fine:
                ax.vlines(t, coarse, fine, color="grey", lw=4, alpha=0.3)   # the gap the cost measures
                ax.annotate(f"cost {100 * (fine - coarse) / fine:.1f} %", (t, (fine + coarse) / 2),
                            xytext=(6, 0), textcoords="offset points", fontsize=8, va="center",
                            bbox={"fc": "white", "ec": "none", "alpha": 0.8, "pad": 1})
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(mean.index), [str(int(t)) for t in mean.index])
    ax.minorticks_off()
    if len(mean.index):   # room right of the last T for its cost label
        ax.set_xlim(mean.index.min() / 2 ** 0.3, mean.index.max() * 2 ** 0.7)
    ax.set_ylim(0, None)   # from 0, as in table_bars: a cut axis makes a small cost of coarse labels look large
    ax.set_xlabel("T (SGD steps, log₂ axis)")
    ax.set_ylabel("mIoU (%)")
    if chosen_t is None:
        ax.set_title("Calibration: no candidate T met the criteria", fontsize=10)
    else:
        ax.axvline(chosen_t, color="k", ls="--", lw=1)
        ax.text(chosen_t, 1.01, f"chosen T = {chosen_t}", transform=ax.get_xaxis_transform(), fontsize=8,
                ha="center", va="bottom")   # above the axes: clear of the curves, the costs and the legend
        ax.set_title(f"Calibration: base model's learning curve, chosen T = {chosen_t}", fontsize=10, pad=14)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, out_dir, "calibration_learning_curve")


FOREST_LIMIT = 6.0   # mIoU points: the forest plot's x range (±); a comparison beyond it is drawn at the edge, labelled


def forest(rows: pd.DataFrame, out_dir="reports", key: str = "forest"):
    """Every tested comparison's paired Δ with its 95 % interval (thick), the Bonferroni interval where there is
    one (thin), and the paper's Δ carried to our base (◆), top to bottom in the order given; saves
    ``figures/<key>.png``.

    Args:
        rows: columns ``label``, ``delta``, ``ci_low``, ``ci_high``, ``ci_bonf_low``, ``ci_bonf_high`` (NaN: none),
            ``paper`` (NaN: none), ``verdict`` and optionally ``margin`` (an equivalence claim's ±margin, shaded);
            Δ in mIoU points. Values beyond ±:data:`FOREST_LIMIT` are
            clipped to the edge and printed beside it, so a 1-point effect stays visible next to a 60-point one.
    """
    colours = {"reproduced": "#070", "contradicted": "#b00"}
    import textwrap

    n = len(rows)
    fig, ax = plt.subplots(figsize=(7.2, 0.5 * n + 1.0))
    lim = FOREST_LIMIT

    def clip(x):
        return float(np.clip(x, -lim, lim))

    for i, r in enumerate(rows.itertuples()):
        y = n - 1 - i
        colour = colours.get(r.verdict, "#555")
        margin = getattr(r, "margin", np.nan)
        if np.isfinite(margin):   # an equivalence claim: its ±margin, which the 90 % interval must lie inside
            ax.fill_between([-margin, margin], y - 0.3, y + 0.3, color="#48c", alpha=0.15, lw=0)
        if np.isfinite(r.ci_bonf_low):
            ax.plot([clip(r.ci_bonf_low), clip(r.ci_bonf_high)], [y, y], color=colour, lw=1, alpha=0.7)
        ax.plot([clip(r.ci_low), clip(r.ci_high)], [y, y], color=colour, lw=3.5, solid_capstyle="butt")
        ax.plot(clip(r.delta), y, "o", color=colour, ms=5)
        if np.isfinite(r.paper):
            ax.plot(clip(r.paper), y, "D", mfc="none", mec="#c60", ms=6, mew=1.5)
        if abs(r.delta) > lim or (np.isfinite(r.paper) and abs(r.paper) > lim):
            text = f"Δ {r.delta:+.1f}" + (f", paper {r.paper:+.1f}" if np.isfinite(r.paper) else "")
            ax.annotate(text, (clip(r.delta), y), xytext=(-6 if r.delta > 0 else 6, 7), textcoords="offset points",
                        ha="right" if r.delta > 0 else "left", fontsize=7)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(n), [textwrap.fill(x, 40) for x in rows.label][::-1], fontsize=8)
    ax.set_xlim(-lim - 0.3, lim + 0.3)
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlabel("paired Δ, mIoU points (● ours, bar 95 % CI, thin Bonferroni CI; ◆ the paper's Δ at our base)",
                  fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, out_dir, key)
