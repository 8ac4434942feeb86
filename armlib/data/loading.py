"""From a training config to batches: the dataset of a run, its seeded augmentation and its resumable order.

Used by the trainer (below it in the data flow: data → model → loss/ARM → trainer) and by the analysis of
finished runs. Reproducibility contract: the data order of epoch e is ``randperm(n, seed + e)``
(DistributedSampler's convention) and the augmentation of sample i in epoch e draws from torch's generator
seeded by (seed, e, i), so two rows trained with the same seed see the same images in the same order with the
same crops and flips (``tests/test_loading.py``), and a resumed run continues the exact stream.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from armlib.config import TrainConfig
from armlib.paths import resolve

__all__ = ["synthetic_root", "prepare_data", "dataset_for", "class_names", "build_datasets", "AugmentedDataset",
           "ResumableSampler", "batches"]


def synthetic_root(cfg: TrainConfig) -> Path:
    """Folder of the synthetic set of ``cfg``: one per generator setting under ``data_root``, so runs with
    different settings (e.g. the noise sweep) never regenerate each other's data."""
    h, w = cfg.synth_size
    return (resolve(cfg.data_root)
            / f"synth_s{cfg.synth_seed}_n{cfg.synth_n_train}-{cfg.synth_n_val}_{h}x{w}_noise{cfg.synth_noise:g}")


def prepare_data(cfg: TrainConfig) -> Path:
    """The dataset root of ``cfg``; a synthetic set is generated there first when missing (reused otherwise)."""
    if cfg.dataset != "synth":
        return resolve(cfg.data_root)
    from armlib.data import ensure_synthetic

    return ensure_synthetic(synthetic_root(cfg), seed=cfg.synth_seed, n_train=cfg.synth_n_train,
                            n_val=cfg.synth_n_val, noise=cfg.synth_noise, size=cfg.synth_size)


def dataset_for(cfg: TrainConfig, root: Path, split: str, transform=None, with_fine: bool = False) -> Dataset:
    """The reader of ``cfg.dataset`` for split "train" or "val" (missing folders raise, naming the layout)."""
    from armlib.data import ADE20K, Cityscapes

    if cfg.dataset == "ade20k":
        return ADE20K(root, "training" if split == "train" else "validation", transform=transform)
    classes = class_names(cfg) if cfg.dataset == "synth" else None
    return Cityscapes(root, split, cfg.annotation, transform=transform, with_fine=with_fine, classes=classes)


def class_names(cfg: TrainConfig) -> list[str]:
    """Names of the classes a model of ``cfg`` predicts and is scored on, index = label value.

    Cityscapes: the 19 train classes. The synthetic scenes: the 10 classes they draw, in train-id order
    (:data:`armlib.data.scenes.SCENE_LABELS`). ADE20K's reader has no names: "class_0" … "class_149".
    """
    if cfg.dataset == "ade20k":
        from armlib.data import ADE20K_NUM_CLASSES

        return [f"class_{i}" for i in range(ADE20K_NUM_CLASSES)]
    if cfg.dataset == "synth":
        from armlib.data.labels import in_train_id_order
        from armlib.data.scenes import SCENE_LABELS

        return list(in_train_id_order(SCENE_LABELS))
    from armlib.data import CITYSCAPES_CLASSES

    return list(CITYSCAPES_CLASSES)


def build_datasets(cfg: TrainConfig, root: Path) -> tuple[Dataset, Dataset, int]:
    """(train set without transform, val set with ``eval_transform``, number of classes)."""
    from armlib.data import eval_transform

    train_set = dataset_for(cfg, root, "train")
    val_set = dataset_for(cfg, root, "val", transform=eval_transform())
    return train_set, val_set, len(class_names(cfg))


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, np.uint64)[0] >> 1)


class AugmentedDataset(Dataset):
    """Training view of a dataset whose augmentation is a function of (seed, epoch, index).

    Keys are ``(index, epoch)`` pairs (from :class:`ResumableSampler`); the transform runs under torch's
    generator seeded with :func:`_sample_seed`, inside ``fork_rng`` so the caller's stream is untouched.
    Items: (image float32 3×H×W, mask int64 H×W).
    """

    def __init__(self, base: Dataset, transform: Callable, seed: int):
        self.base, self.transform, self.seed = base, transform, seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, Tensor]:
        index, epoch = key
        item = self.base[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_sample_seed(self.seed, epoch, index))
            image, mask = self.transform(item[0], item[1])[:2]
        return image.as_subclass(Tensor), mask.as_subclass(Tensor)


class ResumableSampler(DistributedSampler):
    """``DistributedSampler(shuffle=True, drop_last=True)`` that can start mid-epoch; yields (index, epoch).

    Epoch e's order is ``randperm(n, seed + e)`` cut to a multiple of R, rank r taking items r, r + R, …
    (DistributedSampler's own order); with R = 1 it is a seeded random sampler.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        self.set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in itertools.islice(super().__iter__(), self.start, None):
            yield index, self.epoch

    def __len__(self) -> int:
        return self.num_samples - self.start


def batches(loader: DataLoader, sampler: ResumableSampler, start_iteration: int, per_rank: int,
             per_epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Infinite iterator over ``loader`` from global iteration ``start_iteration`` on (data order position)."""
    epoch, batch = divmod(start_iteration, per_epoch)
    while True:
        sampler.set_position(epoch, batch * per_rank)
        yield from loader
        epoch, batch = epoch + 1, 0

