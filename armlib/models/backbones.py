"""Dilated ResNet backbones returning the three feature maps the heads need, and backbone-weight loading.

Every backbone maps an image N×3×H×W to an ordered dict of features:

- ``"low"``: stage 1 (stride 4), the DeepLabV3+ decoder's low-level skip, N×C_low×H/4×W/4;
- ``"aux"``: stage 3, input of the auxiliary FCN head / OCR soft-region head, N×C_aux×H/s×W/s;
- ``"out"``: stage 4, input of ASPP / OCR, N×C_out×H/s×W/s,

where ``s`` is the output stride (8 or 16; stage 3 is at stride 8 when s = 8 and 16 when s = 16). The last
stages keep their resolution by dilation instead of striding, as in DeepLab and mmsegmentation's ``-d8``
models (torchvision's ``replace_stride_with_dilation``).

Weights: ``build_model`` initialises at random unless given ``backbone_weights``; the paper configs
(``configs/paper_*.yaml``) set ``PAPER_BACKBONE_WEIGHTS``, torchvision's ImageNet ResNet101, because the paper
follows mmsegmentation, whose Cityscapes and ADE20K baselines start from ImageNet weights. ``load_backbone_weights``
takes a local state_dict file or a torchvision weights name; a name is served from torch hub's cache only, and
downloading is off unless ``ARMLIB_ALLOW_DOWNLOAD=1`` (compute nodes are often offline, and a blocked download can
hang). A missing file raises one ``FileNotFoundError`` naming the expected path and ``backbone_weights=null``,
the setting that trains from scratch.

Why torchvision's ResNet and not mmsegmentation's ResNetV1c: V1c replaces the 7×7 stride-2 stem convolution by
three 3×3 convolutions (3→32 stride 2, 32→32, 32→64), so its checkpoints (``open-mmlab://resnet101_v1c``) do not
load into a torchvision ResNet, and armlib's backbone is torchvision's (``ResNetBackbone``), whose checkpoints
ship with torchvision and load with strict key checks. Of torchvision's two, ``IMAGENET1K_V1`` (77.37 % top-1) is
trained with the classic recipe, as the checkpoints mmsegmentation's baselines start from; ``IMAGENET1K_V2``
(81.89 %, a longer modern recipe) is a stronger start than the paper had. What the difference costs: the deep
stem adds 2.5 GMAC (5.0 GFLOP) per 512×1024 image forward, about 0.5 % of DeepLabV3+ R101 at output stride 8;
its effect on mIoU was not measured here (it needs the real datasets and GPUs).
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import Tensor, nn
from torchvision.ops import Conv2dNormActivation

# Stage dilation per output stride, in torchvision's ``replace_stride_with_dilation`` form (layer2..layer4).
DILATION_BY_OUTPUT_STRIDE = {8: [False, True, True], 16: [False, False, True]}
OUTPUT_STRIDES = tuple(DILATION_BY_OUTPUT_STRIDE)
ALLOW_DOWNLOAD_ENV = "ARMLIB_ALLOW_DOWNLOAD"  # "1" lets a torchvision weights name be downloaded
PAPER_BACKBONE_WEIGHTS = "ResNet101_Weights.IMAGENET1K_V1"  # the paper configs' default (module docstring: why)
FROM_SCRATCH = "backbone_weights=null trains from scratch"


def check_output_stride(output_stride: int) -> None:
    """Raise ``ValueError`` naming ``output_stride`` and the valid choices."""
    if output_stride not in DILATION_BY_OUTPUT_STRIDE:
        raise ValueError(f"output_stride must be one of {list(OUTPUT_STRIDES)}, got {output_stride!r}")


class _StagesBackbone(nn.Module):
    """Runs ``conv1, bn1, relu, maxpool, layer1..layer4`` and returns stages 1, 3 and 4.

    Subclasses create exactly torchvision ResNet's attribute names, so the backbone's state_dict keys are
    torchvision's minus ``fc.*`` and a torchvision checkpoint loads with strict key checks.
    """

    channels: dict[str, int]   # channels of "low", "aux", "out"
    output_stride: int

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        """N×3×H×W → {"low": N×C×H/4×W/4, "aux": N×C×H/s×W/s, "out": N×C×H/s×W/s}."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low = self.layer1(x)
        aux = self.layer3(self.layer2(low))
        out = self.layer4(aux)
        return OrderedDict(low=low, aux=aux, out=out)


class ResNetBackbone(_StagesBackbone):
    """torchvision ResNet50/101 (Bottleneck, plain 7×7 stem) with dilated last stages.

    mmsegmentation uses ResNetV1c (three 3×3 convs in the stem); we keep torchvision's stem so that
    torchvision's ImageNet checkpoints load unchanged.
    """

    ARCHS = ("resnet50", "resnet101")

    def __init__(self, arch: str = "resnet101", output_stride: int = 8) -> None:
        super().__init__()
        if arch not in self.ARCHS:
            raise ValueError(f"arch must be one of {list(self.ARCHS)}, got {arch!r}")
        check_output_stride(output_stride)
        resnet = getattr(torchvision.models, arch)(
            weights=None, replace_stride_with_dilation=DILATION_BY_OUTPUT_STRIDE[output_stride])
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, getattr(resnet, name))   # avgpool/fc are dropped: not needed for dense output
        self.arch = arch
        self.output_stride = output_stride
        self.channels = {"low": 256, "aux": 1024, "out": 2048}


class BasicBlock(nn.Module):
    """ResNet basic block (two 3×3 convs + identity) that, unlike torchvision's, supports dilation.

    N×C_in×H×W → N×C_out×H/stride×W/stride.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1,
                 first_dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = Conv2dNormActivation(in_channels, out_channels, 3, stride=stride, dilation=first_dilation)
        self.conv2 = Conv2dNormActivation(out_channels, out_channels, 3, dilation=dilation, activation_layer=None)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = Conv2dNormActivation(in_channels, out_channels, 1, stride=stride,
                                                   activation_layer=None)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + identity)


class TinyResNet(_StagesBackbone):
    """A narrow ResNet of dilated BasicBlocks for CPU runs, with ResNet's stage layout and strides.

    Stem: one 3×3 stride-2 conv + 3×3 stride-2 max-pool (stride 4). Stages of ``blocks[i]`` BasicBlocks with
    ``widths[i]`` channels; stages 2–4 stride 2 or, per ``output_stride``, keep the resolution by dilation
    (first block of a dilated stage keeps the previous dilation, as in torchvision's ``_make_layer``).
    """

    def __init__(self, widths: tuple[int, int, int, int] = (16, 24, 32, 64),
                 blocks: tuple[int, int, int, int] = (1, 1, 1, 1), stem_width: int = 16,
                 output_stride: int = 8) -> None:
        super().__init__()
        check_output_stride(output_stride)
        self.conv1 = nn.Conv2d(3, stem_width, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        dilate = [False, *DILATION_BY_OUTPUT_STRIDE[output_stride]]
        in_ch, dilation = stem_width, 1
        for i, (width, n_blocks) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            previous = dilation
            if dilate[i]:
                dilation, stride = dilation * stride, 1
            layers = [BasicBlock(in_ch, width, stride, dilation, first_dilation=previous)]
            layers += [BasicBlock(width, width, 1, dilation, first_dilation=dilation) for _ in range(n_blocks - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
            in_ch = width
        for m in self.modules():   # torchvision ResNet's init (BN layers start at weight 1, bias 0)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.output_stride = output_stride
        self.channels = {"low": widths[0], "aux": widths[2], "out": widths[3]}


# --------------------------------------------------------------------------------------------- weights
def _strict_load(backbone: nn.Module, state_dict: dict, source: str) -> None:
    """Load ``state_dict`` (``fc.*`` ignored) into ``backbone`` with strict key and shape checks."""
    if not isinstance(state_dict, dict):
        raise ValueError(f"backbone_weights {source} must hold a state_dict, got {type(state_dict).__name__}")
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
    try:
        backbone.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:   # re-raised so the message says which file and which backbone
        raise ValueError(f"backbone_weights {source} does not match the {type(backbone).__name__} "
                         f"backbone: {err}") from err


def hub_cache_path(weights: torchvision.models.WeightsEnum) -> Path:
    """Where ``torch.hub`` caches ``weights``: ``torch.hub.get_dir()/checkpoints/<file name of its URL>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def load_backbone_weights(backbone: nn.Module, backbone_weights: str | os.PathLike,
                          allow_download: bool | None = None) -> None:
    """Load ImageNet (or any) weights into ``backbone`` in place.

    Args:
        backbone: a :class:`ResNetBackbone` or :class:`TinyResNet`.
        backbone_weights: a local file holding a torchvision-ResNet state_dict (``fc.*`` ignored, every other
            key must match), or a torchvision weights name such as ``"ResNet101_Weights.IMAGENET1K_V2"``
            (ResNet backbones only), looked up in torch hub's cache.
        allow_download: let torch download a missing weights name; default: ``ARMLIB_ALLOW_DOWNLOAD == "1"``.

    Raises:
        FileNotFoundError: a named file is absent, or a weights name is not cached and downloads are off;
            the message says where to put the file.
        ValueError: an unknown weights name, weights of another architecture, or keys/shapes that differ.
    """
    spec = os.fspath(backbone_weights)
    if os.path.isfile(spec):
        _strict_load(backbone, torch.load(spec, map_location="cpu", weights_only=True), repr(spec))
        return
    if "_Weights." not in spec:
        raise FileNotFoundError(f"backbone_weights={spec!r}: no such file, and not a torchvision weights name "
                                f"like {PAPER_BACKBONE_WEIGHTS!r}; {FROM_SCRATCH}")
    if not isinstance(backbone, ResNetBackbone):
        raise ValueError(f"backbone_weights={spec!r}: torchvision weights fit only the ResNet backbones; "
                         f"pass a local state_dict file for {type(backbone).__name__}")
    try:
        weights = torchvision.models.get_weight(spec)
    except (ValueError, KeyError, AttributeError) as err:
        raise ValueError(f"backbone_weights={spec!r} is not a torchvision weights name: {err}") from err
    valid = list(torchvision.models.get_model_weights(backbone.arch))
    if weights not in valid:
        raise ValueError(f"backbone_weights={spec!r} are not {backbone.arch} weights; "
                         f"valid choices: {[str(w) for w in valid]}")
    cached = hub_cache_path(weights)
    if allow_download is None:
        allow_download = os.environ.get(ALLOW_DOWNLOAD_ENV) == "1"
    if cached.is_file():
        state_dict = torch.load(cached, map_location="cpu", weights_only=True)
    elif allow_download:
        state_dict = weights.get_state_dict(progress=True, check_hash=True)
    else:
        raise FileNotFoundError(
            f"backbone_weights={spec!r} is not in torch hub's cache and downloading is off (set "
            f"{ALLOW_DOWNLOAD_ENV}=1 to allow it on a machine with internet). Download {weights.url} "
            f"elsewhere and put it at {cached} (torch.hub.get_dir()/checkpoints/), or pass its local path "
            f"as backbone_weights='/path/to/{cached.name}'; {FROM_SCRATCH}.")
    _strict_load(backbone, state_dict, f"{spec!r} ({cached})")
