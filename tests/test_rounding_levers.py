"""The levers that change how a CPU step rounds: three that make it faster and round differently, and float64
(``cpu_float64``, the smoke scale's: the same numbers on every CPU). Off by default (the committed runs keep their
keys), each wired to the run when set. Their speed is measured in benchmarks/bench_quick.py, not here."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from armlib.config import TrainConfig, load_config
from armlib.data.loading import prepare_data
from armlib.models.heads import resize
from armlib.paths import CONFIG_DIR
from armlib.runs import OPT_IN_FIELDS, run_key
from armlib.train import train

LEVERS = ("cpu_channels_last", "cpu_fused_sgd", "matmul_resize", "cpu_float64")


@pytest.mark.parametrize("size,out", [((8, 16), (64, 128)), ((5, 7), (13, 29)), ((16, 32), (16, 32))])
def test_the_matmul_resize_is_bilinear_resizing(size, out):
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
    expected = F.interpolate(x, size=out, mode="bilinear", align_corners=False)
    torch.testing.assert_close(resize(x, out, matmul=True), expected)


@pytest.mark.parametrize("lever", LEVERS)
def test_a_lever_is_off_by_default_and_keeps_the_committed_keys(lever):
    assert getattr(TrainConfig(), lever) is False and OPT_IN_FIELDS[lever] is False
    committed = {k: v for k, v in TrainConfig().to_dict().items() if k not in LEVERS + ("data_on_device",)}
    assert run_key(TrainConfig().to_dict()) == run_key(committed)
    assert run_key(TrainConfig().replace(**{lever: True}).to_dict()) != run_key(committed)


def wiring(cfg, out, monkeypatch) -> dict:
    """Train two steps of ``cfg`` and report what each lever changes where it acts: the optimiser's ``fused``
    flag, the memory format of the model's weights and of the images of a step, the dtype of both, and which
    resize path the heads took."""
    import armlib.models.heads as heads
    import armlib.train as trainer

    seen = {"fused": set(), "weights_channels_last": set(), "images_channels_last": set(), "dtype": set(),
            "matmul_resize": set()}
    real_sgd, real_step, real_resize = trainer.adversarial_sgd, trainer.train_one_step, heads.resize

    def sgd(*args, **kwargs):
        seen["fused"].add(kwargs.get("fused", False))
        return real_sgd(*args, **kwargs)

    def step(model, criterion, optimizer, images, *args, **kwargs):
        weight = next(p for p in model.parameters() if p.dim() == 4)
        seen["weights_channels_last"].add(weight.is_contiguous(memory_format=torch.channels_last))
        seen["images_channels_last"].add(images.is_contiguous(memory_format=torch.channels_last))
        seen["dtype"].add((weight.dtype, images.dtype))
        return real_step(model, criterion, optimizer, images, *args, **kwargs)

    def resize(x, size, matmul=False):
        seen["matmul_resize"].add(matmul)
        return real_resize(x, size, matmul)

    monkeypatch.setattr(trainer, "adversarial_sgd", sgd)
    monkeypatch.setattr(trainer, "train_one_step", step)
    monkeypatch.setattr(heads, "resize", resize)
    threads = torch.get_num_threads()
    try:
        train(cfg, out)
    finally:
        torch.set_num_threads(threads)
    return seen


@pytest.fixture(scope="module")
def float32_smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("levers")
    cfg = load_config(CONFIG_DIR / "smoke.yaml", [
        f"data_root={root / 'data'}", "iterations=2", "checkpoint_every=2", "threads=1", "num_workers=0",
        "device=cpu", "quiet=true", "cpu_float64=false"])
    prepare_data(cfg)
    return cfg, root


@pytest.mark.parametrize("lever", ("default",) + LEVERS)
def test_a_lever_set_is_wired_to_the_run_and_only_it(float32_smoke, lever, monkeypatch):
    """Each lever acts where its docstring says, and on nothing else; whether the numbers then round differently
    depends on the CPU (on an AVX2-only EPYC the fused SGD gave bit-identical parameters), so it is not asserted."""
    cfg, root = float32_smoke
    seen = wiring(cfg if lever == "default" else cfg.replace(**{lever: True}), root / lever, monkeypatch)
    float64 = torch.float64 if lever == "cpu_float64" else torch.float32
    assert seen == {"fused": {lever == "cpu_fused_sgd"},
                    "weights_channels_last": {lever == "cpu_channels_last"},
                    "images_channels_last": {lever == "cpu_channels_last"},
                    "dtype": {(float64, float64)},
                    "matmul_resize": {lever == "matmul_resize"}}
