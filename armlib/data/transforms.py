"""Joint image + mask augmentation with ``torchvision.transforms.v2`` (the paper's Sec. 4.2 pipeline).

The paper: "randomly color-jittering, randomly horizon-flipping, randomly resizing, and randomly cropping",
crop (512, 1024) on Cityscapes and (512, 512) on ADE20K. Its code follows mmsegmentation, whose pipeline is
resize (ratio 0.5–2.0 of the base scale) → crop (padding the mask with 255) → flip → photometric distortion
→ normalise. We keep that order, with these differences, all deliberate:

* the random resize is relative to each image's own size (mmseg resizes relative to a fixed scale equal to
  Cityscapes' native 2048×1024, so the two coincide there);
* colour jitter is ``v2.ColorJitter`` (all four jitters, random order) with mmseg's strengths expressed in
  torchvision's units: brightness ±0.125 (mmseg: ±32/255, additive; here multiplicative), contrast and
  saturation ×[0.5, 1.5], hue ±0.05 (mmseg: ±18°);
* mmseg's ``cat_max_ratio`` re-cropping (retry a crop dominated by one class) is left out.

Transforms take and return ``(image, mask, *more_masks)``: image ``tv_tensors.Image`` uint8 3×H×W, masks
``tv_tensors.Mask`` H×W; they return image float32 3×h×w (ImageNet-normalised) and masks int64 h×w.
Randomness comes from torch's global generator, so ``torch.manual_seed`` makes them deterministic (and
DataLoader workers get distinct, reproducible streams).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

__all__ = ["train_transform", "eval_transform", "RandomScale", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IGNORE_INDEX = 255
DEFAULT_COLOR_JITTER = (0.125, 0.5, 0.5, 0.05)  # brightness, contrast, saturation, hue (see module docstring)


class RandomScale(v2.Transform):
    """Resize image and masks together by one factor drawn uniformly from ``scale_range``.

    Relative to the input's own size (``v2.RandomResize`` and ``v2.ScaleJitter`` take absolute target sizes).
    Images use bilinear interpolation with antialiasing; masks use nearest-exact, so no new label values
    appear and each mask pixel is sampled at the centre the image pixel is interpolated around.
    """

    def __init__(self, scale_range: tuple[float, float] = (0.5, 2.0)):
        super().__init__()
        low, high = (float(v) for v in scale_range)
        if not 0 < low <= high:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {scale_range}")
        self.scale_range = (low, high)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        low, high = self.scale_range
        scale = low + float(torch.rand(())) * (high - low)
        return {"size": [max(1, round(height * scale)), max(1, round(width * scale))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        # NEAREST_EXACT samples masks at the same pixel centres that bilinear uses for the image; plain
        # NEAREST (v2's default for masks) is offset by up to half an input pixel, misaligning boundaries.
        mode = v2.InterpolationMode.NEAREST_EXACT if isinstance(inpt, tv_tensors.Mask) else v2.InterpolationMode.BILINEAR
        return self._call_kernel(F.resize, inpt, params["size"], interpolation=mode, antialias=True)


class SegmentationTransform:
    """``(image, mask, *masks) -> (image, mask, *masks)`` around a ``v2.Compose``; returns a tuple always.

    Wrapping plain tensors as tv_tensors here keeps the contract when a caller passes ``torch.Tensor``s:
    v2 would otherwise treat a bare tensor as an image and jitter/normalise a mask.
    """

    def __init__(self, transforms: Sequence[v2.Transform]):
        self.pipeline = v2.Compose(list(transforms))

    def __call__(self, image, *masks):
        if not masks:
            raise TypeError("a segmentation transform needs (image, mask, ...), got only an image")
        if not isinstance(image, tv_tensors.Image):
            image = tv_tensors.Image(image)
        masks = tuple(m if isinstance(m, tv_tensors.Mask) else tv_tensors.Mask(m) for m in masks)
        return tuple(self.pipeline(image, *masks))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.pipeline})"


def _to_float_normalised() -> list[v2.Transform]:
    return [
        # scale=True: uint8 0..255 -> float 0..1 for the image; masks only change dtype.
        v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64, "others": None}, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ]


def train_transform(crop_size: tuple[int, int] = (512, 1024), scale_range: tuple[float, float] = (0.5, 2.0),
                    hflip: float = 0.5,
                    color_jitter: tuple[float, float, float, float] | None = DEFAULT_COLOR_JITTER,
                    ) -> SegmentationTransform:
    """Training augmentation: random scale → random crop (padding) → horizontal flip → colour jitter → normalise.

    Args:
        crop_size: ``(H, W)`` of the output; smaller inputs are padded (image with 0, masks with 255).
        scale_range: resize factor range relative to the input size.
        hflip: probability of a horizontal flip.
        color_jitter: ``(brightness, contrast, saturation, hue)`` for ``v2.ColorJitter``, or None to disable.
    Returns:
        callable ``(image, mask, *masks) -> (image float32 3×H×W, mask int64 H×W, ...)``.
    """
    height, width = (int(v) for v in crop_size)
    if height <= 0 or width <= 0:
        raise ValueError(f"crop_size must be positive (H, W), got {crop_size}")
    if not 0.0 <= hflip <= 1.0:
        raise ValueError(f"hflip must be a probability in [0, 1], got {hflip}")
    steps: list[v2.Transform] = [
        RandomScale(scale_range),
        # v2's fill dict pads each tv_tensor type with its own value: black image, ignored mask.
        v2.RandomCrop((height, width), pad_if_needed=True,
                      fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}),
        v2.RandomHorizontalFlip(hflip),
    ]
    if color_jitter is not None:
        brightness, contrast, saturation, hue = color_jitter
        steps.append(v2.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue))
    return SegmentationTransform(steps + _to_float_normalised())


def eval_transform() -> SegmentationTransform:
    """Evaluation: only ``ToDtype`` (image float 0..1, masks int64) and ImageNet ``Normalize``; no resizing."""
    return SegmentationTransform(_to_float_normalised())
