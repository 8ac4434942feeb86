"""Pieces shared by the segmentation heads: separable conv, the FCN head, head init, and the output dict.

Forward contract of every armlib model (``model(x)``, x N×3×H×W):

- ``"out"``: N×C×H×W logits, bilinearly upsampled (``align_corners=False``) to the input size;
- ``"aux"``: N×C×H×W auxiliary logits (FCN head on stage 3), only when built with ``aux=True`` and
  ``model.training``; the trainer weights its loss by :data:`AUX_LOSS_WEIGHT`;
- ``"log_s"``: N×1×H×W predicted log-uncertainty, only when built with ``uncertainty=True`` (the KL loss of
  Table 4: the main classifier has C+1 output channels and the last one is split off).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import Conv2dNormActivation

AUX_LOSS_WEIGHT = 0.4   # paper §4.2 (and mmsegmentation's auxiliary FCN head / OCR soft-region head)
DROPOUT = 0.1           # mmsegmentation's dropout_ratio before every classifier


def separable_conv(in_channels: int, out_channels: int, dilation: int = 1) -> nn.Sequential:
    """Depthwise 3×3 (dilated) conv-BN-ReLU then pointwise 1×1 conv-BN-ReLU (mmcv's
    ``DepthwiseSeparableConvModule``, DeepLabV3+'s atrous separable conv). N×C_in×H×W → N×C_out×H×W."""
    return nn.Sequential(
        Conv2dNormActivation(in_channels, in_channels, 3, dilation=dilation, groups=in_channels),
        Conv2dNormActivation(in_channels, out_channels, 1),
    )


def classifier(in_channels: int, num_classes: int) -> nn.Sequential:
    """Dropout2d(0.1) + 1×1 conv with bias, mmsegmentation's ``cls_seg``. N×C_in×h×w → N×num_classes×h×w."""
    return nn.Sequential(nn.Dropout2d(DROPOUT), nn.Conv2d(in_channels, num_classes, 1))


class FCNHead(nn.Sequential):
    """mmsegmentation's FCNHead with ``num_convs=1, concat_input=False``: 3×3 conv-BN-ReLU, dropout, 1×1.

    Used as DeepLabV3+'s auxiliary head and as OCR's soft object-region head, both on stage 3.
    N×C_in×h×w → N×num_classes×h×w.
    """

    def __init__(self, in_channels: int, channels: int, num_classes: int) -> None:
        super().__init__(Conv2dNormActivation(in_channels, channels, 3), *classifier(channels, num_classes))
        init_head_(self)


def init_head_(module: nn.Module) -> None:
    """Init a head in place: kaiming-normal (fan_out, ReLU) convs, BN weight 1 / bias 0, and the final
    classifier conv (the last ``Conv2d`` of ``module``) N(0, 0.01) with zero bias, as mmsegmentation's
    ``normal_init(conv_seg, std=0.01)`` — small initial logits, so the starting loss is ≈ log C."""
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if convs:
        nn.init.normal_(convs[-1].weight, std=0.01)


def resize(x: Tensor, size: tuple[int, int] | list[int]) -> Tensor:
    """Bilinear resize with ``align_corners=False`` (mmsegmentation's and torchvision's choice)."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def assemble_outputs(logits: Tensor, aux_logits: Tensor | None, size: tuple[int, int] | list[int],
                     uncertainty: bool) -> dict[str, Tensor]:
    """Upsample head outputs to the input ``size`` and build the output dict.

    Args:
        logits: N×C×h×w, or N×(C+1)×h×w when ``uncertainty`` (last channel = log s).
        aux_logits: N×C×h'×w' or None (not returned).
        size: the input's (H, W).

    Returns:
        {"out": N×C×H×W, ["aux": N×C×H×W], ["log_s": N×1×H×W]}.
    """
    logits = resize(logits, size)
    outputs = {}
    if uncertainty:
        outputs["out"], outputs["log_s"] = logits[:, :-1], logits[:, -1:]
    else:
        outputs["out"] = logits
    if aux_logits is not None:
        outputs["aux"] = resize(aux_logits, size)
    return outputs
