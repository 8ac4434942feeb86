"""Per-pixel segmentation losses: CE, GCE, the KL (uncertainty) loss of Eq. 1, and OHEM.

Every ``*_map`` function returns an N×H×W map that is 0 at ignored pixels, so it can be reweighted by
ARM (:class:`armlib.arm.ARMLoss`) or averaged by :func:`mean_over_valid` (the base model's loss).

Shapes: logits N×C×H×W (any float dtype), target N×H×W integer labels in [0, C) or ``ignore_index``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = 255
GCE_Q = 0.1          # Table 4: q grid-searched by the paper
OHEM_THRESH = 0.7    # mmsegmentation / OCR [35] defaults (Table 5)
OHEM_MIN_KEPT = 100_000


def check_logits_target(logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX) -> None:
    """Raise ``ValueError`` naming the argument when shapes, dtypes or label values are wrong."""
    if not isinstance(logits, Tensor) or logits.dim() != 4:
        raise ValueError(f"logits must be a N×C×H×W tensor, got {_shape(logits)}")
    if not isinstance(target, Tensor) or target.dim() != 3:
        raise ValueError(f"target must be a N×H×W tensor of labels, got {_shape(target)}")
    n, c, h, w = logits.shape
    if target.shape != (n, h, w):
        raise ValueError(f"target shape {tuple(target.shape)} does not match logits N×H×W {(n, h, w)}")
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer labels, got dtype {target.dtype}")
    if not torch.isfinite(logits).all():
        raise ValueError("logits contain NaN or Inf")
    bad = (target != ignore_index) & ((target < 0) | (target >= c))
    if bad.any():
        values = torch.unique(target[bad])[:5].tolist()
        raise ValueError(f"target has labels {values} outside [0, {c}) that are not ignore_index={ignore_index}")


def at_least_float32(x: Tensor) -> Tensor:
    """Upcast half/bfloat16 (autocast outputs) to float32; keep float32/float64 as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _shape(x) -> object:
    return tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__


def cross_entropy_map(logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX,
                      validate: bool = True) -> Tensor:
    """Per-pixel cross-entropy −log p_y, 0 at ignored pixels. N×C×H×W, N×H×W → N×H×W (float32+)."""
    if validate:
        check_logits_target(logits, target, ignore_index)
    return F.cross_entropy(at_least_float32(logits), target.long(), ignore_index=ignore_index, reduction="none")


def _log_prob_of_target(logits: Tensor, target: Tensor, ignore_index: int) -> tuple[Tensor, Tensor]:
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target)).long()
    log_p = F.log_softmax(at_least_float32(logits), dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)
    return log_p, valid


def gce_map(logits: Tensor, target: Tensor, q: float = GCE_Q, ignore_index: int = IGNORE_INDEX,
            validate: bool = True) -> Tensor:
    """Generalised cross-entropy (Zhang & Sabuncu 2018): L_q = (1 − p_y^q)/q, 0 at ignored pixels.

    q → 0 recovers CE, q = 1 the MAE; the paper uses q = 0.1 (Table 4). 1 − p_y^q is computed as
    −expm1(q·log p_y): no underflow when p_y is tiny, no cancellation when q·log p_y is small.
    """
    if not 0.0 < q <= 1.0:
        raise ValueError(f"q must be in (0, 1], got {q!r}")
    if validate:
        check_logits_target(logits, target, ignore_index)
    log_p, valid = _log_prob_of_target(logits, target, ignore_index)
    return torch.where(valid, -torch.expm1(q * log_p) / q, torch.zeros_like(log_p))


def kl_loss_map(logits: Tensor, log_s: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX,
                validate: bool = True) -> Tensor:
    """The KL loss of Eq. 1: CE/s + ½ log s per pixel, with the head predicting log s; 0 at ignored.

    Predicting log s keeps s > 0 without a constraint. Its minimum over s is at ŝ = 2·CE (Eq. 2).

    Shapes: logits N×C×H×W, log_s N×1×H×W, target N×H×W → N×H×W.
    """
    if validate:
        check_logits_target(logits, target, ignore_index)
        if log_s.shape != (logits.shape[0], 1, *logits.shape[2:]):
            raise ValueError(f"log_s must be N×1×H×W {(logits.shape[0], 1, *logits.shape[2:])}, "
                             f"got {_shape(log_s)}")
    ce = cross_entropy_map(logits, target, ignore_index, validate=False)
    log_s = at_least_float32(log_s).squeeze(1)
    return torch.where(target != ignore_index, torch.exp(-log_s) * ce + 0.5 * log_s, torch.zeros_like(ce))


def mean_over_valid(loss_map: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Mean of a per-pixel loss over non-ignored pixels; 0 (with a graph) when none is valid."""
    return loss_map.sum() / (target != ignore_index).sum().clamp_min(1)


@torch.no_grad()
def ohem_mask(logits: Tensor, target: Tensor, thresh: float = OHEM_THRESH,
              min_kept: int = OHEM_MIN_KEPT, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Pixels OHEM keeps, with mmsegmentation's ``OHEMPixelSampler`` semantics.

    Among valid pixels, keep those whose ground-truth probability is below
    max(thresh, the (min_kept·N)-th smallest ground-truth probability of the batch), i.e. at least
    about min_kept hard pixels per image and every pixel predicted with p_y < thresh.

    Returns: N×H×W bool.
    """
    log_p, valid = _log_prob_of_target(logits, target, ignore_index)
    prob = log_p.exp()
    valid_prob = prob[valid]
    if valid_prob.numel() == 0:
        return valid
    batch_kept = min(min_kept * target.shape[0], valid_prob.numel() - 1)
    # kthvalue is 1-based: the element at sorted index batch_kept, as mmseg's sort()[batch_kept].
    min_threshold = valid_prob.kthvalue(batch_kept + 1).values
    threshold = torch.clamp(min_threshold, min=thresh)
    return valid & (prob < threshold)


def ohem_cross_entropy(logits: Tensor, target: Tensor, thresh: float = OHEM_THRESH,
                       min_kept: int = OHEM_MIN_KEPT, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """OHEM loss: per-pixel CE averaged over the pixels :func:`ohem_mask` keeps (scalar).

    Averaging over kept pixels is OCR's [35] ``FSOhemCELoss`` convention, whose hyper-parameters the
    paper adopts (mmsegmentation instead divides by all pixels, which only rescales the lr).
    """
    ce = cross_entropy_map(logits, target, ignore_index)
    kept = ohem_mask(logits, target, thresh, min_kept, ignore_index)
    return (ce * kept).sum() / kept.sum().clamp_min(1)
