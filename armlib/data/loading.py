"""From a training config to batches: the dataset of a run, its seeded augmentation and its resumable order.

Used by the trainer (below it in the data flow: data → model → loss/ARM → trainer) and by the analysis of
finished runs. Reproducibility contract: the data order of epoch e is ``randperm(n, seed + e)``
(DistributedSampler's convention) and the augmentation of sample i in epoch e draws from torch's generator
seeded by (seed, e, i), so two rows trained with the same seed see the same images in the same order with the
same crops and flips (``tests/test_loading.py``), and a resumed run continues the exact stream. The training set
is decoded once and augmented from explicit generators (:class:`AugmentedDataset`): the same numbers as decoding
each image at every access and augmenting under torch's reseeded global generator, which it replaced
(``tests/test_data_pipeline.py`` runs both).
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision.transforms.v2.functional import to_dtype_image

from armlib.config import TrainConfig
from armlib.data.transforms import TrainAugmentation, normalize
from armlib.paths import resolve

__all__ = ["synthetic_root", "prepare_data", "dataset_for", "class_names", "build_datasets", "AugmentedDataset",
           "collate_normalized", "ResumableSampler", "training_loader", "batches"]

DECODE_ONCE_MAX_BYTES = 4 * 2**30   # a decoded training set up to this size is held in memory (module docstring)


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

    Keys are ``(index, epoch)`` pairs (from :class:`ResumableSampler`); sample i of epoch e is augmented by
    ``augment`` drawing from a ``torch.Generator`` seeded with :func:`_sample_seed` (torch's global stream
    is untouched). The training set is decoded once, at construction, when it fits in
    :data:`DECODE_ONCE_MAX_BYTES` (the synthetic sets: a few MB), and at every access otherwise.

    Args:
        base: items ``(image uint8 3×H×W, mask H×W, ...)`` with labels 0..254 and 255 (the readers' contract).
        augment: a :class:`armlib.data.transforms.TrainAugmentation`.
        seed: the run's seed.
        device: where the decoded set is held and augmented (None: the CPU). Another device needs the decoded
            set to fit in :data:`DECODE_ONCE_MAX_BYTES`; ``ValueError`` says so otherwise.
        dtype: None (the images as decoded, uint8) or a float dtype: the images are scaled to [0, 1] in it once,
            at decoding, and augmented in it. Why float64 exists: torch resizes and colour-jitters uint8 images
            with AVX2 kernels of their own, which round to other integers than its scalar ones
            (``ATEN_CPU_CAPABILITY=default``, CPUs without AVX2), so a uint8 pipeline feeds such a CPU other
            pixels; in float64 the kernels differ only in the last bits (tests/goldens/README.md).

    Items: (image 3×h×w in ``dtype``, mask uint8 h×w) on ``device``; :func:`collate_normalized` makes a batch.
    """

    def __init__(self, base: Dataset, augment: Callable, seed: int, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None):
        self.base, self.augment, self.seed, self.dtype = base, augment, seed, dtype
        self.device = torch.device(device if device is not None else "cpu")
        self.decoded: list[tuple[Tensor, Tensor]] | None = None
        per_item = sum(t.numel() * t.element_size() for t in self._decode(0)) if len(base) else 0
        size = len(base) * per_item   # the readers' images of one set share a size (Cityscapes, synth)
        if size <= DECODE_ONCE_MAX_BYTES:
            self.decoded = [self._decode(i) for i in range(len(base))]
        elif self.device.type != "cpu":
            raise ValueError(f"the decoded training set ({size / 2**30:.1f} GiB) exceeds DECODE_ONCE_MAX_BYTES "
                             f"({DECODE_ONCE_MAX_BYTES / 2**30:.1f} GiB), so it cannot be held on {self.device}; "
                             "keep the data on the CPU (data_on_device=false)")

    def _decode(self, index: int) -> tuple[Tensor, Tensor]:
        image, mask = self.base[index][:2]
        # uint8 holds every label (0..254, 255 = ignore) in an eighth of int64's memory; nearest resizing,
        # padding, cropping and flipping move values without computing on them, so the dtype changes nothing.
        image = image.as_subclass(Tensor).to(self.device)
        if self.dtype is not None:
            image = to_dtype_image(image, self.dtype, scale=True)
        return image, mask.as_subclass(Tensor).to(self.device, torch.uint8)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, Tensor]:
        index, epoch = key
        image, mask = self.decoded[index] if self.decoded is not None else self._decode(index)
        generator = torch.Generator().manual_seed(_sample_seed(self.seed, epoch, index))
        return self.augment(image, mask, generator=generator)


def collate_normalized(items: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """[(image uint8 3×h×w, mask h×w)] → (images float32 N×3×h×w ImageNet-normalised, masks int64 N×h×w);
    float images in [0, 1] keep their dtype (:func:`armlib.data.transforms.normalize`)."""
    images, masks = zip(*items)
    return normalize(torch.stack(images)), torch.stack(masks).to(torch.int64)


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


def training_loader(cfg: TrainConfig, base: Dataset, world: int, rank: int, device: torch.device
                    ) -> tuple[ResumableSampler, DataLoader]:
    """The sampler and loader of rank ``rank`` of ``world``: batches of ``cfg.batch_size / world`` augmented
    images (float32, normalised; float64 augmented in float64 for ``cpu_float64``) and labels (int64), on ``device`` when ``cfg.data_on_device`` (CUDA: the
    decoded set is held there and augmented there, in the loop's process), on the CPU otherwise."""
    on_device = cfg.data_on_device and device.type != "cpu"
    held = device if on_device else torch.device("cpu")
    float64 = cfg.float_dtype(held.type) == torch.float64   # else the uint8 pipeline every committed run used
    dataset = AugmentedDataset(base, TrainAugmentation(cfg.crop_size, cfg.scale_range), cfg.seed,
                               device=held, dtype=torch.float64 if float64 else None)
    sampler = ResumableSampler(dataset, world, rank, cfg.seed)
    workers = 0 if on_device else cfg.num_workers   # device tensors cannot be handed to worker processes
    loader = DataLoader(dataset, batch_size=cfg.batch_size // world, sampler=sampler, num_workers=workers,
                        collate_fn=collate_normalized, drop_last=True,
                        pin_memory=device.type == "cuda" and not on_device, persistent_workers=workers > 0,
                        generator=torch.Generator().manual_seed(cfg.seed))  # keeps the global stream untouched
    return sampler, loader


def batches(loader: DataLoader, sampler: ResumableSampler, start_iteration: int, per_rank: int,
             per_epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Infinite iterator over ``loader`` from global iteration ``start_iteration`` on (data order position)."""
    epoch, batch = divmod(start_iteration, per_epoch)
    while True:
        sampler.set_position(epoch, batch * per_rank)
        yield from loader
        epoch, batch = epoch + 1, 0

