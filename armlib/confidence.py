"""Per-pixel confidence indicators, each mapped onto [-1, 1] (-1: no confidence, +1: full confidence).

ARM's input is a normalised confidence ``v`` (paper Sec. 3.2, Fig. 5 caption). Every indicator here is an
affine (or, for log var, log-affine) map of its exact range onto [-1, 1] with the same orientation, so
one ARM can take any of them (Table 2 "input type"):

===========  ==========================================  ========================  ============================
kind         statistic of p (C classes)                  exact range               v
===========  ==========================================  ========================  ============================
``var``      var = (1/C) Σ_c (p_c − 1/C)²                [0, (C−1)/C²]             2C²/(C−1)·var − 1
``std``      sqrt(var)                                   [0, sqrt(C−1)/C]          2·std/std_max − 1
``logvar``   log(max(var, var_floor))                    [log var_floor, log var_max]  affine onto [-1, 1]
``entropy``  H = −Σ_c p_c log p_c                        [0, log C]                1 − 2H/log C
===========  ==========================================  ========================  ============================

The lower bound of each range is reached by the uniform prediction, the upper by a one-hot one (entropy
is flipped so that +1 is still "confident").

Paper typo (Eq. 3): it prints ``var = Σ_c (p_c − p̄)²`` but states the range [0, (C−1)/C²] and normalises
with 2C²/(C−1). Those bounds hold only for the *mean* over classes: a one-hot prediction has
Σ_c (p_c − 1/C)² = (C−1)/C, C times the stated maximum. We use the mean, so v is exactly in [-1, 1].

``logvar`` floor: var is 0 for a uniform prediction, where log diverges. We clamp var at
``LOGVAR_FLOOR_RATIO · var_max`` with ``LOGVAR_FLOOR_RATIO = 1e-6`` (six decades below a one-hot
prediction): predictions within 1e-6·var_max of uniform all map to v = -1.

For the KL loss (Table 4) ARM's input is the predicted uncertainty s of Eq. 1 instead of a statistic of
p; see :func:`uncertainty_indicator`.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

INDICATOR_KINDS = ("var", "std", "logvar", "entropy")
LOGVAR_FLOOR_RATIO = 1e-6
# Softmax outputs sum to 1 up to rounding; anything further off is not a probability map.
_SUM_TOLERANCE = {torch.float64: 1e-6, torch.float32: 1e-3, torch.float16: 2e-2, torch.bfloat16: 5e-2}


def check_probs(probs: Tensor, name: str = "probs") -> int:
    """Validate a N×C×H×W probability map; return C. Raises ``ValueError`` naming ``name``."""
    if not isinstance(probs, Tensor) or probs.dim() != 4:
        shape = tuple(probs.shape) if isinstance(probs, Tensor) else type(probs).__name__
        raise ValueError(f"{name} must be a 4-D tensor N×C×H×W of softmax probabilities, got {shape}")
    num_classes = probs.shape[1]
    if num_classes < 2:
        raise ValueError(f"{name} must have at least 2 classes along dim 1, got C={num_classes}")
    if not torch.isfinite(probs).all():
        raise ValueError(f"{name} contains NaN or Inf")
    tol = _SUM_TOLERANCE.get(probs.dtype, 1e-3)
    if probs.numel() and ((probs.min() < -tol) or (probs.sum(1) - 1).abs().max() > tol):
        raise ValueError(
            f"{name} must be probabilities (non-negative, summing to 1 over dim 1 within {tol}); "
            "pass softmax(logits, dim=1), not logits")
    return num_classes


def variance(probs: Tensor) -> Tensor:
    """Per-pixel variance of the class probabilities, mean over classes (see module docstring).

    Shape: N×C×H×W → N×1×H×W, range [0, (C−1)/C²].
    """
    num_classes = probs.shape[1]
    return (probs - 1.0 / num_classes).square().mean(dim=1, keepdim=True)


def normalized_variance(probs: Tensor) -> Tensor:
    """Normalised variance v = 2C²/(C−1)·var − 1 (paper Eq. 3 and Fig. 5), the input of ARM.

    Args:
        probs: N×C×H×W softmax probabilities (C ≥ 2).

    Returns:
        N×1×H×W tensor in [-1, 1]: -1 for a uniform prediction, +1 for a one-hot one.
        ``var`` is the mean over classes, not the sum Eq. 3 prints (see module docstring).
    """
    num_classes = check_probs(probs)
    scale = 2.0 * num_classes**2 / (num_classes - 1)
    return (scale * variance(probs) - 1.0).clamp(-1.0, 1.0)


def indicator(probs: Tensor, kind: str = "var") -> Tensor:
    """Confidence indicator ``kind`` of a probability map, mapped onto [-1, 1] (Table 2 "input type").

    Args:
        probs: N×C×H×W softmax probabilities.
        kind: one of ``"var"``, ``"std"``, ``"logvar"``, ``"entropy"`` (bounds in the module docstring).

    Returns:
        N×1×H×W tensor in [-1, 1], +1 = most confident.
    """
    if kind not in INDICATOR_KINDS:
        raise ValueError(f"kind must be one of {INDICATOR_KINDS}, got {kind!r}")
    if kind == "var":
        return normalized_variance(probs)
    num_classes = check_probs(probs)
    var_max = (num_classes - 1) / num_classes**2
    if kind == "std":
        v = 2.0 * variance(probs).sqrt() / math.sqrt(var_max) - 1.0
    elif kind == "logvar":
        log_floor = math.log(LOGVAR_FLOOR_RATIO * var_max)
        log_var = variance(probs).clamp_min(LOGVAR_FLOOR_RATIO * var_max).log()
        v = 2.0 * (log_var - log_floor) / (math.log(var_max) - log_floor) - 1.0
    else:  # entropy; xlogy gives 0·log 0 = 0 for one-hot predictions
        entropy = -torch.special.xlogy(probs, probs).sum(dim=1, keepdim=True)
        v = 1.0 - 2.0 * entropy / math.log(num_classes)
    return v.clamp(-1.0, 1.0)


def uncertainty_indicator(log_s: Tensor) -> Tensor:
    """ARM's input for the KL loss (Table 4): the predicted uncertainty s of Eq. 1 mapped onto [-1, 1].

    The paper says only that ARM's input is "the s term in KL loss". We map s ∈ (0, ∞) by
    v = 2·exp(−s/2) − 1: s → 0 (certain) gives +1, s → ∞ gives -1. The choice is not arbitrary:
    at the optimum ŝ = −2 log p_gt (Eq. 2), exp(−ŝ/2) = p_gt, so v is the ground-truth probability the
    uncertainty head implies, rescaled from [0, 1] to [-1, 1], like the other indicators.

    Args:
        log_s: N×1×H×W predicted log s (any real).

    Returns:
        N×1×H×W tensor in [-1, 1].
    """
    if not isinstance(log_s, Tensor) or log_s.dim() != 4 or log_s.shape[1] != 1:
        shape = tuple(log_s.shape) if isinstance(log_s, Tensor) else type(log_s).__name__
        raise ValueError(f"log_s must be a N×1×H×W tensor, got {shape}")
    if not torch.isfinite(log_s).all():
        raise ValueError("log_s contains NaN or Inf")
    # exp(-s/2) with s = exp(log_s); clamp keeps exp finite for absurd log_s.
    return (2.0 * torch.exp(-0.5 * log_s.clamp(max=30.0).exp()) - 1.0).clamp(-1.0, 1.0)
