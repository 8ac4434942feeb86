"""OCRNet (Yuan, Chen & Wang, ECCV 2020), Table 3's second head, after mmsegmentation's cascade of an
``FCNHead`` (soft object regions, on stage 3) and an ``OCRHead`` (on stage 4) (``ocrnet_r50-d8.py``).

1. Soft object regions: an FCN head on stage 3 predicts K = C class maps (N×K×h×w); they are also the
   ``"aux"`` output, supervised with weight 0.4 like DeepLabV3+'s auxiliary head.
2. Pixel representations: stage 4 → 3×3 conv-BN-ReLU to ``channels`` (512).
3. Spatial gather: each region's representation is the average of pixel features weighted by the
   region map softmaxed over space — N×channels×K×1.
4. Object-contextual attention: queries (pixels) and keys (regions) through two 1×1 conv-BN-ReLU each,
   values one, to ``ocr_channels`` (256); scaled dot-product softmax over the K regions; the context is
   projected back to ``channels``, concatenated with the pixel features and fused by a 1×1 conv-BN-ReLU.
5. Dropout 0.1 + 1×1 classifier, at the backbone's output stride.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import Conv2dNormActivation

from armlib.models.backbones import check_output_stride
from armlib.models.heads import FCNHead, assemble_outputs, classifier, init_head_, resize


def spatial_gather(features: Tensor, regions: Tensor) -> Tensor:
    """Object-region representations: features averaged with spatial-softmax region weights.

    Shape: features N×D×h×w, regions N×K×h×w (logits) → N×D×K×1.
    """
    regions = regions.flatten(2)
    if regions.dtype in (torch.float16, torch.bfloat16):   # the softmax in float32 at least; float64 stays float64
        regions = regions.float()
    weights = torch.softmax(regions, dim=2).to(features.dtype)   # N×K×hw, sums to 1 over hw
    context = torch.bmm(weights, features.flatten(2).transpose(1, 2))                # N×K×D
    return context.transpose(1, 2).unsqueeze(3)                                      # N×D×K×1


def _projection(in_channels: int, out_channels: int, num_convs: int) -> nn.Sequential:
    """``num_convs`` 1×1 conv-BN-ReLU blocks (mmseg's ``key_query_num_convs`` / ``value_out_num_convs``)."""
    return nn.Sequential(*(Conv2dNormActivation(in_channels if i == 0 else out_channels, out_channels, 1)
                           for i in range(num_convs)))


class ObjectAttentionBlock(nn.Module):
    """Pixel–region attention + fuse (mmseg's ``ObjectAttentionBlock``, scale 1, no downsampling).

    Shape: pixels N×D×h×w, regions N×D×K×1 → N×D×h×w.
    """

    def __init__(self, channels: int, ocr_channels: int) -> None:
        super().__init__()
        self.ocr_channels = ocr_channels
        self.query = _projection(channels, ocr_channels, 2)
        self.key = _projection(channels, ocr_channels, 2)
        self.value = _projection(channels, ocr_channels, 1)
        self.out = _projection(ocr_channels, channels, 1)
        self.fuse = Conv2dNormActivation(2 * channels, channels, 1)

    def forward(self, pixels: Tensor, regions: Tensor) -> Tensor:
        n, _, h, w = pixels.shape
        query = self.query(pixels).flatten(2).transpose(1, 2)      # N×hw×c
        key = self.key(regions).flatten(2)                         # N×c×K
        value = self.value(regions).flatten(2).transpose(1, 2)     # N×K×c
        attention = torch.softmax(torch.bmm(query, key) * self.ocr_channels ** -0.5, dim=-1)   # N×hw×K
        context = torch.bmm(attention, value).transpose(1, 2).reshape(n, self.ocr_channels, h, w)
        return self.fuse(torch.cat([self.out(context), pixels], dim=1))


class OCRHead(nn.Module):
    """Stage-4 features + soft regions → N×num_outputs×h×w logits (at the backbone's output stride)."""

    def __init__(self, in_channels: int, num_outputs: int, channels: int = 512, ocr_channels: int = 256) -> None:
        super().__init__()
        self.bottleneck = Conv2dNormActivation(in_channels, channels, 3)
        self.object_attention = ObjectAttentionBlock(channels, ocr_channels)
        self.classifier = classifier(channels, num_outputs)
        init_head_(self)

    def forward(self, features: Tensor, soft_regions: Tensor) -> Tensor:
        pixels = self.bottleneck(features)                                            # N×channels×h×w
        regions = spatial_gather(pixels, resize(soft_regions, pixels.shape[-2:]))     # N×channels×K×1
        return self.classifier(self.object_attention(pixels, regions))


class OCRNet(nn.Module):
    """OCR head + FCN soft-region head on a dilated backbone.

    The soft-region head is part of the model (inference needs it) whatever ``aux`` says; ``aux`` only
    decides whether its logits are returned (in training) for the 0.4-weighted auxiliary loss.

    Args:
        backbone: see :class:`armlib.models.deeplabv3plus.DeepLabV3Plus`.
        num_classes: C (also the number K of soft object regions).
        channels: pixel-representation width (512 mmseg).
        ocr_channels: key/query/value width (256 mmseg).
        region_channels: hidden width of the soft-region FCN head (256 mmseg).
        uncertainty, aux, matmul_resize: as in DeepLabV3Plus.

    Shape:
        x N×3×H×W → {"out": N×C×H×W, "aux": N×C×H×W (training, aux), "log_s": N×1×H×W (uncertainty)}.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, *, channels: int = 512, ocr_channels: int = 256,
                 region_channels: int = 256, uncertainty: bool = False, aux: bool = True,
                 matmul_resize: bool = False) -> None:
        super().__init__()
        check_output_stride(backbone.output_stride)
        self.backbone = backbone
        self.num_classes = num_classes
        self.uncertainty = uncertainty
        self.matmul_resize = matmul_resize
        self.aux = aux
        self.soft_region_head = FCNHead(backbone.channels["aux"], region_channels, num_classes)
        self.decode_head = OCRHead(backbone.channels["out"], num_classes + int(uncertainty), channels, ocr_channels)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = self.backbone(x)
        soft_regions = self.soft_region_head(features["aux"])                  # N×C×h×w
        logits = self.decode_head(features["out"], soft_regions)
        aux_logits = soft_regions if self.aux and self.training else None
        return assemble_outputs(logits, aux_logits, x.shape[-2:], self.uncertainty, self.matmul_resize)
