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

About 520 lines, over the suite's 400, with a reason: the loop's parts already live in :mod:`armlib.training`
(set-up, one step, evaluation, checkpoints); what stays is the run as the record shows it, and this is training
code whose syntax tree the run keys fingerprint (``tests/test_runs.py``): moving it would move every committed
run's key for no change in what it computes.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from armlib.arm import adversarial_sgd
from armlib.config import TrainConfig, load_config
from armlib.data.checks import check_run_inputs, check_val_set
from armlib.data import loading
from armlib.data.loading import ResumableSampler, batches, build_datasets, class_names, prepare_data
from armlib.evaluation import evaluate_model
from armlib.metrics import reported_metrics, resolved_mask
from armlib.models import input_dtype
from armlib.paths import atomic_write_text, git_revision, resolve
from armlib.errors import UsageError
from armlib.losses import IGNORE_INDEX
from armlib.runs import (CHECKPOINT, CURVES, LOG, LOSS_BOUND_FACTOR, RECORD, RunFailed, _CsvLog, _json_safe,
                         _peak_memory, _truncate_csv, cpu_name, file_digest, loss_failure, run_folder_lock, versions,
                         write_failed_record)
from armlib.schedule import paper_lr
from armlib.training.checkpoint import TrainState, load_checkpoint, new_history, save_checkpoint, seed_all
from armlib.training.distributed import (Ranks, barrier, device_for, join_process_group, rank_max_abs_diff,
                                         wrap_for_ranks)
from armlib.training.step import (CURVE_POINTS, ModelFn, build_criterion, build_model_for, compute_loss,
                                  initial_curve, train_one_step, weight_statistics)

__all__ = ["train", "train_one_step", "compute_loss", "build_criterion", "build_model_for", "add_arguments", "run"]

# w_high / w_low / frac_high: weight_statistics; arm_grad_norm / v_std: train_one_step (ARM can learn?)
LOG_COLUMNS = ("iteration", "loss", "lr", "img_per_s", "w_high", "w_low", "frac_high", "arm_grad_norm", "v_std")


# -- the trainer: train() wires the steps below, in the order they run ----------------------------------

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
        armlib.runs.RunFailed: the run learned nothing (no labelled training pixel in its first epoch, or a
            logged loss above :data:`armlib.runs.LOSS_BOUND_FACTOR` × the first); ``record.json`` says so.
        armlib.runs.RunsFolderBusy: another process writes into ``out_dir`` (or reproduces its runs folder).
        FileNotFoundError: a missing dataset (the message gives the expected layout).
        ValueError: an inconsistent setting (e.g. batch_size not divisible by the number of ranks).
    """
    started = time.perf_counter()
    out_dir = resolve(out_dir)
    ranks = join_process_group()
    threads = torch.get_num_threads()
    try:
        return _train(cfg, out_dir, resume, model_fn, stop_at, ranks, started)
    finally:
        torch.set_num_threads(threads)  # cfg.threads applies to this run only (notebooks call train in-process)
        if ranks.own_group:
            dist.destroy_process_group()


def _train(cfg: TrainConfig, out_dir: Path, resume: bool, model_fn: ModelFn | None, stop_at: int | None,
           ranks: Ranks, started: float) -> dict:
    device = set_up(cfg, out_dir, resume, ranks)
    # one writer per run folder (rank 0 holds it for the ranks): a second `armlib train` into it, or one beside
    # an `armlib reproduce` of the same runs folder, is refused before it writes anything
    with run_folder_lock(out_dir) if ranks.is_main else contextlib.nullcontext():
        if ranks.is_main and not resume and ((out_dir / CHECKPOINT).exists() or (out_dir / RECORD).exists()):
            raise FileExistsError(f"{out_dir} already holds a run ({CHECKPOINT} or {RECORD}); pass resume=True "
                                  "(--resume) to continue it, or choose another out_dir")
        data = build_data(cfg, ranks, device)
        state = build_state(cfg, data.num_classes, model_fn, ranks, device)
        check_state(cfg, state, data, out_dir, ranks, device)
        ckpt_path = out_dir / CHECKPOINT
        start_it, history = 0, new_history()
        if resume and ckpt_path.exists():
            start_it, history = load_checkpoint(ckpt_path, cfg, state, data.batches_per_epoch, ranks, device,
                                                data_fingerprint=data.fingerprint)
        net = wrap_for_ranks(state.model, state.arm_params, ranks, device)
        net = torch.compile(net) if cfg.compile else net
        try:
            history, stopped_at = train_loop(net, state, data, cfg, out_dir, ranks, device, start_it, history,
                                             stop_at, started)
        except RunFailed as exc:
            if ranks.is_main:
                write_failed_record(out_dir, exc.status, exc.message, config=cfg.to_dict(), seed=cfg.seed)
            raise
        if stopped_at is not None:
            return {"stopped_at": stopped_at, "checkpoint": str(ckpt_path)}
        eval_start = time.perf_counter()
        metrics = evaluate(state.model, data, cfg, device, progress=not cfg.quiet and ranks.is_main)
        eval_seconds = time.perf_counter() - eval_start
        record = make_record(cfg, state, data, metrics, history, eval_seconds, ranks, device, started)
        if ranks.is_main:
            record["final_loss"] = _last_logged_loss(out_dir / LOG)  # mean loss of the last log window
            # the checkpoint this record was computed from: analysis refuses any other (armlib.reproduction.analysis.load_run)
            record["checkpoint"] = {"iteration": cfg.iterations, "sha256": file_digest(ckpt_path)}
            atomic_write_text(out_dir / RECORD, json.dumps(_json_safe(record), indent=1))
        return record


# -- set-up ----------------------------------------------------------------------------------------------

def set_up(cfg: TrainConfig, out_dir: Path, resume: bool, ranks: Ranks) -> torch.device:
    """Check the run's inputs before anything is written, apply the runtime settings, create the run folder.

    Returns the device. Raises ValueError (a setting) or FileNotFoundError (a dataset).
    """
    if cfg.batch_size % ranks.world:
        raise ValueError(f"batch_size={cfg.batch_size} is the global batch and must be divisible by the "
                         f"number of ranks ({ranks.world})")
    check_run_inputs(cfg, out_dir)  # before the run folder exists: a refused run leaves nothing behind
    device = device_for(cfg, ranks.local_rank)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if ranks.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    return device


def check_state(cfg: TrainConfig, state: TrainState, data: TrainData, out_dir: Path, ranks: Ranks,
                device: torch.device) -> None:
    """What can only be checked once the model exists, before the first step (each used to fail after training
    or deep inside it): the classifier's outputs against the data's classes, a per-rank batch of one image
    against BatchNorm, and the disk space a checkpoint needs (two copies: the new one is written beside the
    old one, :func:`armlib.runs.atomic_torch_save`).

    Raises:
        armlib.errors.UsageError: one line naming the setting and what was expected.
    """
    model = state.model
    with torch.no_grad():   # eval mode: no statistics updated, no random number drawn; the run is unchanged
        was_training = model.training
        model.eval()
        out = model(torch.zeros(1, 3, *cfg.crop_size, device=device, dtype=input_dtype(model)))
        model.train(was_training)
    outputs = (out["out"] if isinstance(out, dict) else out).shape[1]
    if outputs != data.num_classes:
        raise UsageError(f"model={cfg.model!r} has {outputs} outputs but dataset={cfg.dataset!r} has "
                         f"{data.num_classes} classes; expected one output per class")
    synced = device.type == "cuda" and ranks.world > 1   # SyncBatchNorm pools the ranks' batches
    if data.per_rank * (ranks.world if synced else 1) < 2 and any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise UsageError(f"batch_size={cfg.batch_size} gives {data.per_rank} image per rank and step, but the model "
                         "has BatchNorm layers, which need at least 2; raise batch_size")
    if ranks.is_main:
        need = 2 * sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
        need += sum(p.numel() * p.element_size() for p in model.parameters())   # SGD's momentum buffers
        free = shutil.disk_usage(out_dir).free
        if free < 2 * need:
            raise UsageError(f"{out_dir}: {free / 2**20:.0f} MiB free, but a checkpoint needs about "
                             f"{need / 2**20:.0f} MiB and is written beside the previous one; free space or "
                             "choose another out_dir")


@dataclass
class TrainData:
    """The training stream's loader and sampler, the validation set and the class names of one run."""
    loader: DataLoader
    sampler: ResumableSampler
    val_set: Dataset
    num_classes: int
    class_names: list[str]
    per_rank: int            # images per rank and step (the global batch / ranks)
    batches_per_epoch: int   # steps per epoch (each rank's shard of the epoch's permutation)
    fingerprint: str | None  # what the training set is (PairedSegmentationDataset.fingerprint), for a resume


def build_data(cfg: TrainConfig, ranks: Ranks, device: torch.device) -> TrainData:
    """The data of ``cfg``: rank 0 generates a missing synthetic set while the others wait for it; the
    class list and the validation labels are checked now rather than after training."""
    if ranks.is_main:
        root = prepare_data(cfg)
    barrier(ranks)
    if not ranks.is_main:
        root = prepare_data(cfg)
    train_base, val_set, num_classes = build_datasets(cfg, root)
    names = class_names(cfg)
    resolved_mask(names, cfg.unresolved_classes)   # a misspelt class fails now, not after training
    check_val_set(val_set, f"the val set of dataset={cfg.dataset!r}")  # a bad val label fails now, not after T
    # through the module, so that tests/test_data_pipeline.py can swap in the data path it replaced
    sampler, loader = loading.training_loader(cfg, train_base, ranks.world, ranks.rank, device)
    per_rank = cfg.batch_size // ranks.world
    per_epoch = sampler.num_samples // per_rank
    if per_epoch == 0:
        raise ValueError(f"the training set has {len(train_base)} images, fewer than one global batch "
                         f"({cfg.batch_size}); lower batch_size")
    fingerprint = train_base.fingerprint() if hasattr(train_base, "fingerprint") else None
    return TrainData(loader, sampler, val_set, num_classes, names, per_rank, per_epoch, fingerprint)


def _channels_last(cfg: TrainConfig, device: torch.device) -> bool:
    return cfg.channels_last if device.type == "cuda" else cfg.cpu_channels_last


def build_state(cfg: TrainConfig, num_classes: int, model_fn: ModelFn | None, ranks: Ranks,
                device: torch.device) -> TrainState:
    """Model from ``seed``, ARM from ``seed + 1`` (:func:`build_criterion`), then the training stream from
    ``seed + 2 + rank``; one SGD optimiser for both (ARM's group maximises) and the paper's lr schedule."""
    seed_all(cfg.seed)
    dtype = cfg.float_dtype(device.type)
    model = build_model_for(cfg, num_classes, model_fn).to(device, dtype)
    criterion = build_criterion(cfg)
    if criterion is not None:
        criterion.weight_fn.to(device, dtype)
    torch.manual_seed(cfg.seed + 2 + ranks.rank)
    if _channels_last(cfg, device):
        model = model.to(memory_format=torch.channels_last)
    if device.type == "cuda" and ranks.world > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    arm_params = list(criterion.weight_fn.parameters()) if criterion is not None else []
    optimizer = adversarial_sgd(model.parameters(), arm_params, lr=cfg.base_lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay,
                                **({"fused": True} if device.type == "cuda" or cfg.cpu_fused_sgd else {}))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: paper_lr(it, cfg.iterations, 1.0))
    return TrainState(model, criterion, optimizer, scheduler)


# -- the loop --------------------------------------------------------------------------------------------

def train_loop(net: nn.Module, state: TrainState, data: TrainData, cfg: TrainConfig, out_dir: Path, ranks: Ranks,
               device: torch.device, start_it: int, history: dict, stop_at: int | None, started: float
               ) -> tuple[dict, int | None]:
    """Iterations ``start_it`` … T (or ``stop_at``): a step, a log row every ``log_every``, ARM's curve every
    ``curve_every``, a checkpoint every ``checkpoint_every`` and at the end.

    Returns (the run's history with this session's training time and images added, the iteration it
    stopped at when ``stop_at`` was reached, else None).
    """
    total, ckpt_path = cfg.iterations, out_dir / CHECKPOINT
    last_good = (ckpt_path, start_it) if start_it else None
    log, curves = _open_logs(out_dir, state, ranks, start_it)
    curve_every = cfg.curve_every or max(1, total // 20)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if cfg.amp and device.type == "cuda"
                else contextlib.nullcontext())
    stream = batches(data.loader, data.sampler, start_it, data.per_rank, data.batches_per_epoch)
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=start_it, desc=out_dir.name, unit="it", dynamic_ncols=True,
               disable=cfg.quiet or not ranks.is_main)
    net.train()
    window_losses: list[Tensor] = []   # the losses since the last log row
    labelled = torch.zeros((), dtype=torch.long, device=device)   # labelled pixels seen in this session
    check_labels_at = min(total, start_it + data.batches_per_epoch)   # one epoch, or the run if shorter
    timer = _Timer(start_it)
    stopped_at = None
    try:
        for it in range(start_it, total):
            images, target = next(stream)
            images = images.to(device, input_dtype(net), non_blocking=True)
            target = target.to(device, non_blocking=True)
            if _channels_last(cfg, device):
                images = images.contiguous(memory_format=torch.channels_last)
            lr = state.optimizer.param_groups[0]["lr"]  # the lr of this step (logged)
            try:
                loss, parts = train_one_step(net, state.criterion, state.optimizer, images, target, cfg,
                                             autocast=autocast, isolated=it < cfg.isolated_fraction * total,
                                             validate=it == start_it, arm_params=state.arm_params)
            except FloatingPointError as exc:
                where = (f"{last_good[0]} (iteration {last_good[1]})" if last_good is not None
                         else "none (no checkpoint written yet)")
                raise FloatingPointError(f"{exc} at iteration {it + 1} of {total}; "
                                         f"the last good checkpoint is {where}") from None
            state.scheduler.step()
            window_losses.append(loss.detach())
            labelled += (target != IGNORE_INDEX).sum()
            done = it + 1
            bar.update(1)
            if done == check_labels_at and _all_ranks_sum(labelled, ranks) == 0:
                raise RunFailed("no_labels", f"no labelled training pixel in iterations {start_it + 1}–{done} "
                                f"(every label is {IGNORE_INDEX}): nothing to learn; check the labels of "
                                f"dataset={cfg.dataset!r} at {cfg.data_root}")
            if done % cfg.log_every == 0 or done == total:
                mean_loss = torch.stack(window_losses).float().mean().item()
                history = _check_loss(history, mean_loss, done, ranks)
                seconds, steps = timer.lap(done, cfg.batch_size)
                speed = steps * cfg.batch_size / max(seconds, 1e-9)
                stats = ((math.nan,) * 3 if "weights" not in parts
                         else weight_statistics(parts["weights"], parts["v"], target))
                arm_stats = (parts.get("arm_grad_norm", math.nan), parts.get("v_std", math.nan))
                log.write([(done, _fmt(mean_loss), _fmt(lr), _fmt(speed), *(_fmt(s) for s in stats + arm_stats))])
                bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}", img_s=f"{speed:.1f}")
                window_losses.clear()
            if state.weight_fn is not None and (done % curve_every == 0 or done == total):
                curves.write(_curve_rows(state.weight_fn, done))
            if done % cfg.checkpoint_every == 0 or done == total or done == stop_at:
                if window_losses:  # time spent since the last log row counts as training time too
                    timer.lap(done, cfg.batch_size)
                save_checkpoint(ckpt_path, cfg, state, done, timer.add_to(history, started), data.batches_per_epoch,
                                device, ranks, data_fingerprint=data.fingerprint)
                last_good = (ckpt_path, done)
                timer.restart()  # checkpoint I/O is not training time (img/s)
            if stop_at is not None and done >= stop_at:
                stopped_at = done
                break
    finally:
        bar.close()
        log.close()
        curves.close()
    return {**history, "train_seconds": history["train_seconds"] + timer.seconds,
            "images": history["images"] + timer.images}, stopped_at


class _Timer:
    """This session's training time and images, counted in windows that leave checkpoint I/O out (img/s)."""

    def __init__(self, iteration: int):
        self.seconds, self.images = 0.0, 0
        self._start, self._iteration = time.perf_counter(), iteration

    def lap(self, done: int, batch_size: int) -> tuple[float, int]:
        """Close the window at iteration ``done``: (its seconds, its steps), both counted in the session."""
        seconds, steps = time.perf_counter() - self._start, done - self._iteration
        self.seconds += seconds
        self.images += steps * batch_size
        self._start, self._iteration = time.perf_counter(), done
        return seconds, steps

    def restart(self) -> None:
        """Open the window now (after time that is not training)."""
        self._start = time.perf_counter()

    def add_to(self, history: dict, started: float) -> dict:
        """``history`` (earlier sessions) with this session's times and images added, for a checkpoint."""
        return {**history, "train_seconds": history["train_seconds"] + self.seconds,
                "images": history["images"] + self.images,
                "wall_seconds": history["wall_seconds"] + time.perf_counter() - started}


def _open_logs(out_dir: Path, state: TrainState, ranks: Ranks, start_it: int) -> tuple[_CsvLog, _CsvLog]:
    """log.csv and curves.csv (rank 0), rows a crashed session logged after its last checkpoint removed so
    they are redone without duplicates; a fresh run's curves start with ARM's initial W(v)."""
    if ranks.is_main:
        _truncate_csv(out_dir / LOG, start_it)
        _truncate_csv(out_dir / CURVES, start_it if start_it else -1)
    log = _CsvLog(out_dir / LOG, LOG_COLUMNS, ranks.is_main)
    curves = _CsvLog(out_dir / CURVES, ("iteration", "v", "w"), ranks.is_main and state.weight_fn is not None)
    if state.weight_fn is not None and start_it == 0:
        curves.write(_curve_rows(state.weight_fn, 0))
    return log, curves


def _check_loss(history: dict, mean_loss: float, done: int, ranks: Ranks) -> dict:
    """Apply :func:`armlib.runs.loss_failure` to a log row's loss against the run's first logged loss (kept in
    the checkpointed history, so a resumed run keeps its bound); raise :class:`armlib.runs.RunFailed`
    ("exploded") past the bound. The largest loss over the ranks decides, so every rank stops together."""
    if ranks.world > 1:
        worst = torch.tensor(mean_loss, dtype=torch.float64, device="cuda" if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(worst, op=dist.ReduceOp.MAX)
        mean_loss = float(worst)
    first = history.get("first_loss")
    if first is None:
        return {**history, "first_loss": mean_loss}
    failure = loss_failure([first, mean_loss])
    if failure is not None and failure[0] == "exploded":
        raise RunFailed("exploded", f"at iteration {done} the logged loss {mean_loss:.6g} exceeds "
                        f"{LOSS_BOUND_FACTOR:g} × the first logged loss ({first:.6g})")
    return history


def _all_ranks_sum(count: Tensor, ranks: Ranks) -> int:
    if ranks.world > 1:
        count = count.clone()
        dist.all_reduce(count)
    return int(count)


def _curve_rows(weight_fn: nn.Module, iteration: int) -> list[tuple]:
    v, w = weight_fn.curve(CURVE_POINTS)
    return [(iteration, f"{a:.4f}", f"{b:.6g}") for a, b in zip(v.tolist(), w.tolist())]


def _fmt(x: float) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.6g}"


# -- evaluation and the record ---------------------------------------------------------------------------

def evaluate(model: nn.Module, data: TrainData, cfg: TrainConfig, device: torch.device,
             progress: bool) -> dict[str, dict]:
    """The trained model on the validation set: ``{"metrics": ...}`` with ``cfg.eval_scales``/``eval_flip``
    and, when ``cfg.tta_scales`` is set, ``{"metrics_tta": ...}`` with that TTA (Table 6); each
    :func:`armlib.evaluation.evaluate_model`'s dict."""
    settings = {"metrics": (cfg.eval_scales, cfg.eval_flip)}
    if cfg.tta_scales is not None:
        settings["metrics_tta"] = (cfg.tta_scales, cfg.tta_flip)
    return {name: evaluate_model(model, data.val_set, data.num_classes, scales=scales, flip=flip,
                                 window=cfg.eval_window, stride=cfg.eval_stride, device=device,
                                 batch_size=cfg.eval_batch_size, num_workers=min(cfg.num_workers, 2),
                                 amp=cfg.amp and device.type == "cuda", progress=progress)
            for name, (scales, flip) in settings.items()}


def make_record(cfg: TrainConfig, state: TrainState, data: TrainData, metrics: dict[str, dict], history: dict,
                eval_seconds: float, ranks: Ranks, device: torch.device, started: float) -> dict:
    """The run's ``record.json``: config, provenance, times, the reported metrics and ARM's learned curve."""
    record = {
        "status": "ok",
        "config": cfg.to_dict(),
        "seed": cfg.seed,
        "git_revision": git_revision(short=False),
        "versions": versions(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "threads": torch.get_num_threads(),
        "world_size": ranks.world,
        "iterations": cfg.iterations,
        "wall_time_s": history["wall_seconds"] + time.perf_counter() - started,
        "train_time_s": history["train_seconds"],
        "eval_time_s": eval_seconds,
        "train_img_per_s": history["images"] / max(history["train_seconds"], 1e-9),
        "sessions": history["sessions"] + 1,  # 1 + the number of resumes
        **_peak_memory(device),
        "metrics": reported_metrics(metrics["metrics"], data.class_names, cfg.unresolved_classes),
        "IoU": metrics["metrics"]["IoU"],
        "Acc": metrics["metrics"]["Acc"],
        "class_names": data.class_names,
        **({"metrics_tta": reported_metrics(metrics["metrics_tta"], data.class_names, cfg.unresolved_classes),
            "IoU_tta": metrics["metrics_tta"]["IoU"]}
           if "metrics_tta" in metrics else {}),
        "arm_rank_max_abs_diff": rank_max_abs_diff(state.arm_params, ranks.world),
    }
    if state.weight_fn is not None:
        v, w = state.weight_fn.curve(CURVE_POINTS)
        record["arm_curve"] = {"v": v.tolist(), "w": w.tolist()}
        record["arm_curve_init"] = {"v": v.tolist(), "w": initial_curve(cfg).tolist()}
    return record


def _last_logged_loss(path: Path) -> float | None:
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        return float(rows[-1]["loss"]) if rows else None
    except (OSError, ValueError, KeyError):
        return None


# -- command line ----------------------------------------------------------------------------------------

# The arguments: armlib.commands.add_train_arguments (torch-free, for --help).
def run(args: argparse.Namespace) -> int:
    """``armlib train``: 0 on success; a config error is armlib.cli's one line and exit status 2; 3 for a run
    that learned nothing (status "exploded" or "no_labels", recorded in its record.json; one line on stderr)."""
    cfg = load_config(args.config, args.overrides)
    try:
        record = train(cfg, args.out, resume=args.resume)
    except RunFailed as exc:
        print(f"armlib train: {resolve(args.out)}: the run learned nothing ({exc}); recorded as {exc.status!r} in "
              f"{RECORD}", file=sys.stderr)
        return 3
    if int(os.environ.get("RANK", "0")) == 0 and "metrics" in record:
        m = record["metrics"]
        print(f"{resolve(args.out)}: aAcc {m['aAcc']:.2f}  mAcc {m['mAcc']:.2f}  mIoU {m['mIoU']:.2f}  "
              f"({record['wall_time_s']:.1f} s, {record['train_img_per_s']:.1f} img/s)")
    return 0

