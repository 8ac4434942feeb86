"""ADE20K (SceneParsing / ADEChallengeData2016) reader: 150 classes, reduce-zero-label.

Layout (as unpacked from ``ADEChallengeData2016.zip``)::

    <root>/ADEChallengeData2016/images/{training,validation}/ADE_*.jpg
    <root>/ADEChallengeData2016/annotations/{training,validation}/ADE_*.png

``root`` may be the folder containing ``ADEChallengeData2016`` or that folder itself. Annotation value 0 is
"other" (not one of the 150 classes) and becomes 255 = ignore; value k in 1..150 becomes class k−1 — the
``reduce_zero_label`` convention of mmsegmentation, which the paper's ADE20K numbers follow.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from armlib.data.folder import PairedSegmentationDataset

__all__ = ["ADE20K", "ADE20K_NUM_CLASSES"]

ADE20K_NUM_CLASSES = 150
SPLITS = ("training", "validation")
_FOLDER = "ADEChallengeData2016"

# 0 -> 255 (ignore), k -> k-1; entries above 150 are never used: such values are rejected first.
_REDUCE_ZERO_LABEL = np.concatenate([[255], np.arange(255)]).astype(np.uint8)


class ADE20K(PairedSegmentationDataset):
    """ADE20K scene parsing images with 150-class masks.

    Args:
        root: the folder holding ``ADEChallengeData2016/``, or ``ADEChallengeData2016`` itself.
        split: ``"training"`` or ``"validation"``.
        transform: called as ``transform(image, mask)``.
        on_error: ``"raise"`` or ``"skip"`` (see :mod:`armlib.data.folder`).

    Items: ``(image, mask)``: ``tv_tensors.Image`` uint8 3×H×W, ``tv_tensors.Mask`` int64 H×W with values
    0..149 and 255 (ignore).
    """

    num_classes = ADE20K_NUM_CLASSES

    def __init__(self, root: str | Path, split: str = "training", transform: Callable | None = None,
                 on_error: str = "raise"):
        super().__init__(transform=transform, on_error=on_error)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        root = Path(root)
        self.root = root if root.name == _FOLDER or not (root / _FOLDER).is_dir() else root / _FOLDER
        self.split = split
        image_dir = self.root / "images" / split
        label_dir = self.root / "annotations" / split
        for folder, pattern in ((image_dir, "ADE_*.jpg"), (label_dir, "ADE_*.png")):
            if not folder.is_dir():
                raise FileNotFoundError(f"ADE20K folder not found: {folder}; expected the official layout "
                                        f"<root>/{_FOLDER}/{folder.parent.name}/{split}/{pattern} (root={root})")
        images = sorted(image_dir.glob("*.jpg"))
        labels = sorted(label_dir.glob("*.png"))
        by_stem = {label.stem: label for label in labels}
        self.files = self._drop_unpaired(images, lambda image: by_stem.get(image.stem),
                                         lambda image: str(label_dir / f"{image.stem}.png"))
        image_stems = {image.stem for image in images}
        self._report_orphans([label for label in labels if label.stem not in image_stems],
                             lambda label: str(image_dir / f"{label.stem}.jpg"))
        self._require_nonempty(image_dir, f"*.jpg with annotations in {label_dir}")

    def decode_label(self, path: Path, image_size: tuple[int, int]) -> np.ndarray:
        """Annotation values 0..150 → 255, 0..149 (H×W uint8)."""
        values = self.read_label_image(path)
        if values.size and values.max() > ADE20K_NUM_CLASSES:
            bad = np.unique(values[values > ADE20K_NUM_CLASSES]).tolist()
            raise ValueError(f"{path}: annotation values {bad} are not ADE20K classes "
                             f"(expected 0 = other and 1..{ADE20K_NUM_CLASSES})")
        return _REDUCE_ZERO_LABEL[values]

    def __repr__(self) -> str:
        return f"ADE20K(root={str(self.root)!r}, split={self.split!r}, n={len(self)}, skipped={len(self.skipped)})"
