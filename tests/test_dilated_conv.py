"""ASPP's dilated depthwise convs skip the taps that read only padding, with nn.Conv2d's numbers bit for bit."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from armlib.config import load_config
from armlib.data.loading import prepare_data
from armlib.models import build_model
from armlib.models.heads import DilatedConv2d
from armlib.paths import CONFIG_DIR
from armlib.runs import CHECKPOINT
from armlib.train import train

_spec = importlib.util.spec_from_file_location(
    "replaced", Path(__file__).resolve().parent.parent / "benchmarks" / "replaced.py")
replaced = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(replaced)


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


def pair(channels, dilation):
    torch.manual_seed(0)
    new = DilatedConv2d(channels, channels, 3, padding=dilation, dilation=dilation, groups=channels, bias=False)
    old = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, groups=channels, bias=False)
    old.load_state_dict(new.state_dict())
    return new, old


@pytest.mark.parametrize("size,dilation,skipped", [
    ((8, 16), 36, "both axes"), ((8, 16), 24, "both axes"), ((8, 16), 12, "rows"), ((16, 8), 12, "columns"),
    ((40, 40), 12, "none"), ((1, 1), 1, "both axes"), ((8, 13), 8, "rows"),
    ((9, 13), 8, "none"),   # 8 = n − 1: the tap still reads a row
])
def test_outputs_and_gradients_are_nn_conv2ds_bit_for_bit(size, dilation, skipped):
    new, old = pair(16, dilation)
    x = torch.randn(3, 16, *size, generator=torch.Generator().manual_seed(1))
    grad = torch.randn(3, 16, *size, generator=torch.Generator().manual_seed(2))
    outputs, inputs_grads = [], []
    for conv in (new, old):
        xi = x.clone().requires_grad_()
        out = conv(xi)
        out.backward(grad)
        outputs.append(out)
        inputs_grads.append(xi.grad)
    assert torch.equal(outputs[0], outputs[1])
    assert torch.equal(inputs_grads[0], inputs_grads[1])
    assert torch.equal(new.weight.grad, old.weight.grad)
    assert new.weight.shape == old.weight.shape
    with FlopCounterMode(display=False) as new_flops:
        new(x)
    with FlopCounterMode(display=False) as old_flops:
        old(x)
    fraction = {"both axes": 1 / 9, "rows": 3 / 9, "columns": 3 / 9, "none": 1}[skipped]
    assert new_flops.get_total_flops() == old_flops.get_total_flops() * fraction


def test_a_convolution_it_cannot_shorten_is_refused():
    with pytest.raises(ValueError, match="stride 1 and zero padding"):
        DilatedConv2d(4, 4, 3, padding=1, dilation=2, groups=4, bias=False)
    with pytest.raises(ValueError, match="stride 1"):
        DilatedConv2d(4, 4, 3, padding=2, dilation=2, stride=2, groups=4, bias=False)
    with pytest.raises(ValueError, match="depthwise"):   # a dense conv's sum order changes with its kernel
        DilatedConv2d(4, 4, 3, padding=2, dilation=2, bias=False)
    with pytest.raises(ValueError, match="bias=False"):
        DilatedConv2d(4, 4, 3, padding=2, dilation=2, groups=4)


def test_the_quick_models_aspp_uses_it():
    model = build_model("deeplabv3plus_tiny", 10)
    rates = sorted(m.dilation[0] for m in model.modules() if isinstance(m, DilatedConv2d))
    assert rates == [12, 24, 36]


def checkpoint_state(out_dir) -> dict:
    ckpt = torch.load(out_dir / CHECKPOINT, weights_only=True)
    return {**{f"model.{k}": v for k, v in ckpt["model"].items()},
            **{f"momentum.{k}": v["momentum_buffer"] for k, v in ckpt["optimizer"]["state"].items()}}


def test_training_and_resume_are_bit_identical_to_full_convolutions(tmp_path):
    cfg = load_config(CONFIG_DIR / "smoke.yaml", [
        f"data_root={tmp_path / 'data'}", "iterations=50", "checkpoint_every=25", "threads=1", "num_workers=0",
        "device=cpu", "quiet=true", "cpu_float64=false"])   # the quick scale's float32 path
    prepare_data(cfg)

    def reference(cfg, num_classes):
        return replaced.as_reference(build_model(cfg.model, num_classes, output_stride=cfg.output_stride))

    train(cfg, tmp_path / "old", model_fn=reference)
    train(cfg, tmp_path / "new")
    train(cfg, tmp_path / "resumed", stop_at=25)
    train(cfg, tmp_path / "resumed", resume=True)
    old = checkpoint_state(tmp_path / "old")
    for run in ("new", "resumed"):
        new = checkpoint_state(tmp_path / run)
        assert new.keys() == old.keys()
        assert all(torch.equal(new[k], old[k]) for k in old), run
