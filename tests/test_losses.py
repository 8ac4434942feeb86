"""Per-pixel losses against float64 loop computations; OHEM against mmsegmentation's sort-based rule."""
import math

import numpy as np
import pytest
import torch

from armlib.losses import (cross_entropy_map, gce_map, kl_loss_map, mean_over_valid, ohem_cross_entropy,
                           ohem_mask)


def make(n=2, c=4, h=3, w=5, seed=0, ignore_share=0.2):
    g = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    target = torch.randint(0, c, (n, h, w), generator=g)
    target[torch.rand(n, h, w, generator=g) < ignore_share] = 255
    return logits, target


def log_p_loop(logits, target):
    """log p_y per pixel by explicit log-sum-exp in Python floats (NaN where ignored)."""
    n, c, h, w = logits.shape
    out = np.full((n, h, w), np.nan)
    for a in range(n):
        for i in range(h):
            for j in range(w):
                y = int(target[a, i, j])
                if y == 255:
                    continue
                zs = [float(logits[a, k, i, j]) for k in range(c)]
                m = max(zs)
                out[a, i, j] = zs[y] - (m + math.log(sum(math.exp(z - m) for z in zs)))
    return out


def test_cross_entropy_map():
    logits, target = make()
    ref = -log_p_loop(logits, target)
    got = cross_entropy_map(logits, target).numpy()
    valid = target.numpy() != 255
    np.testing.assert_allclose(got[valid], ref[valid], rtol=1e-6)   # float32 compute
    assert (got[~valid] == 0).all()
    assert mean_over_valid(torch.from_numpy(got), target).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, target, ignore_index=255).item(), rel=1e-6)


def test_gce_map_and_its_limits():
    logits, target = make(seed=1)
    lp = log_p_loop(logits, target)
    valid = target.numpy() != 255
    q = 0.1
    np.testing.assert_allclose(gce_map(logits, target, q).numpy()[valid], ((1 - np.exp(q * lp)) / q)[valid],
                               rtol=1e-5)
    # q → 0 tends to CE; q = 1 is MAE 1 − p_y
    np.testing.assert_allclose(gce_map(logits, target, 1e-4).numpy()[valid], -lp[valid], rtol=1e-3)
    np.testing.assert_allclose(gce_map(logits, target, 1.0).numpy()[valid], 1 - np.exp(lp[valid]), rtol=1e-5)
    assert (gce_map(logits, target, q).numpy()[~valid] == 0).all()
    with pytest.raises(ValueError, match="q must be"):
        gce_map(logits, target, 0.0)


def test_kl_loss_value_and_eq2_optimum():
    logits, target = make(seed=2, ignore_share=0.0)
    ce = cross_entropy_map(logits, target).double()
    log_s = torch.randn(2, 1, 3, 5, dtype=torch.float64)
    s = log_s.exp().squeeze(1)
    np.testing.assert_allclose(kl_loss_map(logits, log_s, target).numpy(),
                               (ce / s + 0.5 * torch.log(s)).numpy(), rtol=1e-6)
    # Eq. 2: the KL loss is minimised over s at ŝ = 2·CE
    best = (2 * ce).log().unsqueeze(1).clone().requires_grad_(True)
    kl_loss_map(logits, best, target).sum().backward()
    assert best.grad.abs().max() < 1e-5
    with pytest.raises(ValueError, match="log_s must be"):
        kl_loss_map(logits, torch.zeros(2, 2, 3, 5), target)


def ohem_reference(logits, target, thresh, min_kept):
    """mmsegmentation's OHEMPixelSampler.sample, re-expressed with numpy sort."""
    prob = np.exp(log_p_loop(logits, target))
    valid = target.numpy() != 255
    sort_prob = np.sort(prob[valid])
    batch_kept = min_kept * target.shape[0]
    min_threshold = sort_prob[min(batch_kept, sort_prob.size - 1)]
    threshold = max(min_threshold, thresh)
    return valid & (np.nan_to_num(prob, nan=2.0) < threshold)


@pytest.mark.parametrize("thresh, min_kept", [(0.7, 3), (0.7, 1000), (0.05, 4), (0.3, 0)])
def test_ohem_mask_matches_mmseg_rule(thresh, min_kept):
    logits, target = make(n=2, c=5, h=6, w=7, seed=3)
    got = ohem_mask(logits, target, thresh, min_kept).numpy()
    np.testing.assert_array_equal(got, ohem_reference(logits, target, thresh, min_kept))


def test_ohem_loss_is_mean_over_kept_and_safe_when_all_ignored():
    logits, target = make(seed=4)
    kept = ohem_mask(logits, target, 0.7, 2)
    ce = cross_entropy_map(logits, target)
    assert ohem_cross_entropy(logits, target, 0.7, 2).item() == pytest.approx((ce[kept].mean()).item())
    all_ignored = torch.full_like(target, 255)
    assert ohem_cross_entropy(logits, all_ignored).item() == 0.0


@pytest.mark.parametrize("fn", [cross_entropy_map, gce_map])
def test_bad_input_is_named(fn):
    logits, target = make()
    with pytest.raises(ValueError, match="outside \\[0, 4\\)"):
        fn(logits, target.masked_fill(target == 1, 9))
    with pytest.raises(ValueError, match="does not match"):
        fn(logits, target[:, :2])
    with pytest.raises(ValueError, match="NaN or Inf"):
        fn(logits.masked_fill(target.unsqueeze(1) == 0, float("inf")), target)
    with pytest.raises(ValueError, match="integer labels"):
        fn(logits, target.double())
    with pytest.raises(ValueError, match="logits must be"):
        fn(logits[0], target)
