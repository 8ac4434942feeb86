"""DeepLabV3+ (Chen et al. ECCV 2018), the paper's base model (§4.2), after mmsegmentation's
``DepthwiseSeparableASPPHead`` + auxiliary ``FCNHead`` (``configs/_base_/models/deeplabv3plus_r50-d8.py``).

Encoder: ASPP on stage 4 — image pooling (global average pool + 1×1 conv-BN-ReLU, broadcast back), a 1×1
branch and three 3×3 atrous *separable* branches — concatenated and fused by a 3×3 conv-BN-ReLU.
Decoder: the stride-4 stage-1 features reduced to 48 channels by a 1×1 conv, concatenated with the ASPP
output upsampled to stride 4, two 3×3 separable convs, dropout 0.1, 1×1 classifier.

Widths: ``channels=512`` (mmsegmentation; the original DeepLabV3+ paper and segmentation_models_pytorch use
256 in ASPP and decoder). The paper cites only the original [5], but its recipe is mmsegmentation's: the
iteration counts (40k Cityscapes, 160k ADE20K), the auxiliary FCN head with weight 0.4, the metric names
(aAcc / mAcc / mIoU), and a base model near mmsegmentation's (R101-D8, 512×1024, 40k on fine Cityscapes:
80.21 mIoU in its model zoo, 80.76 in the paper's Table 1). The wider heads and the auxiliary head make a
training step cost about 1.4× smp's FLOPs on the same backbone (BENCHMARKS.md).

Rates: (12, 24, 36) at output stride 8 (the paper's and mmseg's ``-d8`` setting) and (6, 12, 18) at output
stride 16 (DeepLabV3's convention: the rates scale with the feature resolution, so the field of view in pixels
stays the same).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import Conv2dNormActivation

from armlib.models.backbones import check_output_stride
from armlib.models.heads import FCNHead, assemble_outputs, classifier, init_head_, resize, separable_conv

ASPP_RATES = {8: (12, 24, 36), 16: (6, 12, 18)}   # atrous rates of the 3×3 branches per output stride


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling with separable atrous branches and image pooling.

    N×C_in×h×w → N×channels×h×w. ``rates`` are the dilations of the 3×3 separable branches; a 1×1 branch
    and the image-pooling branch are always present (5 branches for 3 rates).
    """

    def __init__(self, in_channels: int, channels: int, rates: tuple[int, ...]) -> None:
        super().__init__()
        self.rates = tuple(rates)
        # BN on a 1×1 pooled map needs > 1 sample per batch in training, as in torchvision and mmseg.
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), Conv2dNormActivation(in_channels, channels, 1))
        self.branches = nn.ModuleList(
            [Conv2dNormActivation(in_channels, channels, 1)]
            + [separable_conv(in_channels, channels, dilation=r) for r in self.rates])
        self.bottleneck = Conv2dNormActivation((len(self.rates) + 2) * channels, channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.image_pool(x).expand(-1, -1, *x.shape[-2:])  # N×channels×1×1 broadcast to h×w
        return self.bottleneck(torch.cat([pooled, *(branch(x) for branch in self.branches)], dim=1))


class DeepLabV3PlusHead(nn.Module):
    """ASPP + decoder + classifier. ({"low": N×C_low×H/4×W/4, "out": N×C_out×h×w}) → N×K×H/4×W/4 logits."""

    def __init__(self, in_channels: int, low_level_in_channels: int, num_outputs: int, rates: tuple[int, ...],
                 channels: int = 512, low_level_channels: int = 48) -> None:
        super().__init__()
        self.aspp = ASPP(in_channels, channels, rates)
        self.low_level = Conv2dNormActivation(low_level_in_channels, low_level_channels, 1)
        self.decoder = nn.Sequential(separable_conv(channels + low_level_channels, channels),
                                     separable_conv(channels, channels))
        self.classifier = classifier(channels, num_outputs)
        init_head_(self)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        low = self.low_level(features["low"])                       # N×48×H/4×W/4
        x = resize(self.aspp(features["out"]), low.shape[-2:])      # N×channels×H/4×W/4
        return self.classifier(self.decoder(torch.cat([x, low], dim=1)))


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ on a dilated backbone, with the auxiliary FCN head on stage 3.

    Args:
        backbone: a module returning {"low", "aux", "out"} features and exposing ``channels`` and
            ``output_stride`` (see :mod:`armlib.models.backbones`).
        num_classes: C.
        channels: ASPP/decoder width (512 mmseg, 256 original paper).
        low_level_channels: width of the reduced stride-4 skip (48).
        aux_channels: hidden width of the auxiliary FCN head (256 for ResNet's 1024-channel stage 3).
        rates: ASPP atrous rates; default :data:`ASPP_RATES` of the backbone's output stride.
        uncertainty: add a log-uncertainty output channel (``"log_s"``).
        aux: build the auxiliary head and return ``"aux"`` in training.
        matmul_resize: upsample the logits to the input size as two matmuls (:func:`armlib.models.heads.resize`;
            faster on one CPU thread, rounds differently; off by default).

    Shape:
        x N×3×H×W → {"out": N×C×H×W, "aux": N×C×H×W (training, aux), "log_s": N×1×H×W (uncertainty)}.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, *, channels: int = 512,
                 low_level_channels: int = 48, aux_channels: int = 256, rates: tuple[int, ...] | None = None,
                 uncertainty: bool = False, aux: bool = True,
                 matmul_resize: bool = False) -> None:
        super().__init__()
        check_output_stride(backbone.output_stride)
        self.backbone = backbone
        self.num_classes = num_classes
        self.uncertainty = uncertainty
        self.matmul_resize = matmul_resize
        self.decode_head = DeepLabV3PlusHead(
            backbone.channels["out"], backbone.channels["low"], num_classes + int(uncertainty),
            rates or ASPP_RATES[backbone.output_stride], channels, low_level_channels)
        self.aux_head = FCNHead(backbone.channels["aux"], aux_channels, num_classes) if aux else None

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = self.backbone(x)
        logits = self.decode_head(features)
        aux_logits = self.aux_head(features["aux"]) if self.aux_head is not None and self.training else None
        return assemble_outputs(logits, aux_logits, x.shape[-2:], self.uncertainty, self.matmul_resize)
