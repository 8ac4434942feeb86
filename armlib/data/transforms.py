"""Joint image + mask augmentation with ``torchvision.transforms.v2``'s kernels (the paper's Sec. 4.2 pipeline).

The paper: "randomly color-jittering, randomly horizon-flipping, randomly resizing, and randomly cropping",
crop (512, 1024) on Cityscapes and (512, 512) on ADE20K. Its code follows mmsegmentation, whose pipeline is
resize (ratio 0.5–2.0 of the base scale) → crop (padding the mask with 255) → flip → photometric distortion
→ normalise. We keep that order, with these differences, all deliberate:

* the random resize is relative to each image's own size (mmseg resizes relative to a fixed scale equal to
  Cityscapes' native 2048×1024, so the two coincide there);
* colour jitter is ``v2.ColorJitter``'s (all four jitters, random order) with mmseg's strengths expressed in
  torchvision's units: brightness ±0.125 (mmseg: ±32/255, additive; here multiplicative), contrast and
  saturation ×[0.5, 1.5], hue ±0.05 (mmseg: ±18°);
* mmseg's ``cat_max_ratio`` re-cropping (retry a crop dominated by one class) is left out.

:class:`TrainAugmentation` draws its parameters from an explicit ``torch.Generator`` (torch's global one when
None), in the order and with the calls of the ``v2`` transforms it replaces (``RandomScale`` → ``RandomCrop``
with ``pad_if_needed`` → ``RandomHorizontalFlip`` → ``ColorJitter``), and applies ``v2``'s own functional
kernels to plain tensors: so it returns bit for bit what that ``v2.Compose`` returned under the same seed
(``tests/test_data_pipeline.py`` keeps the ``v2.Compose`` as the reference), without the per-call dispatch of
``v2`` and without touching torch's global generator. It works on tensors of any device, so decoded images can
stay on a GPU. It leaves images as uint8; :func:`normalize` turns a whole batch to ImageNet-normalised float32
(element-wise, so the same numbers as one image at a time).

:func:`train_transform` and :func:`eval_transform` are the per-sample callables ``(image, mask, *masks) ->
(image float32 3×h×w, mask int64 h×w, ...)`` for a dataset's ``transform=``; the trainer uses
:class:`TrainAugmentation` and :func:`normalize` directly (:mod:`armlib.data.loading`).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

__all__ = ["TrainAugmentation", "adjust_hue_float64", "normalize", "train_transform", "eval_transform", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IGNORE_INDEX = 255
DEFAULT_COLOR_JITTER = (0.125, 0.5, 0.5, 0.05)  # brightness, contrast, saturation, hue (see module docstring)


def _plain(t: Tensor) -> Tensor:
    """A tv_tensor as a plain tensor (the kernels below take plain tensors; tv_tensors would re-dispatch)."""
    return t.as_subclass(Tensor) if type(t) is not Tensor else t


class TrainAugmentation:
    """Random scale → random crop (padding) → horizontal flip → colour jitter; images keep their dtype.

    Args:
        crop_size: ``(H, W)`` of the output; smaller inputs are padded (image with 0, masks with 255).
        scale_range: resize factor range relative to the input size (image bilinear with antialiasing, masks
            nearest-exact, so no new label values appear and each mask pixel is sampled at the centre the
            image pixel is interpolated around).
        hflip: probability of a horizontal flip.
        color_jitter: ``(brightness, contrast, saturation, hue)`` in ``v2.ColorJitter``'s units, or None.

    Call: ``augment(image, *masks, generator=None)`` with image uint8 3×H×W (or float in [0, 1]) and masks H×W
    (any integer dtype, 255 = ignore), all on one device; returns ``(image 3×h×w, *masks h×w)`` in the input
    dtypes. A float image's jitter factors are drawn in float64 from the same random numbers
    (:func:`_uniform_float64`), so they are the same on every CPU.
    Raises ``ValueError`` for a bad argument (naming it).
    """

    def __init__(self, crop_size: tuple[int, int] = (512, 1024), scale_range: tuple[float, float] = (0.5, 2.0),
                 hflip: float = 0.5,
                 color_jitter: tuple[float, float, float, float] | None = DEFAULT_COLOR_JITTER):
        self.crop_size = tuple(int(v) for v in crop_size)
        if len(self.crop_size) != 2 or min(self.crop_size) <= 0:
            raise ValueError(f"crop_size must be positive (H, W), got {crop_size}")
        low, high = (float(v) for v in scale_range)
        if not 0 < low <= high:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {scale_range}")
        self.scale_range = (low, high)
        if not 0.0 <= hflip <= 1.0:
            raise ValueError(f"hflip must be a probability in [0, 1], got {hflip}")
        self.hflip = float(hflip)
        # v2.ColorJitter validates the strengths and turns them into ranges (None for a jitter that is off)
        jitter = None if color_jitter is None else v2.ColorJitter(*color_jitter)
        self.jitter_ranges = (None if jitter is None
                              else (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue))

    def __call__(self, image: Tensor, *masks: Tensor, generator: torch.Generator | None = None
                 ) -> tuple[Tensor, ...]:
        image, masks = _plain(image), [_plain(m) for m in masks]
        height, width = image.shape[-2:]
        for m in masks:
            if m.shape[-2:] != (height, width):
                raise ValueError(f"mask of size {tuple(m.shape[-2:])} for an image of size {(height, width)}; "
                                 "expected the same (H, W)")
        # Draws, in v2's order: RandomScale, RandomCrop, RandomHorizontalFlip, ColorJitter (module docstring).
        low, high = self.scale_range
        scale = low + float(torch.rand((), generator=generator)) * (high - low)
        size = [max(1, round(height * scale)), max(1, round(width * scale))]
        image = F.resize_image(image, size, interpolation=v2.InterpolationMode.BILINEAR, antialias=True)
        masks = [F.resize_mask(m, size, interpolation=v2.InterpolationMode.NEAREST_EXACT) for m in masks]

        crop_h, crop_w = self.crop_size
        pad_h, pad_w = max(crop_h - size[0], 0), max(crop_w - size[1], 0)
        padded_h, padded_w = size[0] + 2 * pad_h, size[1] + 2 * pad_w   # v2 pads the shortfall on both sides
        top = int(torch.randint(0, padded_h - crop_h + 1, size=(), generator=generator)) if padded_h > crop_h else 0
        left = int(torch.randint(0, padded_w - crop_w + 1, size=(), generator=generator)) if padded_w > crop_w else 0
        if pad_h or pad_w:
            padding = [pad_w, pad_h, pad_w, pad_h]   # left, top, right, bottom
            image = F.pad_image(image, padding, fill=0)
            masks = [F.pad_mask(m, padding, fill=IGNORE_INDEX) for m in masks]
        if padded_h > crop_h or padded_w > crop_w:
            image = F.crop_image(image, top, left, crop_h, crop_w)
            masks = [F.crop_mask(m, top, left, crop_h, crop_w) for m in masks]

        if bool(torch.rand(1, generator=generator) < self.hflip):   # compared in float32, as v2 does
            image = F.horizontal_flip_image(image)
            masks = [F.horizontal_flip_mask(m) for m in masks]

        if self.jitter_ranges is not None:
            order = torch.randperm(4, generator=generator).tolist()
            draw = _uniform_float64 if image.is_floating_point() else _uniform_as_v2
            factors = [None if r is None else draw(r[0], r[1], generator) for r in self.jitter_ranges]
            kernels = (F.adjust_brightness_image, F.adjust_contrast_image, F.adjust_saturation_image,
                       adjust_hue_float64 if image.dtype == torch.float64 else F.adjust_hue_image)
            for index in order:
                if factors[index] is not None:
                    image = kernels[index](image, factors[index])
        return (image, *masks)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(crop_size={self.crop_size}, scale_range={self.scale_range}, "
                f"hflip={self.hflip}, jitter_ranges={self.jitter_ranges})")


def adjust_hue_float64(image: Tensor, hue_factor: float) -> Tensor:
    """``v2.functional.adjust_hue_image`` for a float64 image (3×H×W in [0, 1], ``hue_factor`` in [−0.5, 0.5]),
    computed in float64.

    Why by hand: torchvision's kernel converts every image to float32 first, where torch's AVX2 and scalar
    kernels round apart (measured: 6e-8 under ``ATEN_CPU_CAPABILITY=default``); this is its own sequence of
    steps (its private RGB↔HSV helpers, the same shift) without that cast, so float32 input gives its numbers
    bit for bit (tests/test_data_transforms.py)."""
    from torchvision.transforms.v2.functional._color import _hsv_to_rgb, _rgb_to_hsv

    if not -0.5 <= hue_factor <= 0.5:
        raise ValueError(f"hue_factor must be in [-0.5, 0.5], got {hue_factor}")
    h, s, v = _rgb_to_hsv(image).unbind(dim=-3)
    h = h.add(hue_factor).remainder_(1.0)
    return _hsv_to_rgb(torch.stack((h, s, v), dim=-3))


def _uniform_as_v2(low: float, high: float, generator: torch.Generator | None) -> float:
    """A jitter factor as ``v2.ColorJitter`` draws it: float32 ``uniform_(low, high)``."""
    return float(torch.empty(1).uniform_(low, high, generator=generator).item())


def _uniform_float64(low: float, high: float, generator: torch.Generator | None) -> float:
    """The same draw from the generator (one float32 ``rand``, as ``uniform_`` consumes it), scaled in float64.

    Why: ``uniform_`` computes ``low + (high - low) · u`` in float32 inside a kernel compiled per instruction set,
    and its AVX2 build fuses the multiply-add: measured, hue factors one float32 ulp apart under
    ``ATEN_CPU_CAPABILITY=default``. ``u`` itself is exact (24 random bits × 2⁻²⁴), so this is the same on every
    CPU. Used for float images (the ``cpu_float64`` pipeline); uint8 images keep v2's draw bit for bit."""
    u = float(torch.rand(1, generator=generator).item())
    return low + (high - low) * u


def normalize(images: Tensor) -> Tensor:
    """uint8 images (…×3×H×W, 0..255, any device) → float32 scaled to 0..1 and ImageNet-normalised; float
    images (already in 0..1) are normalised in their own dtype (float64 stays float64).

    ``v2.ToDtype(scale=True)`` then ``v2.Normalize``'s kernels; element-wise, so a batch gets the numbers each
    image would get on its own.
    """
    images = _plain(images)
    dtype = images.dtype if images.is_floating_point() else torch.float32
    return F.normalize_image(F.to_dtype_image(images, dtype, scale=True), list(IMAGENET_MEAN), list(IMAGENET_STD))


class SegmentationTransform:
    """``(image, mask, *masks) -> (image float32 3×h×w normalised, mask int64 h×w, ...)``, a dataset transform.

    ``augment`` (a :class:`TrainAugmentation`, or None for evaluation) draws from torch's global generator, so
    ``torch.manual_seed`` makes it deterministic.
    """

    def __init__(self, augment: TrainAugmentation | None = None):
        self.augment = augment

    def __call__(self, image: Tensor, *masks: Tensor) -> tuple[Tensor, ...]:
        if not masks:
            raise TypeError("a segmentation transform needs (image, mask, ...), got only an image")
        if self.augment is not None:
            image, *masks = self.augment(image, *masks)
        return (normalize(image), *(_plain(m).to(torch.int64) for m in masks))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.augment!r})"


def train_transform(crop_size: tuple[int, int] = (512, 1024), scale_range: tuple[float, float] = (0.5, 2.0),
                    hflip: float = 0.5,
                    color_jitter: tuple[float, float, float, float] | None = DEFAULT_COLOR_JITTER,
                    ) -> SegmentationTransform:
    """Training augmentation (:class:`TrainAugmentation`, same arguments) then :func:`normalize`, per sample.

    Returns:
        callable ``(image, mask, *masks) -> (image float32 3×H×W, mask int64 H×W, ...)``; image uint8 3×H×W
        (``tv_tensors.Image`` or plain), masks H×W.
    """
    return SegmentationTransform(TrainAugmentation(crop_size, scale_range, hflip, color_jitter))


def eval_transform() -> SegmentationTransform:
    """Evaluation: only :func:`normalize` (image float 0..1 then ImageNet) and masks to int64; no resizing."""
    return SegmentationTransform()
