"""The iteration trainer: the paper's recipe (§3.5, §4.2) with checkpoints, exact resume and DDP.

One run = ``train(cfg, out_dir)``: T SGD steps of the segmentation model and, when ``cfg.reweight`` is
"arm", of the 53-parameter ARM in the same optimiser (:func:`armlib.arm.adversarial_sgd`: ARM's group
maximises, same lr, momentum and weight decay), lr ``base_lr · paper_lr(it, T, 1)`` (warm-up, ×0.1 at 0.6T,
×0.01 at 0.9T) for both. Then one evaluation on the validation set and ``out_dir/record.json``.

The loss of one step (:func:`compute_loss`)::

    main = Σ_i w_i l_i (ARMLoss, reweight ≠ none)  or  mean_{valid i} l_i (reweight = none)
    loss = main + aux_weight · mean_{valid i} l_aux,i

* ``l`` is the per-pixel base loss of the main head: CE, GCE (q = gce_q) or the KL loss of Eq. 1 (the model
  then has an uncertainty channel and ARM's input is :func:`armlib.confidence.uncertainty_indicator` of its
  log s instead of the variance); ``loss="ohem"`` uses :func:`armlib.losses.ohem_cross_entropy` and cannot
  be reweighted (Table 5 compares it with ARM).
* The auxiliary head (weight 0.4, §4.2) is never reweighted: its loss is the unweighted mean over valid
  pixels of the same base loss (CE for kl and ohem, whose extras belong to the main head: the uncertainty
  channel, and mmseg's OHEM sampler, which sits on the decode head only). ARM reweights the main head only,
  as mmseg's decode head vs auxiliary head.
* For the first ``isolated_fraction · T`` iterations (0.05T, §4.2) ARM and the model are trained
  "isolatedly": the model gets the value and gradient of the plain mean loss, ARM already gets the gradient
  of Q (``ARMLoss(..., isolated=True)``). Linear ARM follows the same schedule (it has nothing to learn).

Reproducibility: the data order of epoch e is a permutation seeded by ``seed + e`` (DistributedSampler's
convention); the augmentation of sample i in epoch e draws from torch's generator seeded by
(seed, e, i); model randomness (dropout) comes from torch's global generator, saved in every checkpoint.
So a run stopped at any checkpoint and resumed with ``resume=True`` ends with bit-identical weights on CPU.

Distributed (``torchrun``): rank r of R gets the r-th shard of each epoch's permutation, per-rank batch
``batch_size / R``; the model is wrapped in DDP (SyncBatchNorm on CUDA); ARM is *not* wrapped: its
gradients are all-reduced (averaged) explicitly after each backward, one collective over its 53 values,
and its parameters broadcast from rank 0 at the start, so ARM stays identical on every rank
(``record.json`` reports the largest difference across ranks at the end, ``arm_rank_max_abs_diff``).
ARM's weight map is normalised over each rank's own batch (:mod:`armlib.arm`), as the paper's per-GPU loss.

Files in ``out_dir`` (rank 0 writes, each atomically): ``checkpoint.pt`` (the latest), ``record.json``,
``log.csv`` (iteration, loss, lr, img/s, mean normalised weight of pixels with v > 0 and v ≤ 0, share of
v > 0 pixels) and ``curves.csv`` (ARM's W(v) on 101 points, every ``curve_every`` iterations).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader

from armlib.arm import ARM, ARMLoss, LinearARM, adversarial_sgd
from armlib.config import RUNTIME_ONLY, TrainConfig, load_config
from armlib.confidence import uncertainty_indicator
from armlib.data.checks import check_run_inputs, check_val_set
from armlib.data.loading import (AugmentedDataset, ResumableSampler, batches, build_datasets, class_names,
                                 prepare_data)
from armlib.evaluation import evaluate_model
from armlib.metrics import reported_metrics, resolved_mask
from armlib.fused import FusedARMLoss
from armlib.losses import (IGNORE_INDEX, check_logits_target, cross_entropy_map, gce_map, kl_loss_map,
                           mean_over_valid, ohem_cross_entropy)
from armlib.paths import atomic_write_text, git_revision, resolve
from armlib.runs import (CHECKPOINT, CURVES, LOG, RECORD, _CsvLog, _json_safe, _peak_memory, _truncate_csv,
                         atomic_torch_save, cpu_name, versions)
from armlib.schedule import paper_lr

__all__ = ["train", "train_one_step", "compute_loss", "build_criterion", "build_model_for", "add_arguments", "run"]

# w_high / w_low / frac_high: weight_statistics; arm_grad_norm / v_std: train_one_step (ARM can learn?)
LOG_COLUMNS = ("iteration", "loss", "lr", "img_per_s", "w_high", "w_low", "frac_high", "arm_grad_norm", "v_std")
CURVE_POINTS = 101
ModelFn = Callable[[TrainConfig, int], nn.Module]




















# -- loss ------------------------------------------------------------------------------------------------

def build_criterion(cfg: TrainConfig) -> ARMLoss | None:
    """ARMLoss with ARM or Linear ARM for ``cfg.reweight``, None for "none". ARM is initialised from
    ``seed + 1`` (so adding ARM leaves the model's initialisation and dropout stream unchanged)."""
    if cfg.reweight == "none":
        return None
    if cfg.reweight == "linear":
        weight_fn = LinearARM(cfg.linear_k, cfg.linear_b)
    else:
        with torch.random.fork_rng(devices=[]):
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
            confidence = uncertainty_indicator(outputs["log_s"].float()) if criterion is not None else None
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
                   validate: bool = False, arm_params: list[nn.Parameter] = (), world: int = 1
                   ) -> tuple[Tensor, dict[str, float | Tensor]]:
    """One SGD step of the model and, in the same optimiser, of ARM (which maximises; :func:`adversarial_sgd`).

    Args:
        model: returns {"out" N×C×H×W, ["aux"], ["log_s"]} (DDP-wrapped under torchrun).
        criterion: :func:`build_criterion`'s loss, or None for the plain mean.
        images: N×3×H×W float; target: N×H×W int64, 255 = ignore.
        isolated: the isolated phase (model sees the plain mean, ARM already learns; §4.2).
        validate: check shapes and labels (the trainer does it on a session's first step).
        arm_params: ARM's parameters; their gradients are averaged over ranks (ARM is not DDP-wrapped).

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
    if world > 1 and arm_params:
        _average_gradients(list(arm_params), world)
    if arm_params and any(p.grad is not None for p in arm_params):
        parts["arm_grad_norm"] = float(torch.linalg.vector_norm(
            torch.cat([p.grad.reshape(-1) for p in arm_params if p.grad is not None])))
        valid = target != IGNORE_INDEX
        parts["v_std"] = float(parts["v"][valid].float().std()) if "v" in parts and valid.sum() > 1 else math.nan
    optimizer.step()
    return loss.detach(), parts


# -- runtime helpers -------------------------------------------------------------------------------------

def _distributed() -> tuple[int, int, int, bool]:
    """(rank, world_size, local_rank, initialised_here): joins torchrun's process group if launched by it."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())), False
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0, False
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size(), local_rank, True


def _device(cfg: TrainConfig, local_rank: int) -> torch.device:
    if cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("device='cuda' but CUDA is not available; use device=auto or device=cpu")
    return torch.device("cuda", local_rank)


def _rng_state(device: torch.device) -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state["numpy"] = (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached)
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)














def _fmt(x: float) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.6g}"


def build_model_for(cfg: TrainConfig, num_classes: int, model_fn: ModelFn | None = None) -> nn.Module:
    """The segmentation model of ``cfg`` (``model_fn(cfg, num_classes)`` when given: tests use stand-ins)."""
    if model_fn is not None:
        return model_fn(cfg, num_classes)
    from armlib.models import build_model

    return build_model(cfg.model, num_classes, output_stride=cfg.output_stride,
                       backbone_weights=cfg.backbone_weights, uncertainty=cfg.loss == "kl", aux=cfg.aux_weight > 0)


# -- the trainer -----------------------------------------------------------------------------------------

def train(cfg: TrainConfig, out_dir: str | os.PathLike, resume: bool = False, *,
          model_fn: ModelFn | None = None, stop_at: int | None = None) -> dict:
    """Train one model as ``cfg`` says, evaluate it, write ``out_dir/record.json``; return the record.

    Args:
        cfg: the run's configuration.
        out_dir: run folder (relative paths are relative to the repository root, see :mod:`armlib.paths`).
        resume: continue from ``out_dir/checkpoint.pt`` (the resolved config must match in everything but
            runtime fields); starts afresh when there is none. Without ``resume`` a folder that already
            holds a checkpoint or record is refused.
        model_fn: build the model as ``model_fn(cfg, num_classes)`` instead of ``armlib.models.build_model``
            (any model returning {"out", ["aux"], ["log_s"]}); tests use small stand-ins.
        stop_at: stop after this iteration, once its checkpoint is written (a scheduled interruption; the
            schedule still spans ``cfg.iterations``). Returns ``{"stopped_at": stop_at, ...}`` without
            evaluating or writing a record.

    Raises:
        FloatingPointError: a non-finite loss; names the iteration and the last good checkpoint.
        FileNotFoundError: a missing dataset (the message gives the expected layout).
        ValueError: an inconsistent setting (e.g. batch_size not divisible by the number of ranks).
    """
    started = time.perf_counter()
    out_dir = resolve(out_dir)
    rank, world, local_rank, own_group = _distributed()
    threads = torch.get_num_threads()
    try:
        return _train(cfg, out_dir, resume, model_fn, stop_at, rank, world, local_rank, started)
    finally:
        torch.set_num_threads(threads)  # cfg.threads applies to this run only (notebooks call train in-process)
        if own_group:
            dist.destroy_process_group()


def _train(cfg, out_dir, resume, model_fn, stop_at, rank, world, local_rank, started) -> dict:
    is_main = rank == 0
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} is the global batch and must be divisible by the "
                         f"number of ranks ({world})")
    per_rank = cfg.batch_size // world
    check_run_inputs(cfg, out_dir)  # before the run folder exists: a refused run leaves nothing behind
    device = _device(cfg, local_rank)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    ckpt_path = out_dir / CHECKPOINT
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not resume and (ckpt_path.exists() or (out_dir / RECORD).exists()):
            raise FileExistsError(f"{out_dir} already holds a run ({CHECKPOINT} or {RECORD}); pass resume=True "
                                  "(--resume) to continue it, or choose another out_dir")

    # data: rank 0 generates a missing synthetic set, the others wait for it
    if is_main:
        root = prepare_data(cfg)
    if world > 1:
        dist.barrier()
    if not is_main:
        root = prepare_data(cfg)
    train_base, val_set, num_classes = build_datasets(cfg, root)
    resolved_mask(class_names(cfg), cfg.unresolved_classes)   # a misspelt class fails now, not after training
    check_val_set(val_set, f"the val set of dataset={cfg.dataset!r}")  # a bad val label fails now, not after T
    from armlib.data import train_transform

    train_set = AugmentedDataset(train_base, train_transform(cfg.crop_size, cfg.scale_range), cfg.seed)
    sampler = ResumableSampler(train_set, world, rank, cfg.seed)
    per_epoch = sampler.num_samples // per_rank
    if per_epoch == 0:
        raise ValueError(f"the training set has {len(train_set)} images, fewer than one global batch "
                         f"({cfg.batch_size}); lower batch_size")
    loader = DataLoader(train_set, batch_size=per_rank, sampler=sampler, num_workers=cfg.num_workers,
                        drop_last=True, pin_memory=device.type == "cuda", persistent_workers=cfg.num_workers > 0,
                        generator=torch.Generator().manual_seed(cfg.seed))  # keeps the global stream untouched

    # model, ARM, optimiser: model from `seed`, ARM from `seed + 1`, then the training stream
    _seed_all(cfg.seed)
    model = build_model_for(cfg, num_classes, model_fn).to(device)
    criterion = build_criterion(cfg)
    weight_fn = criterion.weight_fn.to(device) if criterion is not None else None
    arm_params = list(weight_fn.parameters()) if weight_fn is not None else []
    torch.manual_seed(cfg.seed + 2 + rank)
    if device.type == "cuda" and cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if device.type == "cuda" and world > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = adversarial_sgd(model.parameters(), arm_params, lr=cfg.base_lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay, **({"fused": True} if device.type == "cuda" else {}))
    total = cfg.iterations
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: paper_lr(it, total, 1.0))

    start_it, history = 0, {"train_seconds": 0.0, "images": 0, "wall_seconds": 0.0, "sessions": 0}
    last_good = None
    if resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)  # RNG states must stay on the CPU
        changed = [k for k, v in cfg.to_dict().items() if k not in RUNTIME_ONLY and ckpt["config"].get(k) != v]
        if changed:
            raise ValueError(f"resume: the config differs from the checkpoint's in {changed}; resume with the "
                             f"same config (only {list(RUNTIME_ONLY)} may change)")
        model.load_state_dict(ckpt["model"])
        if weight_fn is not None:
            weight_fn.load_state_dict(ckpt["arm"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt["data"]["batches_per_epoch"] != per_epoch:
            raise ValueError(f"resume: an epoch had {ckpt['data']['batches_per_epoch']} batches at the checkpoint, "
                             f"now {per_epoch}: the training set changed, so the data order cannot resume")
        start_it, history = ckpt["iteration"], ckpt["history"]
        history = {**history, "sessions": history["sessions"] + 1}
        rng = ckpt["rng"]
        _set_rng_state(rng[rank] if len(rng) == world else rng[0], device)
        if len(rng) != world:
            torch.manual_seed(cfg.seed + 2 + rank + 1000 * start_it)  # different world size: fresh streams
        last_good = (ckpt_path, start_it)
        del ckpt
    if world > 1:
        for p in arm_params:
            dist.broadcast(p.data, src=0)
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[local_rank] if device.type == "cuda" else None)
    else:
        ddp_model = model
    net = torch.compile(ddp_model) if cfg.compile else ddp_model

    if is_main:  # rows a crashed session logged after its last checkpoint are redone (no duplicates)
        _truncate_csv(out_dir / LOG, start_it)
        _truncate_csv(out_dir / CURVES, start_it if start_it else -1)
    log = _CsvLog(out_dir / LOG, LOG_COLUMNS, is_main)
    curves = _CsvLog(out_dir / CURVES, ("iteration", "v", "w"), is_main and weight_fn is not None)
    curve_every = cfg.curve_every or max(1, total // 20)
    if weight_fn is not None and start_it == 0:
        curves.write(_curve_rows(weight_fn, 0))

    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if cfg.amp and device.type == "cuda"
                else contextlib.nullcontext())
    isolated_until = cfg.isolated_fraction * total
    stream = batches(loader, sampler, start_it, per_rank, per_epoch)
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=start_it, desc=out_dir.name, unit="it", dynamic_ncols=True,
               disable=cfg.quiet or not is_main)
    net.train()
    window_losses: list[Tensor] = []
    window_start, window_it = time.perf_counter(), start_it
    session_train_seconds, session_images = 0.0, 0
    it = start_it
    try:
        for it in range(start_it, total):
            images, target = next(stream)
            images = images.to(device, non_blocking=True)
            target = target.to(device, non_blocking=True)
            if device.type == "cuda" and cfg.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            lr = optimizer.param_groups[0]["lr"]  # the lr of this step (logged)
            try:
                loss, parts = train_one_step(net, criterion, optimizer, images, target, cfg, autocast=autocast,
                                             isolated=it < isolated_until, validate=it == start_it,
                                             arm_params=arm_params, world=world)
            except FloatingPointError as exc:
                where = (f"{last_good[0]} (iteration {last_good[1]})" if last_good is not None
                         else "none (no checkpoint written yet)")
                raise FloatingPointError(f"{exc} at iteration {it + 1} of {total}; "
                                         f"the last good checkpoint is {where}") from None
            scheduler.step()
            window_losses.append(loss.detach())
            done = it + 1
            bar.update(1)

            if done % cfg.log_every == 0 or done == total:
                losses = torch.stack(window_losses).float().mean().item()
                elapsed = time.perf_counter() - window_start
                steps = done - window_it
                speed = steps * cfg.batch_size / max(elapsed, 1e-9)
                session_train_seconds += elapsed
                session_images += steps * cfg.batch_size
                stats = ((math.nan,) * 3 if "weights" not in parts
                         else weight_statistics(parts["weights"], parts["v"], target))
                arm_stats = (parts.get("arm_grad_norm", math.nan), parts.get("v_std", math.nan))
                log.write([(done, _fmt(losses), _fmt(lr), _fmt(speed), *(_fmt(s) for s in stats + arm_stats))])
                bar.set_postfix(loss=f"{losses:.4f}", lr=f"{lr:.2e}", img_s=f"{speed:.1f}")
                window_losses.clear()
                window_start, window_it = time.perf_counter(), done
            if weight_fn is not None and (done % curve_every == 0 or done == total):
                curves.write(_curve_rows(weight_fn, done))
            if done % cfg.checkpoint_every == 0 or done == total or done == stop_at:
                if window_losses:  # time spent since the last log row counts as training time too
                    elapsed = time.perf_counter() - window_start
                    session_train_seconds += elapsed
                    session_images += (done - window_it) * cfg.batch_size
                    window_it = done
                hist = {**history,
                        "train_seconds": history["train_seconds"] + session_train_seconds,
                        "images": history["images"] + session_images,
                        "wall_seconds": history["wall_seconds"] + time.perf_counter() - started}
                _checkpoint(ckpt_path, cfg, model, weight_fn, optimizer, scheduler, done, hist,
                            (done // per_epoch, done % per_epoch, per_epoch), device, world, is_main)
                last_good = (ckpt_path, done)
                window_start = time.perf_counter()  # checkpoint I/O is not training time (img/s)
            if stop_at is not None and done >= stop_at:
                return {"stopped_at": done, "checkpoint": str(ckpt_path)}
    finally:
        bar.close()
        log.close()
        curves.close()

    # evaluation and record
    history = {**history, "train_seconds": history["train_seconds"] + session_train_seconds,
               "images": history["images"] + session_images}
    eval_start = time.perf_counter()
    metrics = evaluate_model(model, val_set, num_classes, scales=cfg.eval_scales, flip=cfg.eval_flip,
                             window=cfg.eval_window, stride=cfg.eval_stride, device=device,
                             batch_size=cfg.eval_batch_size, num_workers=min(cfg.num_workers, 2),
                             amp=cfg.amp and device.type == "cuda", progress=not cfg.quiet and is_main)
    metrics_tta = None
    if cfg.tta_scales is not None:
        metrics_tta = evaluate_model(model, val_set, num_classes, scales=cfg.tta_scales, flip=cfg.tta_flip,
                                     window=cfg.eval_window, stride=cfg.eval_stride, device=device,
                                     batch_size=cfg.eval_batch_size, num_workers=min(cfg.num_workers, 2),
                                     amp=cfg.amp and device.type == "cuda", progress=not cfg.quiet and is_main)
    eval_seconds = time.perf_counter() - eval_start
    arm_diff = _rank_max_abs_diff(arm_params, world)
    record = {
        "status": "ok",
        "config": cfg.to_dict(),
        "seed": cfg.seed,
        "git_revision": git_revision(short=False),
        "versions": versions(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "threads": torch.get_num_threads(),
        "world_size": world,
        "iterations": total,
        "wall_time_s": history["wall_seconds"] + time.perf_counter() - started,
        "train_time_s": history["train_seconds"],
        "eval_time_s": eval_seconds,
        "train_img_per_s": history["images"] / max(history["train_seconds"], 1e-9),
        "sessions": history["sessions"] + 1,  # 1 + the number of resumes
        **_peak_memory(device),
        "metrics": reported_metrics(metrics, class_names(cfg), cfg.unresolved_classes),
        "IoU": metrics["IoU"],
        "Acc": metrics["Acc"],
        "class_names": class_names(cfg),
        **({"metrics_tta": reported_metrics(metrics_tta, class_names(cfg), cfg.unresolved_classes),
            "IoU_tta": metrics_tta["IoU"]}
           if metrics_tta is not None else {}),
        "arm_rank_max_abs_diff": arm_diff,
    }
    if weight_fn is not None:
        v, w = weight_fn.curve(CURVE_POINTS)
        record["arm_curve"] = {"v": v.tolist(), "w": w.tolist()}
        record["arm_curve_init"] = {"v": v.tolist(), "w": initial_curve(cfg).tolist()}
    if is_main:
        record["final_loss"] = _last_logged_loss(out_dir / LOG)  # mean loss of the last log window
        atomic_write_text(out_dir / RECORD, json.dumps(_json_safe(record), indent=1))
    return record


def _last_logged_loss(path: Path) -> float | None:
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        return float(rows[-1]["loss"]) if rows else None
    except (OSError, ValueError, KeyError):
        return None


def _curve_rows(weight_fn: nn.Module, iteration: int) -> list[tuple]:
    v, w = weight_fn.curve(CURVE_POINTS)
    return [(iteration, f"{a:.4f}", f"{b:.6g}") for a, b in zip(v.tolist(), w.tolist())]


def _average_gradients(params: list[nn.Parameter], world: int) -> None:
    """All-reduce (mean) the gradients of ``params`` in one collective: ARM's DDP-equivalent sync."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def _rank_max_abs_diff(params: list[nn.Parameter], world: int) -> float | None:
    """Largest |θ_rank − θ_rank0| over ARM's parameters (0.0 when in sync; None without ARM params)."""
    if not params:
        return None
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    if world == 1:
        return 0.0
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    diff = (flat - reference).abs().max()
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff)


def _checkpoint(path, cfg, model, weight_fn, optimizer, scheduler, iteration, history, data_position, device,
                world, is_main) -> None:
    """Gather every rank's RNG state, then rank 0 writes the checkpoint atomically."""
    rng = _rng_state(device)
    if world > 1:
        gathered = [None] * world
        dist.all_gather_object(gathered, rng)
        rng = gathered
    else:
        rng = [rng]
    if is_main:
        epoch, batch, per_epoch = data_position
        state = {
            "model": model.state_dict(),
            "arm": weight_fn.state_dict() if weight_fn is not None else {},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "iteration": iteration,
            "rng": rng,
            "data": {"epoch": epoch, "batch_in_epoch": batch, "batches_per_epoch": per_epoch},
            "history": history,
            "config": cfg.to_dict(),
            "world_size": world,
        }
        atomic_torch_save(state, path)
    if world > 1:
        dist.barrier()


# -- command line ----------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``armlib train``."""
    parser.add_argument("--config", required=True, help="YAML config (see configs/ and armlib.config.TrainConfig)")
    parser.add_argument("--out", required=True, help="run folder (checkpoint.pt, record.json, log.csv)")
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, values in YAML")


def run(args: argparse.Namespace) -> int:
    """``armlib train``: 0 on success, 2 on a config error (message on stderr)."""
    try:
        cfg = load_config(args.config, args.overrides)
    except (ValueError, FileNotFoundError) as exc:
        print(f"armlib train: error: {exc}", file=sys.stderr)
        return 2
    record = train(cfg, args.out, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0 and "metrics" in record:
        m = record["metrics"]
        print(f"{resolve(args.out)}: aAcc {m['aAcc']:.2f}  mAcc {m['mAcc']:.2f}  mIoU {m['mIoU']:.2f}  "
              f"({record['wall_time_s']:.1f} s, {record['train_img_per_s']:.1f} img/s)")
    return 0
