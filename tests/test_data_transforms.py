"""Joint augmentation keeps image and masks aligned, pads with 255, and is reproducible under a seed."""
from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors

from armlib.data import eval_transform, train_transform
from armlib.data.transforms import IMAGENET_MEAN, IMAGENET_STD

MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)
BLOCK = 8


def encoded_pair(height: int = 48, width: int = 80, seed: int = 0):
    """A blocky mask (values 0..18) and an image whose red channel is 10·mask: any misalignment shows."""
    generator = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, 19, (height // BLOCK, width // BLOCK), generator=generator)
    mask = blocks.repeat_interleave(BLOCK, 0).repeat_interleave(BLOCK, 1)
    image = torch.stack([mask * 10, torch.full_like(mask, 128), torch.full_like(mask, 200)]).to(torch.uint8)
    return tv_tensors.Image(image), tv_tensors.Mask(mask)


def decode(image: torch.Tensor) -> torch.Tensor:
    """Undo Normalize and the 0..1 scaling: back to 0..255 values."""
    return (image * STD + MEAN) * 255.0


def interior(mask: torch.Tensor) -> torch.Tensor:
    """Pixels whose 3×3 neighbourhood has one label: bilinear resizing cannot blur them."""
    padded = torch.nn.functional.pad(mask[None, None].float(), (1, 1, 1, 1), mode="replicate")
    high = torch.nn.functional.max_pool2d(padded, 3, 1)
    low = -torch.nn.functional.max_pool2d(-padded, 3, 1)
    return (high == low)[0, 0] & (mask != 255)


def test_eval_transform_only_converts_and_normalises():
    image, mask = encoded_pair()
    out_image, out_mask = eval_transform()(image, mask)
    assert out_image.dtype == torch.float32 and out_mask.dtype == torch.int64
    assert out_image.shape == image.shape and torch.equal(out_mask, mask)
    expected = (image.float() / 255.0 - MEAN) / STD
    torch.testing.assert_close(out_image, expected)


@pytest.mark.parametrize("seed", range(6))
def test_flip_and_crop_keep_image_and_mask_aligned_exactly(seed):
    torch.manual_seed(seed)
    image, mask = encoded_pair(seed=seed)
    transform = train_transform(crop_size=(32, 40), scale_range=(1.0, 1.0), hflip=0.5, color_jitter=None)
    out_image, out_mask = transform(image, mask)
    assert out_image.shape == (3, 32, 40) and out_mask.shape == (32, 40)
    torch.testing.assert_close(decode(out_image)[0], out_mask.float() * 10, atol=1e-3, rtol=0)


def test_flip_really_happens_and_is_applied_to_both():
    image, mask = encoded_pair()
    transform = train_transform(crop_size=tuple(mask.shape), scale_range=(1.0, 1.0), hflip=1.0, color_jitter=None)
    out_image, out_mask = transform(image, mask)
    assert torch.equal(out_mask, mask.flip(-1))
    torch.testing.assert_close(decode(out_image)[0], out_mask.float() * 10, atol=1e-3, rtol=0)


@pytest.mark.parametrize("seed", range(8))
def test_random_resize_keeps_alignment_and_mask_values(seed):
    torch.manual_seed(seed)
    image, mask = encoded_pair(seed=seed)
    transform = train_transform(crop_size=(40, 64), scale_range=(0.5, 2.0), hflip=0.5, color_jitter=None)
    out_image, out_mask = transform(image, mask)
    assert set(out_mask.unique().tolist()) <= set(mask.unique().tolist()) | {255}  # nearest: no new labels
    inside = interior(out_mask)
    assert inside.sum() > 100
    red = decode(out_image)[0]
    # bilinear rounding at the edge of the 3×3 interior: ≤ 1 grey level; a misplaced label is off by ≥ 10
    torch.testing.assert_close(red[inside], out_mask[inside].float() * 10, atol=1.5, rtol=0)


def test_padding_uses_zero_for_the_image_and_255_for_masks():
    image, mask = encoded_pair(height=16, width=24)
    fine = tv_tensors.Mask(mask.clone())
    torch.manual_seed(0)
    out_image, out_mask, out_fine = train_transform(crop_size=(40, 48), scale_range=(1.0, 1.0), hflip=0.0,
                                                    color_jitter=None)(image, mask, fine)
    assert out_mask.shape == out_fine.shape == (40, 48)
    padded = out_mask == 255
    assert padded.sum() == 40 * 48 - 16 * 24
    assert torch.equal(out_fine, out_mask)
    black = (0.0 - MEAN) / STD
    torch.testing.assert_close(out_image[:, padded], black.view(3, 1).expand(3, int(padded.sum())))
    torch.testing.assert_close(decode(out_image)[0][~padded], out_mask[~padded].float() * 10, atol=1e-3, rtol=0)


def test_color_jitter_changes_the_image_never_the_mask():
    image, mask = encoded_pair()
    torch.manual_seed(3)
    out_image, out_mask = train_transform(crop_size=tuple(mask.shape), scale_range=(1.0, 1.0), hflip=0.0)(image, mask)
    assert torch.equal(out_mask, mask)
    plain, _ = eval_transform()(image, mask)
    assert not torch.allclose(out_image, plain, atol=1e-2)


def test_extra_masks_follow_the_same_geometry():
    image, mask = encoded_pair()
    other = tv_tensors.Mask(18 - mask)
    for seed in range(4):
        torch.manual_seed(seed)
        _, out_mask, out_other = train_transform(crop_size=(32, 48), hflip=0.5)(image, mask, other)
        keep = out_mask != 255
        assert torch.equal(out_other[keep], 18 - out_mask[keep]) and torch.all(out_other[~keep] == 255)


def test_deterministic_under_manual_seed_and_varies_across_seeds():
    image, mask = encoded_pair()
    transform = train_transform(crop_size=(32, 48))

    def draw(seed):
        torch.manual_seed(seed)
        return transform(image, mask)

    first, again = draw(7), draw(7)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    others = [draw(seed) for seed in range(4)]
    assert any(not torch.equal(first[0], other[0]) for other in others)


def test_plain_tensors_are_treated_as_image_and_mask():
    image, mask = encoded_pair()
    out_image, out_mask = eval_transform()(image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor))
    assert torch.equal(out_mask, mask) and out_mask.dtype == torch.int64  # the mask was not normalised


def test_bad_arguments():
    with pytest.raises(ValueError, match="crop_size"):
        train_transform(crop_size=(0, 10))
    with pytest.raises(ValueError, match="scale_range"):
        train_transform(scale_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="hflip"):
        train_transform(hflip=1.5)
    with pytest.raises(TypeError, match="mask"):
        eval_transform()(encoded_pair()[0])
