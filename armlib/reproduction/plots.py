"""Figures for the notebooks and the report (matplotlib/seaborn). Each function draws what a
:mod:`armlib.reproduction.notebook` function returned, saves ``<out_dir>/figures/<key>.png`` and returns the figure.

Every figure has a title in words (not a section key), is saved at 2× resolution (:data:`DPI`) and shown at 2× in
a notebook (:func:`sharp_inline_figures`, run on import), and keeps its legend off the data (beside the axes when
it has more than a few entries)."""
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
DPI = 200   # 2× matplotlib's 100 dpi: sharp on high-DPI screens, in the report and in a notebook alike


def sharp_inline_figures() -> None:
    """Show a notebook's inline figures at 2× (IPython's "retina" format); nothing outside IPython."""
    try:
        from IPython import get_ipython
        from matplotlib_inline.backend_inline import set_matplotlib_formats
    except ImportError:
        return
    if get_ipython() is not None:
        set_matplotlib_formats("retina")


sharp_inline_figures()


def legend_beside(ax, **kwargs):
    """The legend outside the axes, to their right: never over the data, however many entries."""
    return ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, **kwargs)


def not_run_figure(title: str, why: str):
    """A figure that says in words why its section measured nothing (e.g. the analysed run diverged)."""
    fig, ax = plt.subplots(figsize=(6, 1.6))
    ax.axis("off")
    ax.text(0.5, 0.5, f"not run: {why}", ha="center", va="center", wrap=True, fontsize=10)
    ax.set_title(title)
    return fig


def save(fig, out_dir, key: str):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    atomic_write_bytes(resolve(out_dir) / "figures" / f"{key}.png", buf.getvalue())
    return fig


def rgb(image: torch.Tensor) -> np.ndarray:
    """3×H×W image (uint8, or float normalised with ImageNet statistics) → H×W×3 in [0, 1]."""
    x = image.detach().cpu().numpy().transpose(1, 2, 0)
    if image.dtype == torch.uint8:
        return x / 255.0
    return np.clip(x * IMAGENET_STD + IMAGENET_MEAN, 0, 1)


def colour(mask: torch.Tensor, palette) -> np.ndarray:
    m = mask.detach().cpu().numpy()
    lut = np.zeros((256, 3))
    lut[: len(palette)] = np.asarray(palette) / 255.0
    return lut[np.clip(m, 0, 255)]


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
        # The cost is computed here, not taken from armlib.reproduction.calibration.coarse_cost: plots and calibration are
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
    return save(fig, out_dir, "calibration_learning_curve")


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
    return save(fig, out_dir, key)
