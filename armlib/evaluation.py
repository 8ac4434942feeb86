"""Inference and evaluation: single-scale, the paper's TTA (multi-scale + flip) and sliding-window inference.

Conventions of mmsegmentation's ``EncoderDecoder`` (the paper follows OCR [35] for its TTA, Table 6):

* every augmented view (a scale, optionally flipped) is inferred, its logits resized bilinearly
  (``align_corners=False``) back to the original size, turned into softmax probabilities, flipped back; the
  probabilities of all views are averaged and the prediction is their argmax;
* a scale factor s resizes an H×W image to round(s·H)×round(s·W); s = 1 does not resample at all, so
  ``scales=(1.0,), flip=False`` is exactly single-scale inference;
* sliding window (``slide_inference``): windows of ``window`` (H, W) every ``stride`` pixels, the last one
  in each direction flush with the border, logits of overlapping windows averaged; an image no larger than
  the window is inferred whole.

Metrics accumulate one :class:`armlib.metrics.ConfusionMatrix` over the dataset, summed over DDP ranks.
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from armlib.losses import IGNORE_INDEX, at_least_float32
from armlib.metrics import NOTHING_TO_SCORE, ConfusionMatrix
from armlib.models import input_dtype

__all__ = ["predict_logits", "predict_probs", "evaluate_model", "default_stride"]


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel (evaluating through DDP would sync buffers per call and
    hang when ranks hold different numbers of images)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def predict_logits(model: nn.Module, images: Tensor) -> Tensor:
    """Main-head logits of ``model`` for a batch: N×3×H×W → N×C×H×W (``"out"`` of a dict output)."""
    out = model(images)
    return out["out"] if isinstance(out, dict) else out


def default_stride(window: Sequence[int]) -> tuple[int, int]:
    """Sliding-window stride when none is given: 2/3 of the window (mmseg's Cityscapes 769→513 ratio)."""
    return tuple(max(1, (2 * int(w)) // 3) for w in window)


def _slide_logits(model: nn.Module, images: Tensor, window: Sequence[int], stride: Sequence[int]) -> Tensor:
    """Sliding-window logits, N×3×H×W → N×C×H×W (mmseg ``slide_inference`` without padding)."""
    (h_crop, w_crop), (h_stride, w_stride) = window, stride
    _, _, height, width = images.shape
    h_grids = max(height - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(width - w_crop + w_stride - 1, 0) // w_stride + 1
    logits = count = None
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y2 = min(h_idx * h_stride + h_crop, height)
            x2 = min(w_idx * w_stride + w_crop, width)
            y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)
            crop = at_least_float32(predict_logits(model, images[:, :, y1:y2, x1:x2]))
            if logits is None:
                logits = crop.new_zeros(images.shape[0], crop.shape[1], height, width)
                count = crop.new_zeros(1, 1, height, width)
            logits[:, :, y1:y2, x1:x2] += crop
            count[:, :, y1:y2, x1:x2] += 1
    if h_grids * w_grids == 1:
        return logits  # one window covering the image: exactly whole-image inference
    return logits / count


def _view_logits(model: nn.Module, images: Tensor, window: Sequence[int] | None,
                 stride: Sequence[int] | None) -> Tensor:
    if window is None:
        return at_least_float32(predict_logits(model, images))
    return _slide_logits(model, images, window, stride or default_stride(window))


@torch.no_grad()
def predict_probs(model: nn.Module, images: Tensor, scales: Iterable[float] = (1.0,), flip: bool = False,
                  window: Sequence[int] | None = None, stride: Sequence[int] | None = None,
                  amp: bool = False) -> Tensor:
    """Softmax probabilities averaged over the test-time views (module docstring).

    Args:
        model: returns logits or a dict with ``"out"`` logits at its input size; used as it is (call
            ``model.eval()`` first).
        images: N×3×H×W normalised images on the model's device.
        scales: resize factors; the paper's TTA uses (0.5, 0.75, 1.0, 1.25, 1.5, 1.75).
        flip: also infer each scale horizontally flipped.
        window: sliding-window crop (H, W), or None for whole-image inference.
        stride: sliding-window stride (H, W); default :func:`default_stride`.
        amp: bf16 autocast (CUDA only); probabilities are float32 either way (float64 for a float64 model).

    Returns:
        N×C×H×W float32 (or float64) probabilities at the input size.
    """
    model = _unwrap(model)
    height, width = images.shape[-2:]
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if amp and images.is_cuda
                else contextlib.nullcontext())
    total, views = None, 0
    for scale in scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = images if size == (height, width) else F.interpolate(
            images, size=size, mode="bilinear", align_corners=False)
        for flipped in ((False, True) if flip else (False,)):
            view = scaled.flip(-1) if flipped else scaled
            with autocast:
                logits = _view_logits(model, view, window, stride)
            if logits.shape[-2:] != (height, width):
                logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
            probs = torch.softmax(logits, dim=1)
            probs = probs.flip(-1) if flipped else probs
            total = probs if total is None else total + probs
            views += 1
    return total if views == 1 else total / views


def _shard(dataset: Dataset) -> Dataset:
    """This rank's share of an evaluation set: items rank, rank + world, … (no padding, no duplicates)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return dataset
    return Subset(dataset, range(dist.get_rank(), len(dataset), dist.get_world_size()))


@torch.no_grad()
def evaluate_model(model: nn.Module, data: Dataset | DataLoader, num_classes: int,
                   scales: Iterable[float] = (1.0,), flip: bool = False, window: Sequence[int] | None = None,
                   stride: Sequence[int] | None = None, device: str | torch.device | None = None,
                   batch_size: int = 1, num_workers: int = 0, amp: bool = False, progress: bool = False) -> dict:
    """aAcc / mAcc / mIoU / per-class IoU and Acc of ``model`` on a dataset (see :func:`predict_probs`).

    Args:
        model: a segmentation model (DDP-wrapped or not); put in eval mode for the call, then restored.
        data: a dataset of ``(image 3×H×W, mask H×W, ...)`` items (sharded over DDP ranks here), or a
            ``DataLoader`` used as given (shard it yourself under DDP).
        num_classes: C of the confusion matrix.
        scales, flip, window, stride, amp: as in :func:`predict_probs`.
        device: where to infer; default the model's device.
        batch_size, num_workers: of the DataLoader built for a dataset (batch 1 for variable-size images).
        progress: show a tqdm bar.

    Returns:
        ``ConfusionMatrix.compute()`` of all ranks together: {"aAcc", "mAcc", "mIoU", "IoU", "Acc", "pixels",
        "status"}; ``status`` is ``armlib.metrics.NOTHING_TO_SCORE`` when no pixel was labelled (the metrics are
        then NaN, which alone a diverged model would also give), and a ``RuntimeWarning`` says so.
    """
    model = _unwrap(model)
    if device is None:
        device = next(model.parameters()).device
    loader = data if isinstance(data, DataLoader) else DataLoader(
        _shard(data), batch_size=batch_size, shuffle=False, num_workers=num_workers)
    cm = ConfusionMatrix(num_classes, device=device)
    images_seen = 0
    was_training = model.training
    model.eval()
    try:
        batches = loader
        if progress:
            from tqdm.auto import tqdm
            batches = tqdm(loader, desc="eval", leave=False)
        for batch in batches:
            images, masks = batch[0], batch[1]
            images = images.as_subclass(Tensor).to(device, input_dtype(model), non_blocking=True)
            masks = masks.as_subclass(Tensor).to(device, non_blocking=True)
            probs = predict_probs(model, images, scales, flip, window, stride, amp)
            cm.update(probs.argmax(1), masks)
            images_seen += images.shape[0]
    finally:
        model.train(was_training)
    cm.reduce_from_all_processes()
    scores = cm.compute()
    if scores["status"] == NOTHING_TO_SCORE:
        what = ("no image" if images_seen == 0
                else f"{images_seen} image(s) here, every label pixel {IGNORE_INDEX} (ignored)")
        warnings.warn(f"evaluate_model: nothing to score in the data ({what}), so aAcc, mAcc and mIoU are NaN; "
                      "expected labelled pixels of the evaluated classes", RuntimeWarning, stacklevel=2)
    return scores
