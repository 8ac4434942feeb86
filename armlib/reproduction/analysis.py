"""Measurements behind the paper's figures, as pure functions of per-pixel tensors.

- Fig. 4: where low-variance pixels lie (:func:`boundary_mask`, :func:`low_variance_boundary_share`).
- Fig. 5: mean loss per normalised-variance bin (:func:`loss_per_variance_bin`).
- Fig. 2: correct / mislabelled pixels split by loss and by confidence (:func:`confidence_quadrants`).
- ARM's learned curve against the Hölder prediction from the measured loss (:func:`holder_prediction`).

Inputs are flat or N×H×W tensors gathered from a trained run by :func:`iterate_predictions`; the finished-run
access (:func:`load_run`, :func:`evaluate_run`, :func:`iterate_predictions`) sits above the trainer.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from armlib.config import TrainConfig, load_config
from armlib.confidence import normalized_variance
from armlib.data.loading import build_datasets, class_names, dataset_for, prepare_data
from armlib.evaluation import evaluate_model
from armlib.losses import IGNORE_INDEX, at_least_float32, cross_entropy_map
from armlib.models import input_dtype
from armlib.paths import resolve
from armlib.errors import UsageError
from armlib.runs import (CHECKPOINT, FAILED_STATUSES, RECORD, STATUS_OK, file_digest, read_checkpoint,
                         read_record)
from armlib.training.step import ModelFn, build_criterion, build_model_for

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
    threshold = torch.quantile(at_least_float32(vv)[torch.randperm(vv.numel(), generator=torch.Generator().manual_seed(0))[
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
    logits = at_least_float32(logits)   # float64 logits of a cpu_float64 run stay float64
    probs = torch.softmax(logits, dim=1)
    return {"v": normalized_variance(probs).squeeze(1),
            "loss": cross_entropy_map(logits, target, ignore_index),
            "pred": probs.argmax(1)}


# -- finished runs ---------------------------------------------------------------------------------------

def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class RunNotUsable(UsageError):
    """A run folder whose checkpoint must not be analysed: no record (unfinished), a failed status, or a checkpoint
    that is not the one the record was computed from."""


def usable_checkpoint(out_dir: str | os.PathLike) -> tuple[dict, Path]:
    """The record of a finished run and the path of the checkpoint it was computed from, after checking that
    the two belong together.

    A run that diverged after its last checkpoint kept that earlier checkpoint: figures drawn from it were from
    a model the record does not describe. So the record must say "ok", and the checkpoint must be the record's:
    the same SHA-256 (``record["checkpoint"]["sha256"]``, written by the trainer) or, for records written before
    the trainer stored it, the same iteration as the record's ``iterations``.

    Raises:
        FileNotFoundError: no record or no checkpoint in ``out_dir``.
        RunNotUsable: the record's status is not "ok" (it names the status and why), or the checkpoint does not
            match the record (it says to retrain the run or restore the checkpoint).
        armlib.runs.DamagedRecord, armlib.runs.CorruptCheckpoint: an unreadable file (named).
    """
    folder = resolve(out_dir)
    record = read_record(folder)
    status = record.get("status", STATUS_OK)
    if status != STATUS_OK:
        why = FAILED_STATUSES.get(status, "")
        raise RunNotUsable(f"{folder}: the run's status is {status!r} ({why}); it learned nothing to analyse "
                           f"({record.get('message', 'see its record.json')})")
    path = folder / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; expected a run folder written by armlib.train.train")
    tied = record.get("checkpoint")
    if tied is not None:
        digest = file_digest(path)
        if digest != tied.get("sha256"):
            raise RunNotUsable(f"{path} is not the checkpoint {folder / RECORD} was computed from (SHA-256 "
                               f"{digest[:12]}…, the record says {str(tied.get('sha256'))[:12]}…); retrain the run "
                               "(delete the folder) or restore its checkpoint")
    return record, path


def load_run(out_dir: str | os.PathLike, *, model_fn: ModelFn | None = None,
             device: str | torch.device = "cpu") -> tuple[nn.Module, nn.Module | None, TrainConfig]:
    """Reload a finished run's checkpoint: (model in eval mode, ARM / Linear ARM or None, config).

    Only a run whose record says "ok" and whose checkpoint is the record's is loaded (:func:`usable_checkpoint`,
    whose errors this raises).
    """
    record, path = usable_checkpoint(out_dir)
    device = _resolve_device(device)
    ckpt = read_checkpoint(path, map_location=device)
    if "checkpoint" not in record and ckpt["iteration"] != record.get("iterations", ckpt["iteration"]):
        raise RunNotUsable(f"{path} is from iteration {ckpt['iteration']} but {resolve(out_dir) / RECORD} from "
                           f"iteration {record['iterations']}; retrain the run (delete the folder) or restore its "
                           "checkpoint")
    cfg = TrainConfig.from_dict(ckpt["config"])
    num_classes = len(class_names(cfg))
    dtype = cfg.float_dtype(device.type)
    model = build_model_for(cfg, num_classes, model_fn).to(device, dtype)
    model.load_state_dict(ckpt["model"])
    model.eval()
    criterion = build_criterion(cfg)
    weight_fn = None
    if criterion is not None:
        weight_fn = criterion.weight_fn.to(device, dtype)
        weight_fn.load_state_dict(ckpt["arm"])
        weight_fn.eval()
    return model, weight_fn, cfg


def evaluate_run(out_dir: str | os.PathLike, scales=None, flip: bool | None = None, window=None, stride=None,
                 device: str | torch.device = "auto", data_root: str | None = None) -> dict:
    """Evaluate a finished run on its validation set (its own eval settings unless given): metrics dict."""
    device = _resolve_device(device)
    model, _, cfg = load_run(out_dir, device=device)
    if data_root is not None:
        cfg = cfg.replace(data_root=str(data_root))
    _, val_set, num_classes = build_datasets(cfg, prepare_data(cfg))
    return evaluate_model(model, val_set, num_classes,
                          scales=cfg.eval_scales if scales is None else tuple(scales),
                          flip=cfg.eval_flip if flip is None else flip,
                          window=window if window is not None else cfg.eval_window,
                          stride=stride if stride is not None else cfg.eval_stride,
                          device=device, batch_size=cfg.eval_batch_size, amp=cfg.amp and device.type == "cuda")


@torch.no_grad()
def iterate_predictions(out_dir: str | os.PathLike, split: str = "val", limit: int | None = None,
                        device: str | torch.device = "auto", with_fine: bool = False, data_root: str | None = None
                        ) -> Iterator[tuple[Tensor, Tensor, Tensor | None, Tensor]]:
    """Single-scale predictions of a finished run, one image at a time, for analysis notebooks.

    ``split="train"`` reads the training images with the run's training labels (e.g. coarse), without
    augmentation; ``with_fine`` also yields their fine labels (coarse Cityscapes/synth training sets only).

    Yields:
        (image 1×3×H×W normalised, target 1×H×W, fine 1×H×W or None, logits 1×C×H×W float32), on the CPU.
    """
    from armlib.data import eval_transform

    device = _resolve_device(device)
    model, _, cfg = load_run(out_dir, device=device)
    if data_root is not None:
        cfg = cfg.replace(data_root=str(data_root))
    root = prepare_data(cfg)
    fine = with_fine and split == "train" and cfg.dataset != "ade20k" and cfg.annotation == "coarse"
    dataset = dataset_for(cfg, root, split, transform=eval_transform(), with_fine=fine)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    for index in range(count):
        item = dataset[index]
        image = item[0].as_subclass(Tensor).unsqueeze(0)
        logits = model(image.to(device, input_dtype(model)))
        logits = at_least_float32(logits["out"] if isinstance(logits, dict) else logits).cpu()
        fine_mask = item[2].as_subclass(Tensor).unsqueeze(0) if fine else None
        yield image, item[1].as_subclass(Tensor).unsqueeze(0), fine_mask, logits


def training_dataset_for_figures(config_path: str | os.PathLike, data_root: str | os.PathLike = "data",
                                 overrides: list[str] | tuple[str, ...] = ()) -> tuple[Dataset, list[dict]]:
    """Fig. 1 material: the training set of a config with raw images and both labels, and label statistics.

    Returns:
        (dataset of (image uint8 3×H×W, coarse mask, fine mask) — or (image, mask) when the training labels
        are not coarse —, rows of coarse-vs-fine statistics: [{"split", "coverage", "agreement", ...}]).
    """
    cfg = load_config(config_path, [f"data_root={data_root}", *overrides])
    root = prepare_data(cfg)
    coarse = cfg.dataset != "ade20k" and cfg.annotation == "coarse"
    dataset = dataset_for(cfg, root, "train", with_fine=coarse)
    rows: list[dict] = []
    marker = root / "stats.json"
    if cfg.dataset == "synth" and marker.exists():
        stats = json.loads(marker.read_text()).get("stats", {})
        rows = [{"split": split, **values} for split, values in stats.items()]
    elif coarse:
        from armlib.data import cityscapes_coarse_stats

        rows = [{"split": "train", **cityscapes_coarse_stats(root)}]
    return dataset, rows

