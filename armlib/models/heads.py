"""Pieces shared by the segmentation heads: separable conv, the FCN head, head init, and the output dict.

Forward contract of every armlib model (``model(x)``, x N×3×H×W):

- ``"out"``: N×C×H×W logits, bilinearly upsampled (``align_corners=False``) to the input size;
- ``"aux"``: N×C×H×W auxiliary logits (FCN head on stage 3), only when built with ``aux=True`` and
  ``model.training``; the trainer weights its loss by :data:`AUX_LOSS_WEIGHT`;
- ``"log_s"``: N×1×H×W predicted log-uncertainty, only when built with ``uncertainty=True`` (the KL loss of
  Table 4: the main classifier has C+1 output channels and the last one is split off).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import Conv2dNormActivation
from torchvision.ops.misc import ConvNormActivation

AUX_LOSS_WEIGHT = 0.4   # paper §4.2 (and mmsegmentation's auxiliary FCN head / OCR soft-region head)
DROPOUT = 0.1           # mmsegmentation's dropout_ratio before every classifier


class DilatedConv2d(nn.Conv2d):
    """Depthwise ``nn.Conv2d`` with 'same' zero padding and stride 1 that skips the taps reading only padding.

    On an axis of n pixels, the tap at offset j·dilation (|j| ≤ k // 2) reads an input pixel for some output
    only when |j|·dilation ≤ n − 1; otherwise it multiplies zeros for every output. ASPP's rates 24 and 36 on
    the quick scale's 8×16 feature map leave only the centre tap, rate 12 only the centre row. Those taps are
    cut from the kernel for the call: the same products are summed, the skipped weights get the zero gradient
    they get in the full convolution, and the weight keeps its k×k shape (checkpoints are unchanged).
    Depthwise and without bias only: each output then sums its own channel's taps, and dropping terms that
    are zero leaves the sum bit for bit; a dense convolution's sum over channels and taps, and a bias, are
    accumulated in an order that changes with the kernel's size (1e-7 differences).
    ``tests/test_dilated_conv.py`` checks outputs, gradients and a training run bit for bit against ``nn.Conv2d``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        same = tuple(d * (k // 2) for d, k in zip(self.dilation, self.kernel_size))
        if (self.stride != (1, 1) or self.padding != same or self.padding_mode != "zeros"
                or not all(k % 2 for k in self.kernel_size) or self.groups != self.in_channels
                or self.bias is not None):
            raise ValueError(f"DilatedConv2d needs a depthwise conv (groups = in_channels, bias=False) with an "
                             f"odd kernel, stride 1 and zero padding dilation·(k // 2) (got kernel "
                             f"{self.kernel_size}, groups {self.groups} of {self.in_channels} channels, stride "
                             f"{self.stride}, padding {self.padding}, {self.padding_mode!r})")

    def _conv_forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        half = [min(k // 2, (n - 1) // d) for k, n, d in zip(self.kernel_size, x.shape[-2:], self.dilation)]
        if half == [k // 2 for k in self.kernel_size]:
            return super()._conv_forward(x, weight, bias)
        (kh, kw), (mh, mw) = self.kernel_size, half
        weight = weight[:, :, kh // 2 - mh: kh // 2 + mh + 1, kw // 2 - mw: kw // 2 + mw + 1]
        padding = (mh * self.dilation[0], mw * self.dilation[1])
        return F.conv2d(x, weight, bias, self.stride, padding, self.dilation, self.groups)


class _DepthwiseConvNormActivation(ConvNormActivation):
    """``Conv2dNormActivation(channels, channels, 3, dilation=dilation, groups=channels)`` whose conv is a
    :class:`DilatedConv2d` when dilated (``Conv2dNormActivation`` fixes its conv class to ``nn.Conv2d``)."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__(channels, channels, 3, dilation=dilation, groups=channels,
                         conv_layer=DilatedConv2d if dilation > 1 else nn.Conv2d)


def separable_conv(in_channels: int, out_channels: int, dilation: int = 1) -> nn.Sequential:
    """Depthwise 3×3 (dilated) conv-BN-ReLU then pointwise 1×1 conv-BN-ReLU (mmcv's
    ``DepthwiseSeparableConvModule``, DeepLabV3+'s atrous separable conv). N×C_in×H×W → N×C_out×H×W.
    A dilated depthwise conv is a :class:`DilatedConv2d` (same numbers, fewer multiplications by padding)."""
    return nn.Sequential(
        _DepthwiseConvNormActivation(in_channels, dilation),
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


def resize(x: Tensor, size: tuple[int, int] | list[int], matmul: bool = False) -> Tensor:
    """Bilinear resize with ``align_corners=False`` (mmsegmentation's and torchvision's choice).

    ``matmul=True``: the same interpolation as ``A_hᵀ · x · A_w``, the matrices being ``F.interpolate`` of the
    identity along one axis. Two small matmuls run faster than ``F.interpolate`` on one CPU thread at the quick
    scale but sum in another order, so the result differs by rounding (BENCHMARKS.md, config ``matmul_resize``).
    """
    if not matmul:
        return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
    rows, cols = (F.interpolate(torch.eye(n, dtype=x.dtype, device=x.device).unsqueeze(0), size=m, mode="linear",
                                align_corners=False)[0] for n, m in zip(x.shape[-2:], size))   # n × m each
    return rows.t() @ x @ cols


def assemble_outputs(logits: Tensor, aux_logits: Tensor | None, size: tuple[int, int] | list[int],
                     uncertainty: bool, matmul_resize: bool = False) -> dict[str, Tensor]:
    """Upsample head outputs to the input ``size`` and build the output dict.

    Args:
        logits: N×C×h×w, or N×(C+1)×h×w when ``uncertainty`` (last channel = log s).
        aux_logits: N×C×h'×w' or None (not returned).
        size: the input's (H, W).
        matmul_resize: upsample with :func:`resize`'s matmul form.

    Returns:
        {"out": N×C×H×W, ["aux": N×C×H×W], ["log_s": N×1×H×W]}.
    """
    logits = resize(logits, size, matmul_resize)
    outputs = {}
    if uncertainty:
        outputs["out"], outputs["log_s"] = logits[:, :-1], logits[:, -1:]
    else:
        outputs["out"] = logits
    if aux_logits is not None:
        outputs["aux"] = resize(aux_logits, size, matmul_resize)
    return outputs
