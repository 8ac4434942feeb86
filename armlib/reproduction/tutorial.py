"""Helpers of ``notebooks/use_arm.ipynb``: ARM on a model you already have (torchvision, smp, your own).

The notebook trains one model with plain cross-entropy and one with :class:`armlib.ARMLoss`, from the same
initialisation on the same batches, on synthetic street scenes held in memory (no files), and shows ARM's
learned W(v) and its weight map on an image. Everything it computes lives here, so the notebook only calls
and plots; :func:`train_step` is the README's four lines, and the notebook prints its source.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import NamedTuple

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from armlib.arm import ARMLoss, sync_arm_gradients
from armlib.data.coarse import simulate_coarse
from armlib.data.labels import (CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, in_train_id_order, label_ids_to_train_ids,
                                rasterise_polygons, train_id_subset)
from armlib.data.scenes import SCENE_LABELS, render_scene, sample_scene
from armlib.metrics import ConfusionMatrix

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
CLASSES = in_train_id_order(SCENE_LABELS)   # the scenes' own 10 classes: no logits for classes never drawn
NUM_CLASSES = len(CLASSES)
_TO_CLASS = train_id_subset(CLASSES)        # Cityscapes train id → index into CLASSES


@dataclass(frozen=True)
class TutorialScale:
    """Size of the notebook's experiment: images, their size, the training length and batch."""

    n_train: int
    n_val: int
    size: tuple[int, int]    # (H, W) pixels
    iterations: int          # optimiser steps per model
    batch_size: int          # ≥ 2: torchvision's heads have BatchNorm layers
    lr: float


SCALES = {
    "smoke": TutorialScale(n_train=8, n_val=4, size=(64, 128), iterations=4, batch_size=4, lr=0.02),
    # ≤ 5 min on a laptop CPU for both models (README, measured on a 2-core VM). ARM's curve leaves its start
    # after ~150 steps here (shape change 0.07 at 100 steps, 0.32 at 150, 0.68 at 200 for seed 0); 400 steps give
    # the models time to segment something, so the weight map is a trained model's, at half the time budget.
    "quick": TutorialScale(n_train=96, n_val=24, size=(64, 128), iterations=400, batch_size=8, lr=0.02),
}


def scale_settings(scale: str) -> TutorialScale:
    """The :class:`TutorialScale` named ``scale``; ``ValueError`` names the valid choices."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {list(SCALES)}, got {scale!r}")
    return SCALES[scale]


class Scenes(NamedTuple):
    """In-memory synthetic street scenes: images N×3×H×W (float32, ImageNet-normalised), coarse and fine
    N×H×W int64 train ids (255 = unlabelled)."""

    images: Tensor
    coarse: Tensor
    fine: Tensor


def synthetic_scenes(n: int, size: tuple[int, int] = (64, 128), noise: float = 0.5, seed: int = 0,
                     split: int = 0) -> Scenes:
    """``n`` synthetic street scenes with fine and simulated coarse labels (:mod:`armlib.data.synth`'s generator,
    without writing files). ``split`` selects an independent stream (0 train, 1 val), as in the generator.

    Raises ``ValueError`` for ``n < 1`` or a side below 16 px.
    """
    if n < 1:
        raise ValueError(f"n must be ≥ 1, got {n}")
    height, width = (int(s) for s in size)
    if min(height, width) < 16:
        raise ValueError(f"size must be at least 16×16 pixels (H, W), got {size}")
    images, coarse, fine = [], [], []
    for index in range(n):
        scene_rng = np.random.default_rng([seed, split, index, 0])
        coarse_rng = np.random.default_rng([seed, split, index, 1])
        objects, shadows = sample_scene(scene_rng, height, width)
        images.append(torch.from_numpy(np.ascontiguousarray(render_scene(objects, shadows, scene_rng, height, width))))
        polygons = {"fine": [{"label": o.label, "polygon": [list(p) for p in o.polygon]} for o in objects],
                    "coarse": simulate_coarse([(o.label, o.polygon) for o in objects], (height, width), coarse_rng,
                                              noise)}
        for key, out in (("fine", fine), ("coarse", coarse)):
            ids = rasterise_polygons({"imgHeight": height, "imgWidth": width, "objects": polygons[key]}, "ids")
            out.append(torch.from_numpy(_TO_CLASS[label_ids_to_train_ids(np.asarray(ids))].astype(np.int64)))
    pixels = torch.stack(images).permute(0, 3, 1, 2).float() / 255.0   # N×H×W×3 uint8 → N×3×H×W in [0, 1]
    return Scenes((pixels - IMAGENET_MEAN) / IMAGENET_STD, torch.stack(coarse), torch.stack(fine))


def logits_of(output) -> Tensor:
    """The N×C×H×W logits of a model's output: torchvision's dict (``"out"``) or a plain tensor (smp)."""
    return output["out"] if isinstance(output, dict) else output


def train_step(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer, images: Tensor,
               masks: Tensor, isolated: bool = False) -> float:
    """One step of the README's lines; returns the loss. ``criterion`` is ARMLoss or plain cross-entropy;
    ``isolated``: the paper's first 5 % (ARM learns, the model sees the plain mean; ARMLoss only)."""
    extra = {"isolated": isolated} if isinstance(criterion, ARMLoss) else {}
    loss = criterion(logits_of(model(images)), masks, **extra)   # logits N×C×H×W, masks N×H×W (255 = ignore)
    optimizer.zero_grad()
    loss.backward()
    sync_arm_gradients(criterion)   # under DDP: ARM is not wrapped (a no-op here)
    optimizer.step()                # the model minimises the weighted loss, ARM maximises it
    return loss.item()


def fit(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer, images: Tensor, masks: Tensor,
        iterations: int, batch_size: int, seed: int = 0, scheduler=None, isolated_fraction: float = 0.05,
        desc: str = "training") -> dict:
    """Train ``iterations`` steps of :func:`train_step` on random batches (without replacement per epoch), with
    a per-step progress bar (rate and time left). The first ``isolated_fraction`` of the steps are the paper's
    isolated phase (§4.2).

    The batch order depends only on ``seed``, so two models fitted with the same seed see the same batches.

    Returns:
        ``{"loss": [float per step], "seconds": float}``.
    """
    if not 1 <= batch_size <= len(images):
        raise ValueError(f"batch_size must be in [1, {len(images)}] (the number of images), got {batch_size}")
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    losses = []
    model.train()
    start = time.perf_counter()
    for it in tqdm(range(iterations), desc=desc, unit="step", dynamic_ncols=True):
        if len(order) < batch_size:
            order = torch.randperm(len(images), generator=gen).tolist()
        batch, order = order[:batch_size], order[batch_size:]
        losses.append(train_step(model, criterion, optimizer, images[batch], masks[batch],
                                 isolated=it < isolated_fraction * iterations))
        if scheduler is not None:
            scheduler.step()
    return {"loss": losses, "seconds": time.perf_counter() - start}


@torch.no_grad()
def evaluate(model: nn.Module, images: Tensor, masks: Tensor, batch_size: int = 8) -> dict:
    """aAcc, mAcc, mIoU (%) and per-class IoU of ``model`` on ``images`` against ``masks`` (N×H×W)."""
    model.eval()
    cm = ConfusionMatrix(NUM_CLASSES)
    for i in range(0, len(images), batch_size):
        cm.update(logits_of(model(images[i:i + batch_size])).argmax(1), masks[i:i + batch_size])
    return cm.compute()


@torch.no_grad()
def paired_comparison(model_a: nn.Module, model_b: nn.Module, images: Tensor, masks: Tensor,
                      batch_size: int = 8) -> dict:
    """Pixel accuracy (%) of two models on each image (N×3×H×W, masks N×H×W, 255 ignored), paired by image.

    Both models see the same images, so the per-image difference b − a removes what makes one image harder than
    another; the mean difference gets a 95 % t interval over images (scipy.stats). One training seed per model:
    the interval is about these two trained models, not about the methods (that takes seeds; see the report).

    Returns:
        ``{"a": N accuracies, "b": N accuracies, "delta": b − a per image, "mean", "ci_low", "ci_high"}`` (floats
        and float64 arrays; the interval is NaN for fewer than two images).
    """
    from scipy import stats

    def accuracy(model):
        model.eval()
        out = []
        for i in range(0, len(images), batch_size):
            pred = logits_of(model(images[i:i + batch_size])).argmax(1)
            target = masks[i:i + batch_size]
            valid = target != 255
            out += ((pred == target) & valid).sum((1, 2)).div(valid.sum((1, 2)).clamp_min(1)).mul(100).tolist()
        return np.asarray(out, dtype=float)

    a, b = accuracy(model_a), accuracy(model_b)
    delta = b - a
    mean = float(delta.mean())
    if len(delta) > 1 and delta.std(ddof=1) > 0:
        low, high = stats.t.interval(0.95, len(delta) - 1, loc=mean, scale=stats.sem(delta))
    else:
        low = high = float("nan")
    return {"a": a, "b": b, "delta": delta, "mean": mean, "ci_low": float(low), "ci_high": float(high)}


def plot_paired(result: dict, names: tuple[str, str] = ("cross-entropy", "ARM")):
    """Each image's accuracy under both models, joined by a line (:func:`paired_comparison`'s result)."""
    fig, ax = plt.subplots(figsize=(4.5, 3))
    for a, b in zip(result["a"], result["b"]):
        ax.plot([0, 1], [a, b], color="0.6", lw=0.8, marker="o", ms=3)
    ax.set_xticks([0, 1], names)
    ax.set_xlim(-0.3, 1.3)
    ax.set_ylabel("pixel accuracy on fine labels (%)")
    ax.set_title(f"Paired by image: Δ {result['mean']:+.2f} points, 95 % CI [{result['ci_low']:+.2f}, "
                 f"{result['ci_high']:+.2f}]", fontsize=10)
    return fig


@torch.no_grad()
def weight_map(criterion: ARMLoss, model: nn.Module, images: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    """ARM's normalised weights and its input v for a batch (model in eval mode): two N×H×W float tensors.

    The weights are scaled by the number of valid pixels, so 1 is the plain mean's weight of every pixel.
    """
    model.eval()
    _, weights, v = criterion.forward_with_weights(logits_of(model(images)), masks)
    valid = masks != criterion.ignore_index
    return weights * valid.sum().clamp_min(1), v


def paint(image: Tensor, weights: Tensor, alpha: float = 0.6) -> np.ndarray:
    """An image (3×H×W, ImageNet-normalised) with a weight map (H×W) painted over it: H×W×3 float in [0, 1].

    Weights are shown relative to their maximum (magma colour map); zero-weight (ignored) pixels stay grey.
    """
    if image.dim() != 3 or weights.shape != image.shape[1:]:
        raise ValueError(f"image must be 3×H×W and weights H×W, got {tuple(image.shape)} and {tuple(weights.shape)}")
    rgb = (image.cpu() * IMAGENET_STD + IMAGENET_MEAN).clamp(0, 1).permute(1, 2, 0).numpy()
    w = weights.detach().cpu().float().numpy()
    heat = plt.get_cmap("magma")(w / max(float(w.max()), 1e-12))[..., :3]
    painted = (1 - alpha) * rgb + alpha * heat
    painted[w == 0] = 0.5 * rgb.mean(axis=-1, keepdims=True)[w == 0] + 0.25
    return painted


def colour_mask(mask: Tensor) -> np.ndarray:
    """N×H×W or H×W class indices (:data:`CLASSES`) → RGB floats in [0, 1] with Cityscapes' palette (255 black)."""
    lut = np.zeros((256, 3))
    lut[:NUM_CLASSES] = np.asarray([CITYSCAPES_PALETTE[CITYSCAPES_CLASSES.index(c)] for c in CLASSES]) / 255.0
    return lut[mask.cpu().numpy()]


def count_parameters(module: nn.Module) -> int:
    """The number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------------------- figures
def plot_training(histories: dict[str, dict]):
    """Loss per step of each fitted model (``{name: fit(...) result}``); returns the figure."""
    fig, ax = plt.subplots(figsize=(6, 3))
    for name, history in histories.items():
        ax.plot(range(1, len(history["loss"]) + 1), history["loss"], label=name, lw=1)
    ax.set(xlabel="step", ylabel="training loss", title="Training loss: the same model, the same batches")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    return fig


def plot_curves(curves: dict[str, tuple[Tensor, Tensor]]):
    """W(v) curves (``{label: (v, w)}``, e.g. :meth:`armlib.ARM.curve` at init and after training)."""
    fig, ax = plt.subplots(figsize=(4.5, 3))
    for label, (v, w) in curves.items():
        ax.plot(v.numpy(), (w / w.mean()).numpy(), label=label)
    ax.axhline(1.0, color="0.7", lw=0.8, zorder=0)
    ax.set(xlabel="v (−1: uncertain, +1: confident)", ylabel="W(v) / mean W",
           title="ARM's weight curve: where it started and where it went")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    return fig


def plot_weight_map(image: Tensor, coarse: Tensor, fine: Tensor, weights: Tensor):
    """One image: the picture, its coarse and fine labels, and ARM's weights painted on it."""
    fig, axes = plt.subplots(1, 4, figsize=(14, 2.6))
    panels = [((image * IMAGENET_STD + IMAGENET_MEAN).clamp(0, 1).permute(1, 2, 0).numpy(), "image"),
              (colour_mask(coarse), "coarse label (black: unlabelled)"), (colour_mask(fine), "fine label"),
              (paint(image, weights), "ARM's weight per pixel")]
    for ax, (picture, title) in zip(axes, panels):
        ax.imshow(picture)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    # The painted panel shows weights relative to their maximum (paint()); the bar gives that scale in numbers.
    top = max(float(weights.max()), 1e-12)
    scale = plt.cm.ScalarMappable(cmap="magma", norm=plt.Normalize(0, top))
    fig.colorbar(scale, ax=axes[3], fraction=0.046, pad=0.02, label="weight (1 = plain mean)")
    fig.suptitle("Where ARM puts the loss on one held-out image", y=1.02)
    return fig

