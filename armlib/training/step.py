"""The loss of one batch and one SGD step (the module docstring of :mod:`armlib.train` gives the recipe).

Pure of run state: a notebook or test calls :func:`compute_loss` / :func:`train_one_step` on its own tensors;
:mod:`armlib.train` calls them in its loop.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from armlib.arm import ARM, ARMLoss, LinearARM, sync_arm_gradients
from armlib.config import TrainConfig
from armlib.confidence import uncertainty_indicator
from armlib.fused import FusedARMLoss
from armlib.losses import (IGNORE_INDEX, at_least_float32, check_logits_target, cross_entropy_map, gce_map, kl_loss_map,
                           mean_over_valid, ohem_cross_entropy)

__all__ = ["build_criterion", "build_model_for", "compute_loss", "initial_curve", "train_one_step",
           "weight_statistics", "CURVE_POINTS", "ModelFn"]

CURVE_POINTS = 101  # W(v) is recorded on this many values of v over [-1, 1]
ModelFn = Callable[[TrainConfig, int], nn.Module]


def initialised_in(cfg: TrainConfig):
    """Parameters created inside are initialised in ``cfg.float_dtype("cpu")``: float64 for ``cpu_float64``, so
    a float64 run starts from the same weights on every CPU (:func:`armlib.models.default_dtype`)."""
    from armlib.models import default_dtype

    return default_dtype(cfg.float_dtype("cpu"))


def build_model_for(cfg: TrainConfig, num_classes: int, model_fn: ModelFn | None = None) -> nn.Module:
    """The segmentation model of ``cfg`` (``model_fn(cfg, num_classes)`` when given: tests use stand-ins), on the
    CPU, initialised in float64 for ``cpu_float64`` (:func:`initialised_in`)."""
    with initialised_in(cfg):
        if model_fn is not None:
            return model_fn(cfg, num_classes)
        from armlib.models import build_model

        return build_model(cfg.model, num_classes, output_stride=cfg.output_stride,
                           backbone_weights=cfg.backbone_weights, uncertainty=cfg.loss == "kl",
                           aux=cfg.aux_weight > 0, matmul_resize=cfg.matmul_resize)


def build_criterion(cfg: TrainConfig) -> ARMLoss | None:
    """ARMLoss with ARM or Linear ARM for ``cfg.reweight``, None for "none". ARM is initialised from
    ``seed + 1`` (so adding ARM leaves the model's initialisation and dropout stream unchanged), on the CPU, in
    float64 for ``cpu_float64`` (:func:`initialised_in`)."""
    if cfg.reweight == "none":
        return None
    if cfg.reweight == "linear":
        weight_fn = LinearARM(cfg.linear_k, cfg.linear_b)
    else:
        with torch.random.fork_rng(devices=[]), initialised_in(cfg):
            torch.manual_seed(cfg.seed + 1)
            weight_fn = ARM()
    # The fused path has ARMLoss's exact semantics (tests/test_fused.py) and reads the logits once for CE and
    # the variance; it falls back to the reference path itself for other indicators and detach=False.
    return FusedARMLoss(weight_fn, p=cfg.norm_p, indicator=cfg.indicator, detach=cfg.detach)


def initial_curve(cfg: TrainConfig, points: int = CURVE_POINTS) -> Tensor:
    """ARM's (or Linear ARM's) W(v) at initialisation on ``points`` values of v over [−1, 1]: the curve every
    learned one is compared with ("did ARM move?"). Rebuilt from the seed, so a resumed run gets it too."""
    criterion = build_criterion(cfg)
    if criterion is None:
        raise ValueError(f"reweight={cfg.reweight!r} has no weight curve")
    return criterion.weight_fn.curve(points)[1]


def compute_loss(outputs: dict[str, Tensor], target: Tensor, cfg: TrainConfig, criterion: ARMLoss | None = None,
                 isolated: bool = False, validate: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
    """The training loss of one batch (module docstring): main head (reweighted or not) + aux_weight · aux.

    Args:
        outputs: the model's dict: "out" N×C×H×W, optional "aux" N×C×H×W and "log_s" N×1×H×W (kl).
        target: N×H×W labels, 255 = ignore.
        cfg: loss settings (loss, gce_q, ohem_*, aux_weight).
        criterion: :func:`build_criterion`'s ARMLoss, or None for the plain mean.
        isolated: the isolated phase (first isolated_fraction·T): model sees the plain mean.
        validate: check shapes, labels and finiteness of the logits (the trainer does it on its first step).

    Returns:
        (loss: float32 scalar, parts: {"main", "aux" scalars; "weights", "v" N×H×W detached when reweighted}).
    """
    logits = outputs["out"]
    parts: dict[str, Tensor] = {}
    if cfg.loss == "ohem":
        if criterion is not None:
            raise ValueError("loss='ohem' cannot be reweighted (reweight must be 'none')")
        main = ohem_cross_entropy(logits, target, cfg.ohem_thresh, cfg.ohem_min_kept)
    else:
        confidence = None
        if cfg.loss == "ce" and criterion is not None:
            if validate:
                check_logits_target(logits, target)
            loss_map = None   # the fused criterion computes CE in the same pass as the confidence
        elif cfg.loss == "ce":
            loss_map = cross_entropy_map(logits, target, validate=validate)
        elif cfg.loss == "gce":
            loss_map = gce_map(logits, target, cfg.gce_q, validate=validate)
        else:  # kl
            if "log_s" not in outputs:
                raise ValueError("loss='kl' needs a model with an uncertainty output 'log_s' (uncertainty=True)")
            loss_map = kl_loss_map(logits, outputs["log_s"], target, validate=validate)
            confidence = uncertainty_indicator(at_least_float32(outputs["log_s"])) if criterion is not None else None
        if criterion is None:
            main = mean_over_valid(loss_map, target)
        else:
            main, parts["weights"], parts["v"] = criterion.forward_with_weights(
                logits, target, loss_map=loss_map, confidence=confidence, isolated=isolated)
    loss = main
    parts["main"] = main.detach()
    if "aux" in outputs and cfg.aux_weight > 0:
        aux_map = (gce_map(outputs["aux"], target, cfg.gce_q, validate=validate) if cfg.loss == "gce"
                   else cross_entropy_map(outputs["aux"], target, validate=validate))
        aux = mean_over_valid(aux_map, target)
        parts["aux"] = aux.detach()
        loss = loss + cfg.aux_weight * aux
    return loss, parts


@torch.no_grad()
def weight_statistics(weights: Tensor, v: Tensor, target: Tensor) -> tuple[float, float, float]:
    """(mean of weight × num_valid over valid pixels with v > 0, same for v ≤ 0, share of v > 0 pixels).

    weight × num_valid has mean 1 over the valid pixels, so 1 means "as in the plain mean"; NaN when a group
    is empty.
    """
    valid = target != IGNORE_INDEX
    n = valid.sum()
    scaled = weights * n
    high, low = valid & (v > 0), valid & (v <= 0)
    mean = lambda m: float(scaled[m].mean()) if m.any() else math.nan  # noqa: E731
    return mean(high), mean(low), float(high.sum() / n.clamp_min(1))


def train_one_step(model: nn.Module, criterion: ARMLoss | None, optimizer: torch.optim.Optimizer, images: Tensor,
                   target: Tensor, cfg: TrainConfig, *, autocast=contextlib.nullcontext(), isolated: bool = False,
                   validate: bool = False, arm_params: list[nn.Parameter] = ()
                   ) -> tuple[Tensor, dict[str, float | Tensor]]:
    """One SGD step of the model and, in the same optimiser, of ARM (which maximises; :func:`adversarial_sgd`).

    Args:
        model: returns {"out" N×C×H×W, ["aux"], ["log_s"]} (DDP-wrapped under torchrun).
        criterion: :func:`build_criterion`'s loss, or None for the plain mean.
        images: N×3×H×W float; target: N×H×W int64, 255 = ignore.
        isolated: the isolated phase (model sees the plain mean, ARM already learns; §4.2).
        validate: check shapes and labels (the trainer does it on a session's first step).
        arm_params: ARM's parameters; their gradients are averaged over ranks (ARM is not DDP-wrapped), by
            :func:`armlib.arm.sync_arm_gradients`, the README's call.

    Returns:
        (loss, parts): the detached loss, and :func:`compute_loss`'s parts plus, for ARM, ``arm_grad_norm``
        (L2 norm of ARM's gradient, after the rank average) and ``v_std`` (spread of ARM's input over the
        batch's valid pixels): the two numbers that show whether ARM can learn at all.

    Raises:
        FloatingPointError: the loss (or the model's output) is not finite; nothing was updated.
    """
    with autocast:
        outputs = model(images)
    try:
        loss, parts = compute_loss(outputs, target, cfg, criterion, isolated=isolated, validate=validate)
    except ValueError:
        if all(torch.isfinite(t).all() for t in outputs.values()):
            raise
        loss = torch.tensor(float("nan"), device=images.device)  # a diverged model: non-finite outputs
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite loss ({loss.item()})")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    sync_arm_gradients(arm_params)   # a no-op with one rank
    if arm_params and any(p.grad is not None for p in arm_params):
        parts["arm_grad_norm"] = float(torch.linalg.vector_norm(
            torch.cat([p.grad.reshape(-1) for p in arm_params if p.grad is not None])))
        valid = target != IGNORE_INDEX
        parts["v_std"] = float(parts["v"][valid].float().std()) if "v" in parts and valid.sum() > 1 else math.nan
    optimizer.step()
    return loss.detach(), parts

