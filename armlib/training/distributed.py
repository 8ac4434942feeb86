"""torchrun's ranks for the trainer: join the process group, pick the device, keep ARM identical on every rank.

The model is DDP-wrapped; ARM is not (53 parameters, held by the criterion): its gradients are averaged in one
collective after each backward (:func:`armlib.arm.sync_arm_gradients`, the public helper a user's loop calls too) and its parameters broadcast from rank 0 at the start
(:func:`wrap_for_ranks`), so every rank holds the same ARM; :func:`rank_max_abs_diff` measures that at the end.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from armlib.config import TrainConfig

__all__ = ["Ranks", "join_process_group", "device_for", "barrier", "wrap_for_ranks", "rank_max_abs_diff"]


@dataclass(frozen=True)
class Ranks:
    """This process's place among torchrun's: rank r of ``world``, on GPU ``local_rank`` of its node."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    own_group: bool = False  # the process group was created here (and is destroyed here at the end)

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the run folder's files."""
        return self.rank == 0


def join_process_group() -> Ranks:
    """The ranks of this process: joins torchrun's process group if launched by it (NCCL on CUDA, else gloo)."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return Ranks(dist.get_rank(), dist.get_world_size(), local_rank, own_group=True)


def device_for(cfg: TrainConfig, local_rank: int) -> torch.device:
    """``cfg.device`` resolved: "auto" is this rank's GPU when CUDA is available, else the CPU."""
    if cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("device='cuda' but CUDA is not available; use device=auto or device=cpu")
    return torch.device("cuda", local_rank)


def barrier(ranks: Ranks) -> None:
    """Wait for every rank (nothing to wait for on one)."""
    if ranks.world > 1:
        dist.barrier()


def wrap_for_ranks(model: nn.Module, arm_params: list[nn.Parameter], ranks: Ranks,
                   device: torch.device) -> nn.Module:
    """``model`` in DDP over the ranks after ARM's parameters are broadcast from rank 0; ``model`` on one."""
    if ranks.world == 1:
        return model
    for p in arm_params:
        dist.broadcast(p.data, src=0)
    return nn.parallel.DistributedDataParallel(model, device_ids=[ranks.local_rank] if device.type == "cuda" else None)


def rank_max_abs_diff(params: list[nn.Parameter], world: int) -> float | None:
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
