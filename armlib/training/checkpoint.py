"""The trainer's checkpoint: what it saves and how a resume restores it exactly.

A checkpoint holds the model, ARM, optimiser and schedule (:class:`TrainState`), the iteration, the position
in the data order, every rank's random state (python, numpy, torch, CUDA) and the run's accumulated times.
Restoring all of it, a run stopped at any checkpoint and resumed ends with bit-identical weights on CPU
(tests/test_train.py). Rank 0 writes it atomically (:func:`armlib.runs.atomic_torch_save`).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from armlib.arm import ARMLoss
from armlib.config import RUNTIME_ONLY, TrainConfig
from armlib.errors import UsageError
from armlib.runs import CorruptCheckpoint, atomic_torch_save, read_checkpoint
from armlib.training.distributed import Ranks, barrier

__all__ = ["TrainState", "new_history", "save_checkpoint", "load_checkpoint", "seed_all"]


@dataclass
class TrainState:
    """The objects a checkpoint saves: the model, the criterion holding ARM (None without reweighting), the
    optimiser (model and ARM groups, :func:`armlib.arm.adversarial_sgd`) and the lr schedule."""
    model: nn.Module
    criterion: ARMLoss | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    weight_fn: nn.Module | None = field(init=False)        # ARM or Linear ARM
    arm_params: list[nn.Parameter] = field(init=False)     # ARM's parameters ([] without)

    def __post_init__(self):
        self.weight_fn = self.criterion.weight_fn if self.criterion is not None else None
        self.arm_params = list(self.weight_fn.parameters()) if self.weight_fn is not None else []


def new_history() -> dict:
    """A run's accumulated training time (s), images, wall time (s) and resumed sessions before this one."""
    return {"train_seconds": 0.0, "images": 0, "wall_seconds": 0.0, "sessions": 0}


def seed_all(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_checkpoint(path: Path, cfg: TrainConfig, state: TrainState, iteration: int, history: dict,
                    batches_per_epoch: int, device: torch.device, ranks: Ranks, *,
                    data_fingerprint: str | None = None) -> None:
    """Gather every rank's RNG state, then rank 0 writes the checkpoint of ``iteration`` atomically.
    ``data_fingerprint``: the training set's (``PairedSegmentationDataset.fingerprint``), which a resume
    compares instead of its folder."""
    rng = _rng_state(device)
    if ranks.world > 1:
        gathered = [None] * ranks.world
        dist.all_gather_object(gathered, rng)
        rng = gathered
    else:
        rng = [rng]
    if ranks.is_main:
        atomic_torch_save({
            "model": state.model.state_dict(),
            "arm": state.weight_fn.state_dict() if state.weight_fn is not None else {},
            "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict(),
            "iteration": iteration,
            "rng": rng,
            "data": {"epoch": iteration // batches_per_epoch, "batch_in_epoch": iteration % batches_per_epoch,
                     "batches_per_epoch": batches_per_epoch, "fingerprint": data_fingerprint},
            "history": history,
            "config": cfg.to_dict(),
            "world_size": ranks.world,
        }, path)
    barrier(ranks)


def load_checkpoint(path: Path, cfg: TrainConfig, state: TrainState, batches_per_epoch: int, ranks: Ranks,
                    device: torch.device, *, data_fingerprint: str | None = None) -> tuple[int, dict]:
    """Restore ``state`` and this rank's random streams from the checkpoint at ``path``.

    The data is compared by what it is, not where it lies: ``data_root`` may change (a runs folder and its data
    moved to another disk or machine) while the training set's ``data_fingerprint`` matches the checkpoint's.

    Returns:
        (iteration the checkpoint was written at, the run's history with this session counted).

    Raises:
        armlib.errors.UsageError (one line naming the file and the way out): the config differs from the
            checkpoint's in a field that can change a result; the training set is another one (its fingerprint,
            or, for a checkpoint written before fingerprints, its folder for real data) or has another number
            of batches per epoch (the data order could not resume).
        armlib.runs.CorruptCheckpoint: the file is unreadable or lacks what a resume needs.
    """
    ckpt = read_checkpoint(path, map_location="cpu")  # RNG states must stay on the CPU
    needed = {"optimizer", "scheduler", "rng", "data", "history"} | ({"arm"} if state.weight_fn is not None else set())
    missing = sorted(needed - set(ckpt))
    if missing:
        raise CorruptCheckpoint(f"{path}: lacks {missing}, so the run cannot resume from it; delete it to retrain "
                                "this run from the start, or restore a complete copy")
    then = ckpt["config"]
    changed = [k for k, v in cfg.to_dict().items()
               if k not in RUNTIME_ONLY and k != "data_root" and then.get(k) != v]
    if changed:
        raise UsageError(f"{path}: the config differs from the checkpoint's in {changed}; resume with the same "
                         f"config (only {list(RUNTIME_ONLY)} and data_root may change), or train into a new folder")
    recorded = ckpt["data"].get("fingerprint")
    moved = then.get("data_root") != cfg.data_root
    if recorded is not None and data_fingerprint is not None and recorded != data_fingerprint:
        raise UsageError(f"{path}: the training set at data_root={cfg.data_root!r} is not the one this run was "
                         f"trained on (at {then.get('data_root')!r}; fingerprint {data_fingerprint} vs {recorded}); "
                         "point data_root at that data, or train into a new folder")
    if moved and recorded is None and cfg.dataset != "synth":
        raise UsageError(f"{path}: data_root changed from {then.get('data_root')!r} to {cfg.data_root!r} and this "
                         "checkpoint predates data fingerprints, so the data cannot be shown to be the same; resume "
                         "with the old data_root, or train into a new folder")
    state.model.load_state_dict(ckpt["model"])
    if state.weight_fn is not None:
        state.weight_fn.load_state_dict(ckpt["arm"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt["data"]["batches_per_epoch"] != batches_per_epoch:
        raise UsageError(f"{path}: an epoch had {ckpt['data']['batches_per_epoch']} batches at the checkpoint, now "
                         f"{batches_per_epoch}: the training set changed, so the data order cannot resume; train into "
                         "a new folder")
    iteration, history = ckpt["iteration"], ckpt["history"]
    rng = ckpt["rng"]
    _set_rng_state(rng[ranks.rank] if len(rng) == ranks.world else rng[0], device)
    if len(rng) != ranks.world:
        torch.manual_seed(cfg.seed + 2 + ranks.rank + 1000 * iteration)  # different world size: fresh streams
    return iteration, {**history, "sessions": history["sessions"] + 1}


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
