"""Segmentation metrics over a dataset-level confusion matrix: aAcc, mAcc, mIoU, per-class IoU.

Conventions of mmsegmentation and the official Cityscapes script: intersections and unions are
accumulated over the whole dataset (not averaged per image); label 255 is ignored; a class absent from
both ground truth and prediction has IoU NaN (and a class absent from the ground truth has Acc NaN) and
is left out of the means. All values are percentages.

A dataset with no labelled pixel (every label 255, or no image) has nothing to score: its metrics are NaN
like a diverged run's, so ``compute()`` also returns ``"pixels"`` (labelled pixels scored) and ``"status"``:
``"ok"``, or :data:`NOTHING_TO_SCORE` — the value a record or table can tell apart. (``armlib train``
refuses such a val set before training: :func:`armlib.data.checks.check_val_set`.)
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor

from armlib.losses import IGNORE_INDEX

NOTHING_TO_SCORE = "no_labelled_pixels"


class ConfusionMatrix:
    """Accumulates a C×C confusion matrix (rows: ground truth, columns: prediction).

    ``update`` per batch, ``reduce_from_all_processes`` once under DDP, then ``compute``.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, device: str | torch.device = "cpu"):
        if num_classes < 1:
            raise ValueError(f"num_classes must be ≥ 1, got {num_classes}")
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """pred, target: integer tensors of one shape (e.g. N×H×W); target may hold ``ignore_index``."""
        if pred.shape != target.shape:
            raise ValueError(f"pred shape {tuple(pred.shape)} must equal target shape {tuple(target.shape)}")
        valid = target != self.ignore_index
        t, p = target[valid].long(), pred[valid].long()
        c = self.num_classes
        for name, x in (("target", t), ("pred", p)):
            if x.numel() and (x.min() < 0 or x.max() >= c):
                raise ValueError(f"{name} has labels outside [0, {c}) other than ignore_index={self.ignore_index}")
        self.mat += torch.bincount(t * c + p, minlength=c * c).reshape(c, c).to(self.mat.device)

    def reduce_from_all_processes(self) -> None:
        """Sum the matrices of all DDP ranks (no-op outside torch.distributed)."""
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.mat)

    def compute(self) -> dict:
        """{"aAcc", "mAcc", "mIoU": float %, "IoU", "Acc": per-class lists (NaN = absent), "pixels": int,
        "status": "ok" or NOTHING_TO_SCORE}."""
        mat = self.mat.double().cpu()
        intersect = mat.diag()
        area_label, area_pred = mat.sum(1), mat.sum(0)
        union = area_label + area_pred - intersect
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        iou = torch.where(union > 0, intersect / union.clamp_min(1), nan) * 100
        acc = torch.where(area_label > 0, intersect / area_label.clamp_min(1), nan) * 100
        total = mat.sum()
        return {
            "aAcc": float(intersect.sum() / total * 100) if total > 0 else math.nan,
            "mAcc": _nanmean(acc),
            "mIoU": _nanmean(iou),
            "IoU": iou.tolist(),
            "Acc": acc.tolist(),
            "pixels": int(total),
            "status": "ok" if total > 0 else NOTHING_TO_SCORE,
        }


def _nanmean(x: Tensor) -> float:
    keep = ~torch.isnan(x)
    return float(x[keep].mean()) if keep.any() else math.nan


def resolved_mask(class_names, unresolved=()) -> Tensor:
    """Bool tensor over ``class_names``: True for the classes a mean is taken over (not in ``unresolved``).

    Raises ``ValueError`` naming the config key when a name of ``unresolved`` is not one of ``class_names``.
    """
    names = list(class_names)
    unknown = [name for name in unresolved if name not in names]
    if unknown:
        raise ValueError(f"unresolved_classes {unknown} are not classes of this dataset (expected names from {names})")
    return torch.tensor([name not in unresolved for name in names], dtype=torch.bool)


def reported_metrics(metrics: dict, class_names, unresolved=()) -> dict:
    """aAcc, and mAcc / mIoU over the classes not in ``unresolved``, of a :meth:`ConfusionMatrix.compute` result.

    ``mIoU_all_classes`` keeps the mean over every class, so leaving classes out is visible. Raises
    ``ValueError`` naming a class of ``unresolved`` that is not in ``class_names``.
    """
    keep = resolved_mask(class_names, unresolved)
    per_class = {k: torch.tensor(metrics[k], dtype=torch.float64) for k in ("Acc", "IoU")}
    return {"aAcc": metrics["aAcc"], "mAcc": _nanmean(per_class["Acc"][keep]), "mIoU": _nanmean(per_class["IoU"][keep]),
            "mIoU_all_classes": metrics["mIoU"]}


def evaluate(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> dict:
    """One-shot :class:`ConfusionMatrix`: metrics of a prediction against its ground truth."""
    cm = ConfusionMatrix(num_classes, ignore_index, device=pred.device)
    cm.update(pred, target)
    return cm.compute()
