"""DDP: two gloo processes on CPU train the same model as one process with the same global batch.

Why this is an equality (and not only "close"):

* data: rank r takes items r, r+2, … of each epoch's permutation (DistributedSampler's order), per-rank batch
  2 vs one batch of 4, so step k's global batch holds the same 4 images in both runs; each image's
  augmentation depends only on (seed, epoch, index), never on the rank or the process.
* loss: the plain mean over valid pixels (reweight=none). DDP averages the ranks' gradients, i.e. takes the
  gradient of the mean of the two per-rank means, which is the global mean exactly when both ranks hold as
  many valid pixels: fine labels of the synthetic scenes have no ignored pixel, and scale_range (1, 1) with
  the crop equal to the image size never pads.
* model: no batch-coupled layers. BatchNorm would normalise with per-rank statistics (SyncBatchNorm is
  CUDA-only) and dropout would draw per-rank masks, so the stand-in is convolutions and ReLU only.

What remains is float summation order (per-rank sums then an all-reduce), hence a tight tolerance rather
than bit equality. ARM is checked separately: its per-rank weight maps are normalised over each rank's own
batch (as the paper's per-GPU loss), so ARM runs are not the single-process run; what must hold is that
ARM's parameters stay identical on both ranks, which the explicit gradient all-reduce guarantees.
"""
from __future__ import annotations

import json
import os
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from armlib.config import load_config
from armlib.paths import CONFIG_DIR
from armlib.data.loading import prepare_data
from armlib.runs import CHECKPOINT
from armlib.train import build_criterion, train

pytestmark = pytest.mark.skipif(not dist.is_available() or sys.platform != "linux",
                                reason="needs torch.distributed with gloo (Linux)")


class PixelNet(nn.Module):
    """Stand-in without batch-coupled layers (no BatchNorm, no dropout), with main and aux heads."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.out, self.aux = nn.Conv2d(8, num_classes, 1), nn.Conv2d(8, num_classes, 1)

    def forward(self, x):
        h = self.body(x)
        return {"out": self.out(h), "aux": self.aux(h)} if self.training else {"out": self.out(h)}


def pixel_net(cfg, num_classes):
    return PixelNet(num_classes)


def ddp_cfg(data_root, *overrides):
    return load_config(CONFIG_DIR / "smoke.yaml", [
        f"data_root={data_root}", "annotation=fine", "scale_range=[1.0, 1.0]", "crop_size=[64, 128]",
        "batch_size=4", "iterations=6", "checkpoint_every=3", "log_every=3", "device=cpu", "threads=1",
        "num_workers=0", "quiet=true", "base_lr=0.05", *overrides])


def _worker(rank: int, world: int, init_file: str, data_root: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        train(ddp_cfg(data_root), os.path.join(out, "ddp"), model_fn=pixel_net)
        train(ddp_cfg(data_root, "reweight=arm", "isolated_fraction=0.0"), os.path.join(out, "ddp_arm"),
              model_fn=pixel_net)
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_match_one_process(tmp_path):
    data_root = tmp_path / "data"
    prepare_data(ddp_cfg(data_root))  # generated once, before the ranks start
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(data_root), str(tmp_path)), nprocs=2, join=True)
    single = train(ddp_cfg(data_root), tmp_path / "single", model_fn=pixel_net)

    ddp_state = torch.load(tmp_path / "ddp" / CHECKPOINT, weights_only=True)
    single_state = torch.load(tmp_path / "single" / CHECKPOINT, weights_only=True)
    assert ddp_state["world_size"] == 2 and len(ddp_state["rng"]) == 2 and ddp_state["iteration"] == 6
    for key, value in single_state["model"].items():
        assert torch.allclose(ddp_state["model"][key], value, rtol=1e-5, atol=1e-6), key
    # ...and training moved the weights far beyond that tolerance
    torch.manual_seed(0)
    initial = PixelNet(len(single["class_names"])).state_dict()
    assert max((v - initial[k]).abs().max() for k, v in single_state["model"].items()) > 1e-2
    ddp_record = json.loads((tmp_path / "ddp" / "record.json").read_text())
    assert ddp_record["world_size"] == 2
    assert ddp_record["metrics"]["aAcc"] == pytest.approx(single["metrics"]["aAcc"], abs=0.05)

    # ARM: identical on both ranks after 6 joint steps on different per-rank data, and it did learn
    arm_record = json.loads((tmp_path / "ddp_arm" / "record.json").read_text())
    assert arm_record["arm_rank_max_abs_diff"] == 0.0
    arm = torch.load(tmp_path / "ddp_arm" / CHECKPOINT, weights_only=True)["arm"]
    initial_arm = build_criterion(ddp_cfg(data_root, "reweight=arm")).weight_fn.state_dict()
    assert max((arm[k] - initial_arm[k]).abs().max() for k in arm) > 0
