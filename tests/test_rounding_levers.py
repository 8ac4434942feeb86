"""The levers that make a CPU step faster but round differently: off by default (the committed runs keep their
keys), each wired to the run when set. Their speed is measured in benchmarks/bench_quick.py, not here."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from armlib.config import TrainConfig, load_config
from armlib.data.loading import prepare_data
from armlib.models.heads import resize
from armlib.paths import CONFIG_DIR
from armlib.runs import CHECKPOINT, OPT_IN_FIELDS, run_key
from armlib.train import train

LEVERS = ("cpu_channels_last", "cpu_fused_sgd", "matmul_resize")


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


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("levers")
    cfg = load_config(CONFIG_DIR / "smoke.yaml", [
        f"data_root={root / 'data'}", "iterations=4", "checkpoint_every=4", "threads=1", "num_workers=0",
        "device=cpu", "quiet=true"])
    prepare_data(cfg)
    train(cfg, root / "default")
    return cfg, root, torch.load(root / "default" / CHECKPOINT, weights_only=True)["model"]


@pytest.mark.parametrize("lever", LEVERS)
def test_a_lever_set_changes_the_run(smoke, lever):
    cfg, root, default = smoke
    threads = torch.get_num_threads()
    try:
        train(cfg.replace(**{lever: True}), root / lever)
    finally:
        torch.set_num_threads(threads)
    changed = torch.load(root / lever / CHECKPOINT, weights_only=True)["model"]
    assert changed.keys() == default.keys()
    assert any(not torch.equal(changed[k], default[k]) for k in default)
