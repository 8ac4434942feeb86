"""The code paths this suite replaced for speed, kept to prove that the new ones compute the same numbers
(``tests/test_data_pipeline.py``, ``tests/test_dilated_conv.py``) and to measure the speed-up side by side
(``benchmarks/bench_quick.py``). Not part of the library: nothing in ``armlib`` imports it.

* The data path before decode-once (``armlib.data.transforms`` and ``armlib.data.loading`` as they were): a
  ``v2.Compose`` of ``RandomScale``, ``RandomCrop``, ``RandomHorizontalFlip``, ``ColorJitter``, ``ToDtype`` and
  ``Normalize``, run on each freshly decoded image under torch's global generator reseeded per sample inside
  ``fork_rng``; batches stacked by the default collate.
* ASPP before :class:`armlib.models.heads.DilatedConv2d`: every tap of the dilated depthwise convs computed.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from armlib.data.loading import ResumableSampler, _sample_seed
from armlib.data.transforms import DEFAULT_COLOR_JITTER, IMAGENET_MEAN, IMAGENET_STD
from armlib.models.heads import DilatedConv2d


class _RandomScale(v2.Transform):
    def __init__(self, scale_range):
        super().__init__()
        self.scale_range = scale_range

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        low, high = self.scale_range
        scale = low + float(torch.rand(())) * (high - low)
        return {"size": [max(1, round(height * scale)), max(1, round(width * scale))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        mode = (v2.InterpolationMode.NEAREST_EXACT if isinstance(inpt, tv_tensors.Mask)
                else v2.InterpolationMode.BILINEAR)
        return self._call_kernel(F.resize, inpt, params["size"], interpolation=mode, antialias=True)


_TO_FLOAT = [v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64, "others": None}, scale=True),
             v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def reference_eval_transform():
    pipeline = v2.Compose(_TO_FLOAT)
    return lambda image, *masks: tuple(pipeline(tv_tensors.Image(image), *(tv_tensors.Mask(m) for m in masks)))


def reference_transform(crop_size, scale_range, hflip=0.5, color_jitter=DEFAULT_COLOR_JITTER):
    steps = [_RandomScale(scale_range),
             v2.RandomCrop(crop_size, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: 255}),
             v2.RandomHorizontalFlip(hflip)]
    if color_jitter is not None:
        steps.append(v2.ColorJitter(*color_jitter))
    pipeline = v2.Compose(steps + _TO_FLOAT)

    def transform(image, *masks):
        return tuple(pipeline(tv_tensors.Image(image), *(tv_tensors.Mask(m) for m in masks)))
    return transform


class ReferenceAugmentedDataset(Dataset):
    def __init__(self, base, transform, seed):
        self.base, self.transform, self.seed = base, transform, seed

    def __len__(self):
        return len(self.base)

    def __getitem__(self, key):
        index, epoch = key
        item = self.base[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_sample_seed(self.seed, epoch, index))
            image, mask = self.transform(item[0], item[1])[:2]
        return image.as_subclass(Tensor), mask.as_subclass(Tensor)


def reference_loader(cfg, base, world, rank, device):
    dataset = ReferenceAugmentedDataset(base, reference_transform(cfg.crop_size, cfg.scale_range), cfg.seed)
    sampler = ResumableSampler(dataset, world, rank, cfg.seed)
    loader = DataLoader(dataset, batch_size=cfg.batch_size // world, sampler=sampler, num_workers=cfg.num_workers,
                        drop_last=True, generator=torch.Generator().manual_seed(cfg.seed))
    return sampler, loader


def as_reference(model: nn.Module) -> nn.Module:
    """``model`` as it was before: every DilatedConv2d a plain nn.Conv2d (same weights, every tap computed)."""
    for module in model.modules():
        if isinstance(module, DilatedConv2d):
            module.__class__ = nn.Conv2d
    return model
