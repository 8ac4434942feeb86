"""Measurements behind the paper's figures, as pure functions of per-pixel tensors.

- Fig. 4: where low-variance pixels lie (:func:`boundary_mask`, :func:`low_variance_boundary_share`).
- Fig. 5: mean loss per normalised-variance bin (:func:`loss_per_variance_bin`).
- Fig. 2: correct / mislabelled pixels split by loss and by confidence (:func:`confidence_quadrants`).
- ARM's learned curve against the Hölder prediction from the measured loss (:func:`holder_prediction`).

Inputs are flat or N×H×W tensors gathered by :func:`collect_pixels` from a trained run.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from armlib.confidence import normalized_variance
from armlib.losses import IGNORE_INDEX, cross_entropy_map

LOW_VARIANCE_QUANTILE = 0.05   # Fig. 4 paints "low-variance pixels": we take the lowest 5 % of v
BOUNDARY_BAND_PX = 2           # a pixel within 2 px of a class change counts as "on a boundary"


def boundary_mask(labels: Tensor, band_px: int = BOUNDARY_BAND_PX, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Pixels within ``band_px`` (Chebyshev distance) of a change of class in ``labels``.

    labels: N×H×W integer map (ignored pixels count as their own region, so the edge of an unlabelled
    area is a boundary too). Returns N×H×W bool. A max-pool of the label map differs from a min-pool
    exactly where two labels meet inside the window: one pass, no per-pixel loop.
    """
    x = labels.float().unsqueeze(1)
    k = 2 * band_px + 1
    hi = F.max_pool2d(x, k, stride=1, padding=band_px)
    lo = -F.max_pool2d(-x, k, stride=1, padding=band_px)
    # Padding with -inf/+inf (max_pool's implicit padding) never creates a fake boundary at the border.
    return (hi != lo).squeeze(1)


def low_variance_boundary_share(v: Tensor, labels: Tensor, band_px: int = BOUNDARY_BAND_PX,
                                quantile: float = LOW_VARIANCE_QUANTILE,
                                ignore_index: int = IGNORE_INDEX) -> dict:
    """Share of low-variance pixels on class boundaries, vs the share of all pixels on boundaries.

    v: N×H×W normalised variance; labels: N×H×W ground truth (fine). Only labelled pixels count.
    Returns {"low_var_on_boundary", "all_on_boundary", "threshold", "n_low"}; the paper's claim is that
    the first is large ("almost all") and far above the second.
    """
    valid = labels != ignore_index
    on_boundary = boundary_mask(labels, band_px, ignore_index) & valid
    vv = v[valid]
    if vv.numel() == 0:
        raise ValueError("labels has no labelled pixel")
    threshold = torch.quantile(vv.float()[torch.randperm(vv.numel(), generator=torch.Generator().manual_seed(0))[
        :1_000_000]], quantile).item()   # quantile() refuses > 16M elements; a 1M sample is exact enough
    low = (v <= threshold) & valid
    return {"low_var_on_boundary": (low & on_boundary).sum().item() / max(1, low.sum().item()),
            "all_on_boundary": on_boundary.sum().item() / valid.sum().item(),
            "threshold": threshold, "n_low": int(low.sum())}


def loss_per_variance_bin(v: Tensor, loss: Tensor, bins: int = 20) -> pd.DataFrame:
    """Fig. 5: mean per-pixel loss in ``bins`` equal-width bins of v over [-1, 1].

    v, loss: flat tensors of the valid pixels. Returns columns v_lo, v_hi, v_mid, count, mean_loss,
    sum_loss (sum_loss is Eq. 5's L(v); Fig. 5 plots the mean).
    """
    v, loss = v.flatten().double(), loss.flatten().double()
    edges = torch.linspace(-1, 1, bins + 1, dtype=torch.float64)
    idx = torch.bucketize(v.clamp(-1, 1), edges[1:-1], right=False)
    count = torch.bincount(idx, minlength=bins).double()
    total = torch.bincount(idx, weights=loss, minlength=bins)
    mean = torch.where(count > 0, total / count.clamp_min(1), torch.tensor(math.nan, dtype=torch.float64))
    return pd.DataFrame({"v_lo": edges[:-1].numpy(), "v_hi": edges[1:].numpy(),
                         "v_mid": ((edges[:-1] + edges[1:]) / 2).numpy(), "count": count.numpy().astype(int),
                         "mean_loss": mean.numpy(), "sum_loss": total.numpy()})


def falling_trend(curve: pd.DataFrame, min_count: int = 100) -> float:
    """Spearman rank correlation of mean loss with v over bins holding ≥ ``min_count`` pixels
    (negative = the loss falls as confidence rises, Eq. 8)."""
    c = curve[curve["count"] >= min_count]
    return float(c["v_mid"].rank().corr(c["mean_loss"].rank())) if len(c) > 2 else math.nan


def holder_prediction(curve: pd.DataFrame, p: float = 2.0) -> np.ndarray:
    """The weight curve ARM should converge to, from a measured loss-per-bin curve.

    With the L_p norm taken over pixels, maximising Σ_b W_b·L_b (L_b the bin's summed loss, Eq. 5)
    under Σ_b n_b·W_b^p = 1 gives W_b ∝ (L_b/n_b)^{1/(p−1)}: the Hölder solution of Eq. 13 is a power of
    the *mean* loss per bin, which is why Fig. 5 plots means. Returned scaled to a maximum of 1.
    """
    if p <= 1:
        raise ValueError(f"p must be > 1 for a smooth Hölder solution, got {p}")
    w = np.power(curve["mean_loss"].to_numpy(dtype=float), 1.0 / (p - 1.0))
    return w / np.nanmax(w)


def confidence_quadrants(v: Tensor, loss: Tensor, mislabelled: Tensor) -> pd.DataFrame:
    """Fig. 2 measured: pixels split at the median loss and at the median confidence.

    v, loss, mislabelled: flat tensors over the pixels labelled in both annotations (v: confidence,
    loss: w.r.t. the training label, mislabelled: training label ≠ fine label). Returns one row per
    (label, loss level, confidence level) with count and share of that label's pixels, plus
    ``mislabelled_rate`` = share of mislabelled pixels in the (loss, confidence) cell.
    """
    v, loss, bad = v.flatten(), loss.flatten(), mislabelled.flatten().bool()
    high_loss = loss > loss.median()
    high_conf = v > v.median()
    rows = []
    for lab_name, lab in (("correct", ~bad), ("mislabelled", bad)):
        n_lab = max(1, int(lab.sum()))
        for loss_name, lmask in (("low loss", ~high_loss), ("high loss", high_loss)):
            for conf_name, cmask in (("low confidence", ~high_conf), ("high confidence", high_conf)):
                cell = lmask & cmask
                n = int((cell & lab).sum())
                rows.append({"label": lab_name, "loss": loss_name, "confidence": conf_name, "count": n,
                             "share_of_label": n / n_lab,
                             "mislabelled_rate": int((cell & bad).sum()) / max(1, int(cell.sum()))})
    return pd.DataFrame(rows)


@torch.no_grad()
def pixel_statistics(logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX) -> dict[str, Tensor]:
    """Per-pixel v (normalised variance), CE loss and prediction of a batch: each N×H×W."""
    probs = torch.softmax(logits.float(), dim=1)
    return {"v": normalized_variance(probs).squeeze(1),
            "loss": cross_entropy_map(logits.float(), target, ignore_index),
            "pred": probs.argmax(1)}
