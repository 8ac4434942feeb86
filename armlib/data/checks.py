"""Checks of a dataset that run before training, so a broken one fails in seconds, not after T iterations.

* :func:`check_dataset` — the dataset of a config is where ``data_root`` says, in the official layout
  (file names only; called before the run folder is created, so a typo leaves nothing behind).
* :func:`check_val_set` — every val label decodes, matches its image's size and the set has at least one
  labelled pixel. A val set with nothing to score made evaluation return NaN and the run end "ok" with
  ``mIoU: null``, which the tables could not tell from a diverged run; a broken val label was found only
  after training.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from armlib.data.folder import check_image_mode
from armlib.errors import UsageError, check_device, check_out_folder

__all__ = ["check_dataset", "check_val_set"]


def check_dataset(cfg) -> None:
    """Build the train and val readers of ``cfg`` (names only, no decoding); synthetic data passes (it is
    generated on demand). Raises the reader's ``FileNotFoundError`` / ``ValueError`` prefixed with the
    config's ``dataset`` and ``data_root``."""
    if cfg.dataset == "synth":
        return
    from armlib.data.ade20k import ADE20K
    from armlib.data.cityscapes import Cityscapes
    from armlib.paths import resolve

    root = resolve(cfg.data_root)
    try:
        if cfg.dataset == "ade20k":
            ADE20K(root, "training"), ADE20K(root, "validation")
        else:
            Cityscapes(root, "train", cfg.annotation), Cityscapes(root, "val")
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"dataset={cfg.dataset!r}, data_root={cfg.data_root!r}: {exc}") from exc
    except ValueError as exc:
        raise UsageError(f"dataset={cfg.dataset!r}, data_root={cfg.data_root!r}: {exc}") from exc


def check_val_set(dataset, name: str = "the val set") -> int:
    """Decode every label of ``dataset`` once (images: size from the header only); return the number of
    labelled (not ignored) pixels.

    Args:
        dataset: a :class:`~armlib.data.folder.PairedSegmentationDataset` (``files``, ``decode_label``), or a
            ``Subset`` of one.
        name: how messages call the set.

    Raises:
        UsageError: naming the first bad file (undecodable, JPEG bytes, unknown ids, size mismatch), or
            "no labelled pixel in <name> at <root>" when every pixel is ignored or the set is empty.
    """
    base, indices = dataset, None
    if hasattr(dataset, "dataset") and hasattr(dataset, "indices"):  # torch.utils.data.Subset
        base, indices = dataset.dataset, list(dataset.indices)
    files = base.files if indices is None else [base.files[i] for i in indices]
    extras = [paths if indices is None else [paths[i] for i in indices] for paths in base.extra_files]
    where = getattr(base, "root", None) or (Path(files[0][0]).parent if files else "?")
    labelled = 0
    for index, (image_path, label_path) in enumerate(files):
        try:
            with Image.open(image_path) as img:  # reads the header, not the pixels
                width, height = img.size
                mode = img.mode
        except (OSError, SyntaxError, ValueError) as exc:
            raise UsageError(f"{name}: {image_path}: cannot read image ({exc})") from exc
        try:
            check_image_mode(mode, image_path)
        except ValueError as exc:
            raise UsageError(f"{name}: {exc}") from None
        for k, path in enumerate([label_path] + [paths[index] for paths in extras]):
            try:
                mask = base.decode_label(Path(path), (height, width))
            except (ValueError, OSError) as exc:
                raise UsageError(f"{name}: {exc}") from exc
            if mask.shape != (height, width):
                raise UsageError(f"{name}: {path}: label is {mask.shape[1]}x{mask.shape[0]} (W×H) but its image "
                                 f"{image_path} is {width}x{height}; expected the same size")
            if k == 0:  # the scored label; extra masks (fine beside coarse) are not scored
                labelled += int(np.count_nonzero(mask != base.ignore_index))
    if labelled == 0:
        what = "no images" if not files else f"{len(files)} images, every label pixel ignored (255)"
        raise UsageError(f"no labelled pixel in {name} at {where} ({what}); expected fine labels with "
                         "evaluated classes, or evaluation would score nothing (mIoU NaN)")
    return labelled


def check_run_inputs(cfg, out_dir: str | os.PathLike) -> None:
    """Everything a training run needs that can be wrong before it starts: the out folder is not a file,
    the device exists, the dataset is where ``data_root`` says (synthetic data is generated later)."""
    check_out_folder(out_dir)
    check_device(cfg.device)
    check_dataset(cfg)
