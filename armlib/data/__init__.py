"""Datasets, augmentation and synthetic street scenes (data → model → loss/ARM → trainer → results).

Readers of the official layouts (:class:`Cityscapes`, :class:`ADE20K`), the joint augmentation
(:func:`train_transform`, :func:`eval_transform`), and a generator of synthetic street scenes in the
Cityscapes layout with simulated coarse labels (:func:`generate`, :func:`ensure_synthetic`,
:func:`coarse_label_stats`).

Names are imported on first use, so ``armlib synth`` (numpy + PIL) does not pay for importing torch.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "Cityscapes": "armlib.data.cityscapes",
    "ADE20K": "armlib.data.ade20k",
    "ADE20K_NUM_CLASSES": "armlib.data.ade20k",
    "CITYSCAPES_CLASSES": "armlib.data.labels",
    "CITYSCAPES_PALETTE": "armlib.data.labels",
    "train_transform": "armlib.data.transforms",
    "eval_transform": "armlib.data.transforms",
    "generate": "armlib.data.synth",
    "ensure_synthetic": "armlib.data.synth",
    "coarse_label_stats": "armlib.data.coarse",
    "cityscapes_coarse_stats": "armlib.data.coarse",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:  # static analysers and IDEs see ordinary imports
    from armlib.data.ade20k import ADE20K, ADE20K_NUM_CLASSES
    from armlib.data.cityscapes import Cityscapes
    from armlib.data.coarse import cityscapes_coarse_stats, coarse_label_stats
    from armlib.data.labels import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
    from armlib.data.synth import ensure_synthetic, generate
    from armlib.data.transforms import eval_transform, train_transform


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'armlib.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
