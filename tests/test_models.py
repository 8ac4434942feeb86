"""Tests for armlib.models: output contract, strides, ASPP rates, sizes, weight loading, gradients."""
from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from armlib.models import AUX_LOSS_WEIGHT, MODEL_NAMES, build_model
from armlib.config import load_config
from armlib.models.backbones import (ALLOW_DOWNLOAD_ENV, PAPER_BACKBONE_WEIGHTS, ResNetBackbone, hub_cache_path,
                                     load_backbone_weights)
from armlib.paths import CONFIG_DIR
from armlib.models.deeplabv3plus import ASPP, DeepLabV3Plus
from armlib.models.ocr import OCRNet, spatial_gather

C = 19
TINY = ("deeplabv3plus_tiny", "ocr_tiny")
BIG = ("deeplabv3plus_r50", "deeplabv3plus_r101", "ocr_r50", "ocr_r101")


@pytest.fixture(scope="module")
def big_models() -> dict[str, nn.Module]:
    """The four ResNet models at output stride 8, built once (building a ResNet101 takes ~1 s)."""
    torch.manual_seed(0)
    return {name: build_model(name, C) for name in BIG}


def _layer4_shape(model: nn.Module, x: torch.Tensor) -> torch.Size:
    """Shape of the backbone's stage-4 output, captured with a forward hook."""
    seen = {}
    handle = model.backbone.layer4.register_forward_hook(lambda m, i, o: seen.update(shape=o.shape))
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen["shape"]


def test_registry_names():
    assert set(MODEL_NAMES) == {"deeplabv3plus_r50", "deeplabv3plus_r101", "ocr_r50", "ocr_r101",
                                "deeplabv3plus_tiny", "ocr_tiny"}


@pytest.mark.parametrize("name", TINY)
def test_tiny_output_shapes_train_and_eval(name):
    model = build_model(name, C)
    x = torch.randn(2, 3, 64, 128)
    out = model.train()(x)
    assert set(out) == {"out", "aux"}
    assert out["out"].shape == out["aux"].shape == (2, C, 64, 128)
    with torch.no_grad():
        out = model.eval()(x)
    assert set(out) == {"out"} and out["out"].shape == (2, C, 64, 128)


@pytest.mark.parametrize("name", BIG)
def test_big_output_shapes(big_models, name):
    model = big_models[name]
    with torch.no_grad():
        out = model.eval()(torch.randn(1, 3, 64, 64))
        assert set(out) == {"out"} and out["out"].shape == (1, C, 64, 64)
        # Training mode needs 2 samples: BN after ASPP's image pooling sees one value per channel.
        out = model.train()(torch.randn(2, 3, 64, 64))
    model.eval()
    assert set(out) == {"out", "aux"}
    assert out["out"].shape == out["aux"].shape == (2, C, 64, 64)


@pytest.mark.parametrize("name", TINY)
def test_aux_false_never_returns_aux(name):
    out = build_model(name, C, aux=False).train()(torch.randn(2, 3, 32, 64))
    assert set(out) == {"out"}


def test_deeplab_aux_false_builds_no_aux_head():
    assert build_model("deeplabv3plus_tiny", C, aux=False).aux_head is None
    # OCR's soft-region head is part of the model (inference needs it) whatever aux says.
    assert build_model("ocr_tiny", C, aux=False).soft_region_head is not None


@pytest.mark.parametrize("name", TINY + ("ocr_r50",))
def test_uncertainty_channel(name):
    model = build_model(name, C, uncertainty=True).train()
    out = model(torch.randn(2, 3, 32, 64))
    assert set(out) == {"out", "aux", "log_s"}
    assert out["out"].shape == out["aux"].shape == (2, C, 32, 64)
    assert out["log_s"].shape == (2, 1, 32, 64)
    # The log s channel is the main classifier's extra (C+1-th) output channel.
    assert model.decode_head.classifier[-1].out_channels == C + 1
    assert build_model(name, C).decode_head.classifier[-1].out_channels == C


@pytest.mark.parametrize("name", ["deeplabv3plus_tiny", "ocr_tiny", "deeplabv3plus_r50"])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_output_stride_is_feature_stride(name, output_stride):
    model = build_model(name, C, output_stride=output_stride).eval()
    n, h, w = 1, 64, 128
    shape = _layer4_shape(model, torch.randn(n, 3, h, w))
    assert tuple(shape[-2:]) == (h // output_stride, w // output_stride)
    assert model.backbone.output_stride == output_stride


@pytest.mark.parametrize("output_stride, rates", [(8, (12, 24, 36)), (16, (6, 12, 18))])
def test_aspp_rates(output_stride, rates):
    model = build_model("deeplabv3plus_tiny", C, output_stride=output_stride)
    aspp = model.decode_head.aspp
    assert isinstance(aspp, ASPP) and aspp.rates == rates
    # The rates are really in the depthwise convs, with "same" padding.
    depthwise = [m for m in aspp.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert [m.dilation[0] for m in depthwise] == list(rates)
    assert [m.padding[0] for m in depthwise] == list(rates)
    # Image pooling + 1×1 + 3 separable branches feed the 3×3 fusion conv.
    fuse = aspp.bottleneck[0]
    assert fuse.in_channels == 5 * fuse.out_channels and fuse.kernel_size == (3, 3)


def test_big_aspp_rates_and_widths(big_models):
    head = big_models["deeplabv3plus_r101"].decode_head
    assert head.aspp.rates == (12, 24, 36)
    assert head.low_level[0].in_channels == 256 and head.low_level[0].out_channels == 48
    assert head.classifier[-1].in_channels == 512
    aux = big_models["deeplabv3plus_r101"].aux_head
    assert aux[0][0].in_channels == 1024 and aux[0][0].out_channels == 256


def test_aux_loss_weight():
    assert AUX_LOSS_WEIGHT == 0.4


def test_parameter_counts(big_models):
    counts = {name: sum(p.numel() for p in m.parameters()) for name, m in big_models.items()}
    # torchvision ResNet101 without fc: 42.5 M; ASPP (512 wide, 3×3 fusion) 17.1 M; decoder 0.6 M;
    # aux FCN 2.4 M -> 62.6 M, as mmsegmentation's DeepLabV3+ R-101-D8 (62.6 M).
    assert 62.0e6 < counts["deeplabv3plus_r101"] < 63.2e6
    assert 43.0e6 < counts["deeplabv3plus_r50"] < 44.2e6
    assert 55.0e6 < counts["ocr_r101"] < 56.0e6       # mmseg OCRNet R-101-D8: 55.5 M
    assert counts["deeplabv3plus_r101"] - counts["deeplabv3plus_r50"] == pytest.approx(19.0e6, rel=0.01)
    tiny = sum(p.numel() for p in build_model("deeplabv3plus_tiny", C).parameters())
    assert 5e4 < tiny < 1e6


@pytest.mark.parametrize("name", TINY)
def test_gradient_reaches_every_parameter(name):
    torch.manual_seed(0)
    model = build_model(name, C).train()
    x = torch.randn(2, 3, 64, 128)
    y = torch.randint(0, C, (2, 64, 128))
    out = model(x)
    loss = F.cross_entropy(out["out"], y) + AUX_LOSS_WEIGHT * F.cross_entropy(out["aux"], y)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reaches {missing}"


def test_gradient_reaches_every_parameter_r50(big_models):
    model = big_models["deeplabv3plus_r50"].train()
    model.zero_grad(set_to_none=True)
    out = model(torch.randn(2, 3, 64, 64))
    (out["out"].logsumexp(1).mean() + AUX_LOSS_WEIGHT * out["aux"].logsumexp(1).mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    model.zero_grad(set_to_none=True)
    model.eval()
    assert not missing, f"no gradient reaches {missing}"


@pytest.mark.parametrize("name", TINY)
def test_channels_last_input(name):
    torch.manual_seed(0)
    model = build_model(name, C).eval()
    x = torch.randn(2, 3, 64, 128)
    with torch.no_grad():
        ref = model(x)["out"]
        model = model.to(memory_format=torch.channels_last)
        got = model(x.contiguous(memory_format=torch.channels_last))["out"]
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_head_init():
    torch.manual_seed(0)
    model = build_model("deeplabv3plus_tiny", C)
    for m in model.decode_head.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    # kaiming normal, fan_out, ReLU gain: std = sqrt(2 / (out_channels · k · k))
    fuse = model.decode_head.aspp.bottleneck[0]
    expected = (2 / (fuse.out_channels * 9)) ** 0.5
    assert fuse.weight.std().item() == pytest.approx(expected, rel=0.1)
    cls = model.decode_head.classifier[-1]
    assert cls.weight.std().item() == pytest.approx(0.01, rel=0.2) and torch.all(cls.bias == 0)


def test_spatial_gather_is_region_weighted_mean():
    feats = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    regions = torch.full((2, 1, 2, 2), -1e4)
    regions[:, 0, 1, 0] = 0.0       # region 0 is exactly pixel (1, 0)
    regions = torch.cat([regions, torch.zeros(2, 1, 2, 2)], dim=1)   # region 1: uniform over all pixels
    got = spatial_gather(feats, regions)
    assert got.shape == (2, 3, 2, 1)
    torch.testing.assert_close(got[:, :, 0, 0], feats[:, :, 1, 0])
    torch.testing.assert_close(got[:, :, 1, 0], feats.mean(dim=(2, 3)))


# ------------------------------------------------------------------------------------------ errors
def test_unknown_name_raises():
    with pytest.raises(ValueError, match=r"name must be one of .*deeplabv3plus_r101.*'unet'"):
        build_model("unet", C)


@pytest.mark.parametrize("output_stride", [4, 32, "8"])
def test_bad_output_stride_raises(output_stride):
    with pytest.raises(ValueError, match=r"output_stride must be one of \[8, 16\]"):
        build_model("deeplabv3plus_tiny", C, output_stride=output_stride)


# ------------------------------------------------------------------------------------------ weights
@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    """An empty torch hub cache, downloads off, and any download attempt is a test failure."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(ALLOW_DOWNLOAD_ENV, raising=False)

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return tmp_path / "torch" / "hub"


def test_backbone_weights_from_local_file_and_hub_cache(tmp_path, hub_dir):
    torch.manual_seed(1)
    reference = torchvision.models.resnet50(weights=None).state_dict()
    path = tmp_path / "resnet50.pth"
    torch.save(reference, path)
    model = build_model("deeplabv3plus_r50", C, backbone_weights=path)
    loaded = model.backbone.state_dict()
    assert set(loaded) == {k for k in reference if not k.startswith("fc.")}
    assert all(torch.equal(loaded[k], reference[k]) for k in loaded)

    # The same file under its torch hub name is found by weights name, without any download.
    weights = torchvision.models.ResNet50_Weights.IMAGENET1K_V2
    cached = hub_cache_path(weights)
    assert cached.parent == hub_dir / "checkpoints"
    cached.parent.mkdir(parents=True)
    path.rename(cached)
    backbone = model.backbone
    for p in backbone.parameters():
        p.data.zero_()
    load_backbone_weights(backbone, "ResNet50_Weights.IMAGENET1K_V2")
    assert all(torch.equal(backbone.state_dict()[k], reference[k]) for k in loaded)


def test_weights_name_offline_error_says_how_to_provide_it(hub_dir):
    backbone = build_model("deeplabv3plus_r50", C).backbone
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError) as info:
        load_backbone_weights(backbone, "ResNet50_Weights.IMAGENET1K_V2")
    assert time.perf_counter() - start < 5
    message = str(info.value)
    expected = hub_dir / "checkpoints" / "resnet50-11ad3fa6.pth"
    assert str(expected) in message
    assert "download.pytorch.org/models/resnet50-11ad3fa6.pth" in message
    assert "torch.hub.get_dir()" in message and ALLOW_DOWNLOAD_ENV in message


def test_weights_errors(tmp_path, hub_dir):
    backbone = build_model("deeplabv3plus_r50", C).backbone
    with pytest.raises(ValueError, match="are not resnet50 weights"):
        load_backbone_weights(backbone, "ResNet101_Weights.IMAGENET1K_V2")
    with pytest.raises(ValueError, match="not a torchvision weights name"):
        load_backbone_weights(backbone, "ResNet50_Weights.NO_SUCH_WEIGHTS")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_backbone_weights(backbone, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="torchvision weights fit only the ResNet"):
        build_model("deeplabv3plus_tiny", C, backbone_weights="ResNet50_Weights.IMAGENET1K_V2")


def test_strict_key_check_on_local_file(tmp_path):
    state = build_model("ocr_tiny", C).backbone.state_dict()
    path = tmp_path / "tiny.pth"
    torch.save(state, path)
    build_model("ocr_tiny", C, backbone_weights=path)        # exact keys load
    state["fc.weight"] = torch.zeros(3, 3)                  # a classifier is ignored
    torch.save(state, path)
    build_model("ocr_tiny", C, backbone_weights=path)
    del state["layer4.0.conv1.0.weight"]                    # a missing backbone key is not
    torch.save(state, path)
    with pytest.raises(ValueError, match="layer4.0.conv1.0.weight"):
        build_model("ocr_tiny", C, backbone_weights=path)


def test_model_classes():
    assert isinstance(build_model("deeplabv3plus_tiny", C), DeepLabV3Plus)
    assert isinstance(build_model("ocr_tiny", C), OCRNet)


def test_paper_configs_start_from_imagenet_weights_in_the_hub_cache(hub_dir):
    """The paper configs default to torchvision's ImageNet ResNet101, found in torch hub's cache (no download);
    without the file, one error names the expected path and the setting that trains from scratch."""
    for name in ("paper_cityscapes_coarse.yaml", "paper_cityscapes_fine.yaml", "paper_ade20k.yaml"):
        assert load_config(CONFIG_DIR / name).backbone_weights == PAPER_BACKBONE_WEIGHTS
    cfg = load_config(CONFIG_DIR / "paper_cityscapes_coarse.yaml")
    backbone = ResNetBackbone("resnet101", output_stride=cfg.output_stride)
    expected = hub_dir / "checkpoints" / "resnet101-63fe2227.pth"
    with pytest.raises(FileNotFoundError) as info:
        load_backbone_weights(backbone, cfg.backbone_weights)
    message = str(info.value)
    assert "\n" not in message and str(expected) in message and "backbone_weights=null trains from scratch" in message

    torch.manual_seed(2)
    reference = torchvision.models.resnet101(weights=None).state_dict()   # stands in for the ImageNet file
    expected.parent.mkdir(parents=True)
    torch.save(reference, expected)
    load_backbone_weights(backbone, cfg.backbone_weights)
    assert all(torch.equal(v, reference[k]) for k, v in backbone.state_dict().items())


def test_missing_weights_file_names_it_and_the_from_scratch_setting(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.pth.*backbone_weights=null trains from scratch"):
        load_backbone_weights(build_model("ocr_tiny", C).backbone, tmp_path / "missing.pth")
