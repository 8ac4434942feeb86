"""Cityscapes reader over the official folder layout (fine, coarse and the coarse extension).

Layout (as unpacked from the official zips; the synthetic generator writes the same)::

    <root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png     (or only ..._gtFine_polygons.json)
    <root>/gtCoarse/<split>/<city>/<city>_<seq>_<frame>_gtCoarse_labelIds.png (or only ..._gtCoarse_polygons.json)

``annotation="coarse_extra"`` reads the 20k-image extension ``leftImg8bit/train_extra`` + ``gtCoarse/train_extra``.
``split="val"`` always reads gtFine: the paper evaluates every annotation type on the fine val set.
Label ids become the 19 train ids through the official table (see :mod:`armlib.data.labels`); where a label
exists only as polygons, it is rasterised with the official ``json2labelImg`` code at load time.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from armlib.data.folder import PairedSegmentationDataset
from armlib.data.labels import (CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, label_ids_to_train_ids, train_id_subset,
                                polygons_to_label_ids)

__all__ = ["Cityscapes", "CITYSCAPES_CLASSES", "CITYSCAPES_PALETTE", "cityscapes_paths"]

SPLITS = ("train", "val")
ANNOTATIONS = ("fine", "coarse", "coarse_extra")
_IMAGE_SUFFIX = "_leftImg8bit.png"


def cityscapes_paths(split: str, annotation: str) -> tuple[str, str]:
    """``(image_split_folder, label_folder)`` actually read for a split and an annotation type.

    >>> cityscapes_paths("train", "coarse_extra")
    ('train_extra', 'gtCoarse')
    >>> cityscapes_paths("val", "coarse")
    ('val', 'gtFine')
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if annotation not in ANNOTATIONS:
        raise ValueError(f"annotation must be one of {ANNOTATIONS}, got {annotation!r}")
    if split == "val":
        return "val", "gtFine"
    if annotation == "coarse_extra":
        return "train_extra", "gtCoarse"
    return "train", "gtFine" if annotation == "fine" else "gtCoarse"


class Cityscapes(PairedSegmentationDataset):
    """Cityscapes images with fine or coarse labels as 19 train ids.

    Args:
        root: folder holding ``leftImg8bit/``, ``gtFine/``, ``gtCoarse/``.
        split: ``"train"`` or ``"val"`` (val is always labelled with gtFine).
        annotation: ``"fine"``, ``"coarse"`` or ``"coarse_extra"`` (train_extra images, gtCoarse labels).
        transform: called as ``transform(image, mask)`` (or with ``fine_mask`` too), e.g.
            :func:`armlib.data.train_transform`.
        with_fine: also return the gtFine mask of each coarse-labelled train image, so an analysis can
            tell which coarse labels are wrong. Needs ``split="train"`` and ``annotation="coarse"``.
        on_error: ``"raise"`` or ``"skip"`` (see :mod:`armlib.data.folder`).
        classes: train class names to keep, in the order of the returned indices (e.g. the synthetic
            scenes' 10, :func:`armlib.data.loading.class_names`); pixels of other classes become 255. None:
            all 19 (:func:`armlib.data.labels.train_id_subset` raises ``ValueError`` for an unknown name).

    Items: ``(image, mask)`` or ``(image, mask, fine_mask)``: ``tv_tensors.Image`` uint8 3×H×W and
    ``tv_tensors.Mask`` int64 H×W with values 0..K−1 and 255 (ignore), K = ``len(self.classes)`` (19 by default).

    Attributes:
        files: ``(image_path, label_path)`` per item; ``label_path`` is the ``*_labelIds.png``, or the
            ``*_polygons.json`` when no PNG exists.
        fine_files: gtFine label path per item when ``with_fine``, else ``None``.
        skipped: ``(path, reason)`` of everything dropped in skip mode.
    """

    classes = CITYSCAPES_CLASSES
    palette = CITYSCAPES_PALETTE

    def __init__(self, root: str | Path, split: str = "train", annotation: str = "fine",
                 transform: Callable | None = None, with_fine: bool = False, on_error: str = "raise",
                 classes=None):
        super().__init__(transform=transform, on_error=on_error)
        self._subset = None if classes is None else train_id_subset(classes)
        if classes is not None:
            self.classes = tuple(classes)
            self.palette = tuple(CITYSCAPES_PALETTE[CITYSCAPES_CLASSES.index(name)] for name in classes)
        image_split, label_folder = cityscapes_paths(split, annotation)
        if with_fine and not (split == "train" and annotation == "coarse"):
            raise ValueError("with_fine=True needs split='train' and annotation='coarse' (the only coarse "
                             f"labels that have fine counterparts); got split={split!r}, annotation={annotation!r}")
        self.root = Path(root)
        self.split, self.annotation = split, annotation
        image_dir = self.root / "leftImg8bit" / image_split
        label_dir = self.root / label_folder / image_split
        for folder, pattern in ((image_dir, f"<city>/<city>_<seq>_<frame>{_IMAGE_SUFFIX}"),
                                (label_dir, f"<city>/<city>_<seq>_<frame>_{label_folder}_labelIds.png")):
            if not folder.is_dir():
                raise FileNotFoundError(f"Cityscapes folder not found: {folder}; expected the official layout "
                                        f"{folder}/{pattern} (root={self.root})")
        images = sorted(image_dir.glob(f"*/*{_IMAGE_SUFFIX}"))

        def find_label(image: Path, folder: Path, gt: str) -> Path | None:
            stem = image.name[: -len(_IMAGE_SUFFIX)]
            for name in (f"{stem}_{gt}_labelIds.png", f"{stem}_{gt}_polygons.json"):
                candidate = folder / image.parent.name / name
                if candidate.is_file():
                    return candidate
            return None

        def expected_label(image: Path, folder: Path = label_dir, gt: str = label_folder) -> str:
            stem = image.name[: -len(_IMAGE_SUFFIX)]
            return f"{folder / image.parent.name / stem}_{gt}_labelIds.png (or _{gt}_polygons.json)"

        pairs = self._drop_unpaired(images, lambda im: find_label(im, label_dir, label_folder), expected_label)
        fine_dir = self.root / "gtFine" / "train"
        if with_fine:
            if not fine_dir.is_dir():
                raise FileNotFoundError(f"with_fine=True but {fine_dir} does not exist; expected the official "
                                        f"layout {fine_dir}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png")
            kept = []
            for image, label in pairs:
                fine = find_label(image, fine_dir, "gtFine")
                if fine is None:
                    self._problem(image, FileNotFoundError(
                        f"image {image} has no fine label (with_fine=True): expected "
                        f"{expected_label(image, fine_dir, 'gtFine')}"))
                    continue
                kept.append((image, label, fine))
            self.files = [(image, label) for image, label, _ in kept]
            self.extra_files = [[fine for _, _, fine in kept]]
        else:
            self.files = pairs

        labelled = {image.name[: -len(_IMAGE_SUFFIX)] + "|" + image.parent.name for image in images}
        orphans = []
        for pattern in (f"*/*_{label_folder}_labelIds.png", f"*/*_{label_folder}_polygons.json"):
            for label in sorted(label_dir.glob(pattern)):
                stem = label.name.rsplit(f"_{label_folder}_", 1)[0]
                if stem + "|" + label.parent.name not in labelled:
                    orphans.append(label)
        self._report_orphans(orphans, lambda label: str(
            image_dir / label.parent.name / (label.name.rsplit(f"_{label_folder}_", 1)[0] + _IMAGE_SUFFIX)))
        self._require_nonempty(image_dir, f"<city>/*{_IMAGE_SUFFIX} with labels in {label_dir}")

    @property
    def fine_files(self) -> list[Path] | None:
        return self.extra_files[0] if self.extra_files else None

    def decode_label(self, path: Path, image_size: tuple[int, int]) -> np.ndarray:
        """Label ids (PNG, or polygons rasterised officially) → train ids, H×W uint8."""
        if path.suffix == ".json":
            ids = polygons_to_label_ids(path)
        else:
            ids = self.read_label_image(path)
        train_ids = label_ids_to_train_ids(ids, source=path)
        return train_ids if self._subset is None else self._subset[train_ids]

    def __repr__(self) -> str:
        return (f"Cityscapes(root={str(self.root)!r}, split={self.split!r}, annotation={self.annotation!r}, "
                f"n={len(self)}, skipped={len(self.skipped)})")
