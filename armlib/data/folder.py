"""What every segmentation reader shares: image/label pairs found by filename, loaded with content checks.

A reader subclass finds its files (cheap: names only) and decodes a label file into train ids; this base
class owns the error policy, so a broken dataset is never silently shrunk:

* ``on_error="raise"`` (default): the first bad pair raises ``FileNotFoundError`` (a partner file is missing)
  or ``ValueError`` (content: corrupt image, unknown label id, size mismatch), naming the file and what
  was expected.
* ``on_error="skip"``: the pair is dropped with ``warnings.warn`` and recorded in ``dataset.skipped`` as
  ``(path, reason)``. Pairing problems are found at construction; content problems when an item is loaded
  (the next good item is returned instead) or all at once by :meth:`PairedSegmentationDataset.verify`.
  With DataLoader workers, load-time skips are recorded in the workers' copies: call ``verify()`` first
  when the count matters.
"""
from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import tv_tensors

ON_ERROR_CHOICES = ("raise", "skip")

# PIL modes whose channels are 8-bit: PIL's own convert("RGB") maps them exactly (alpha is dropped, a palette
# looked up, 1-bit black/white scaled to 0/255). 16-bit colour PNGs open as RGB/RGBA already (PIL keeps the high
# byte); 16-bit grayscale opens as I;16*, which convert("RGB") clips at 255 (99.6 % of a typical image's pixels),
# so it is scaled here. 32-bit I and F carry no fixed range (0..1? 0..65535?): refused rather than guessed.
EIGHT_BIT_MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")
SIXTEEN_BIT_GRAY_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def check_image_mode(mode: str, path: Path) -> None:
    """``ValueError`` naming ``path`` and its PIL ``mode`` unless :func:`to_rgb8` converts that mode exactly."""
    if mode not in EIGHT_BIT_MODES + SIXTEEN_BIT_GRAY_MODES:
        raise ValueError(f"{path}: image mode {mode!r} has no fixed 8- or 16-bit range, so its colours cannot be "
                         "converted without a guess; expected an 8-bit (or 16-bit grayscale) image: convert it to "
                         "8-bit RGB first")


def to_rgb8(img: Image.Image, path: Path) -> np.ndarray:
    """A decoded PIL image as the 8-bit RGB the model sees: H×W×3 uint8 (a writable copy). 16-bit grayscale is
    scaled by 255/65535 and rounded to nearest; other modes as :data:`EIGHT_BIT_MODES` says.
    ``ValueError`` naming ``path`` for a mode :func:`check_image_mode` refuses."""
    check_image_mode(img.mode, path)
    if img.mode in SIXTEEN_BIT_GRAY_MODES:
        wide = np.asarray(img, dtype=np.uint32)
        gray = ((wide * 255 + 32767) // 65535).astype(np.uint8)   # round(v · 255 / 65535), exact in integers
        return np.repeat(gray[..., None], 3, axis=2)
    return np.array(img.convert("RGB"))


class PairedSegmentationDataset(Dataset):
    """Base of :class:`~armlib.data.Cityscapes` and :class:`~armlib.data.ADE20K`.

    Items: ``(image, mask, *extra_masks)`` with ``image`` a ``tv_tensors.Image`` (uint8, 3×H×W) and each
    mask a ``tv_tensors.Mask`` (int64, H×W, ``ignore_index`` = 255 for unlabelled pixels), passed through
    ``transform(image, mask, ...)`` when one is given.

    Subclasses fill ``self.files`` (list of ``(image_path, label_path)``), optionally ``self.extra_files``
    (one list of paths per extra mask, aligned with ``files``), and implement :meth:`decode_label`.
    """

    ignore_index = 255

    def __init__(self, transform: Callable | None = None, on_error: str = "raise"):
        if on_error not in ON_ERROR_CHOICES:
            raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
        self.transform = transform
        self.on_error = on_error
        self.files: list[tuple[Path, Path]] = []
        self.extra_files: list[list[Path]] = []
        self.skipped: list[tuple[Path, str]] = []
        self._bad: set[int] = set()

    def fingerprint(self) -> str:
        """What this data set is, not where it lies: a hex digest of every file of its pairs (images, labels,
        extra masks), each by its path under ``root`` and its size in bytes. The same set copied or moved to
        another folder or machine gives the same digest; a file added, removed, renamed or rewritten to another
        size gives another. (Sizes, not contents: hashing every Cityscapes image would take minutes per resume.)
        """
        root = Path(getattr(self, "root", "."))
        digest = hashlib.sha256()
        for paths in zip(*zip(*self.files), *self.extra_files):
            for path in paths:
                path = Path(path)
                name = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
                digest.update(f"{name}\0{path.stat().st_size}\n".encode())
        return digest.hexdigest()[:16]

    # -- error policy ------------------------------------------------------------------------------------

    def _problem(self, path: Path, error: Exception) -> None:
        """Raise ``error`` or, in skip mode, warn and record it against ``path``."""
        if self.on_error == "raise":
            raise error
        self.skipped.append((Path(path), str(error)))
        warnings.warn(f"skipping {path}: {error}", stacklevel=3)

    def _drop_unpaired(self, images: Sequence[Path], partner: Callable[[Path], Path | None],
                       expected: Callable[[Path], str]) -> list[tuple[Path, Path]]:
        """Pair each image with ``partner(image)``; an image without one is a problem (raise or skip)."""
        pairs = []
        for image in images:
            label = partner(image)
            if label is None:
                self._problem(image, FileNotFoundError(f"image {image} has no label: expected {expected(image)}"))
                continue
            pairs.append((image, label))
        return pairs

    def _report_orphans(self, labels: Sequence[Path], expected: Callable[[Path], str]) -> None:
        """Labels whose image is missing (a broken download or a misnamed file) are problems, too."""
        for label in labels:
            self._problem(label, FileNotFoundError(f"label {label} has no image: expected {expected(label)}"))

    def _require_nonempty(self, where: Path, pattern: str) -> None:
        if not self.files:
            raise ValueError(f"no usable image/label pairs under {where} (expected files matching {pattern}"
                             + (f"; {len(self.skipped)} skipped, see .skipped" if self.skipped else "") + ")")

    # -- loading -----------------------------------------------------------------------------------------

    @staticmethod
    def read_image(path: Path) -> np.ndarray:
        """Decode an image file as 8-bit RGB (:func:`to_rgb8`); H×W×3 uint8. ``ValueError`` naming the file if
        it cannot be decoded or its mode has no exact conversion."""
        try:
            with Image.open(path) as img:
                check_image_mode(img.mode, path)   # before decoding the pixels
                img.load()  # PIL decodes lazily: force it here so truncation is caught at this file
                return to_rgb8(img, path)  # a writable copy: torch.from_numpy shares it
        except (OSError, UnidentifiedImageError, SyntaxError) as exc:
            raise ValueError(f"{path}: cannot decode image ({exc}); expected a readable RGB image file") from exc

    @staticmethod
    def read_label_image(path: Path) -> np.ndarray:
        """Decode a single-channel 8-bit label PNG; H×W uint8. ``ValueError`` naming the file otherwise."""
        try:
            with Image.open(path) as img:
                img.load()
                mode, kind = img.mode, img.format
                array = np.array(img)  # a writable copy: torch.from_numpy warns on read-only arrays
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
            raise ValueError(f"{path}: cannot decode label image ({exc}); expected a readable PNG") from exc
        # Lossy bytes under a .png name decode without error, but the compression has moved ids at every
        # edge (a 64×128 Cityscapes label: 384 pixels changed class, some to classes it never had).
        if kind == "JPEG" or (Path(path).suffix.lower() == ".png" and kind not in ("PNG", None)):
            raise ValueError(f"{path}: label image holds {kind} data (lossy compression alters label ids); "
                             "expected a lossless PNG of label ids")
        if mode not in ("L", "P") or array.ndim != 2:
            raise ValueError(f"{path}: label image has mode {mode} with shape {array.shape}; expected a "
                             "single-channel 8-bit PNG of label ids (mode L)")
        return array

    def decode_label(self, path: Path, image_size: tuple[int, int]) -> np.ndarray:
        """Read one label file as train ids (H×W uint8, 255 = ignore). Subclasses implement it."""
        raise NotImplementedError

    def _load(self, index: int) -> tuple:
        image_path, label_path = self.files[index]
        image = self.read_image(image_path)
        size = image.shape[:2]
        masks = []
        for path in [label_path] + [paths[index] for paths in self.extra_files]:
            mask = self.decode_label(path, size)
            if mask.shape != size:
                raise ValueError(f"{path}: label is {mask.shape[1]}x{mask.shape[0]} (W×H) but its image "
                                 f"{image_path} is {size[1]}x{size[0]}; expected the same size")
            masks.append(tv_tensors.Mask(torch.from_numpy(mask.astype(np.int64))))
        # permute is a view; contiguous so that downstream kernels and pinning see a plain layout
        image = tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1).contiguous())
        return (image, *masks)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        index %= len(self)
        for attempt in range(len(self)):
            current = (index + attempt) % len(self)
            if current in self._bad:
                continue
            try:
                item = self._load(current)
            except ValueError as exc:
                self._bad.add(current)
                self._problem(self.files[current][0], exc)
                continue  # skip mode: serve the next good item so a batch keeps its size
            return item if self.transform is None else self.transform(*item)
        raise RuntimeError(f"every item of this dataset failed to load; see .skipped ({len(self.skipped)} entries)")

    def verify(self) -> int:
        """Load every item once (without the transform); returns how many load.

        In raise mode the first bad item raises; in skip mode bad items are recorded in ``.skipped`` and
        removed from ``.files``, so the dataset's length is the number of good items afterwards.
        """
        good = []
        for index in range(len(self)):
            if index in self._bad:  # already failed (and was recorded) when loaded as an item
                continue
            try:
                self._load(index)
            except ValueError as exc:
                self._problem(self.files[index][0], exc)
                continue
            good.append(index)
        self.files = [self.files[i] for i in good]
        self.extra_files = [[paths[i] for i in good] for paths in self.extra_files]
        self._bad.clear()
        return len(good)
