"""Segmentation models and their registry: DeepLabV3+ and OCRNet on dilated ResNet50/101, and tiny CPU twins.

    model = build_model("deeplabv3plus_r101", num_classes=19, output_stride=8)
    outputs = model(images)    # images N×3×H×W; in training mode: {"out": ..., "aux": ...}
    loss = ce(outputs["out"], target) + AUX_LOSS_WEIGHT * ce(outputs["aux"], target)

Every model maps x N×3×H×W to {"out": N×C×H×W, "aux": N×C×H×W (training only, aux=True),
"log_s": N×1×H×W (uncertainty=True)}; see :mod:`armlib.models.heads`. The trainer weights the "aux" loss
by :data:`AUX_LOSS_WEIGHT`. BatchNorm is plain ``nn.BatchNorm2d`` (convert to SyncBatchNorm under DDP).
"""
from __future__ import annotations

import contextlib
import os

import torch
from torch import nn

from armlib.models.backbones import (OUTPUT_STRIDES, ResNetBackbone, TinyResNet, check_output_stride,
                                     load_backbone_weights)
from armlib.models.deeplabv3plus import ASPP_RATES, DeepLabV3Plus
from armlib.models.heads import AUX_LOSS_WEIGHT
from armlib.models.ocr import OCRNet

# Tiny twins for the smoke and quick scales on a 2-core CPU: the same heads (ASPP with image pooling and
# rates 12/24/36 or 6/12/18, stride-4 skip, two separable decoder convs, aux FCN / OCR), narrow widths: a
# ResNet-10 of dilated BasicBlocks, ASPP/decoder 32 (mmseg 512), skip 8 (48), aux FCN 16 (256). Sized so one
# SGD step (batch 8, 128×256, 19 classes, CE on "out" + 0.4 CE on "aux") takes ≈ 0.3 s on one thread at
# output stride 8 (less at 16). About 40% of that is the full-resolution upsampling and cross-entropy of the
# two outputs, which no width choice removes.
TINY_BACKBONE = dict(widths=(16, 24, 32, 64), blocks=(1, 1, 1, 1), stem_width=16)
TINY_DEEPLAB = dict(channels=32, low_level_channels=8, aux_channels=16)
TINY_OCR = dict(channels=32, ocr_channels=16, region_channels=16)

_RESNET = {"r50": "resnet50", "r101": "resnet101"}
MODEL_NAMES = ("deeplabv3plus_r50", "deeplabv3plus_r101", "ocr_r50", "ocr_r101",
               "deeplabv3plus_tiny", "ocr_tiny")

__all__ = ["AUX_LOSS_WEIGHT", "ASPP_RATES", "MODEL_NAMES", "OUTPUT_STRIDES", "DeepLabV3Plus", "OCRNet",
           "ResNetBackbone", "TinyResNet", "build_model", "default_dtype", "input_dtype", "load_backbone_weights"]


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """Tensors and parameters created inside are ``dtype`` by default (``torch.set_default_dtype``, restored after).

    Why: torch draws float32 normal and uniform numbers with kernels compiled per instruction set, which differ in
    the last bits between them (measured: ``randn`` 1.6e-6 apart under ``ATEN_CPU_CAPABILITY=default``); its
    float64 draws agree, so weights initialised inside ``default_dtype(torch.float64)`` are the same on every CPU."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def input_dtype(model: nn.Module) -> torch.dtype:
    """The dtype a model's images must have: its first floating parameter's (float32 for a model without one).
    float64 for a run trained with ``cpu_float64``; under CUDA autocast the parameters stay float32."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def build_model(name: str, num_classes: int, *, output_stride: int = 8,
                backbone_weights: str | os.PathLike | None = None, uncertainty: bool = False,
                aux: bool = True, matmul_resize: bool = False) -> nn.Module:
    """Build a registered segmentation model.

    Args:
        name: one of :data:`MODEL_NAMES` (``<head>_<backbone>``).
        num_classes: C, number of output classes.
        output_stride: 8 (the paper's) or 16: stride of the stage-4 features; picks the dilations and the
            ASPP rates (12, 24, 36) / (6, 12, 18).
        backbone_weights: None (random init, the default), a local torchvision-ResNet state_dict file, or a
            torchvision weights name like ``"ResNet101_Weights.IMAGENET1K_V2"`` served from torch hub's
            cache (see :func:`armlib.models.backbones.load_backbone_weights`).
        uncertainty: add the log-uncertainty channel ``"log_s"`` for the KL loss (Table 4).
        aux: return the auxiliary (FCN / OCR soft-region) logits ``"aux"`` in training.
        matmul_resize: upsample the logits as two matmuls (:func:`armlib.models.heads.resize`; rounds differently).

    Raises:
        ValueError: unknown ``name`` or ``output_stride`` (the message lists the valid choices).
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"name must be one of {list(MODEL_NAMES)}, got {name!r}")
    check_output_stride(output_stride)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    head, backbone_name = name.rsplit("_", 1)
    if backbone_name == "tiny":
        backbone = TinyResNet(**TINY_BACKBONE, output_stride=output_stride)
        widths = TINY_DEEPLAB if head == "deeplabv3plus" else TINY_OCR
    else:
        backbone = ResNetBackbone(_RESNET[backbone_name], output_stride=output_stride)
        widths = {}
    if backbone_weights is not None:
        load_backbone_weights(backbone, backbone_weights)
    model_cls = DeepLabV3Plus if head == "deeplabv3plus" else OCRNet
    return model_cls(backbone, num_classes, **widths, uncertainty=uncertainty, aux=aux, matmul_resize=matmul_resize)
