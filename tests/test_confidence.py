"""Confidence indicators against independent float64 loop computations and their exact bounds."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from armlib.confidence import (LOGVAR_FLOOR_RATIO, indicator, normalized_variance, uncertainty_indicator)


def random_probs(n=2, c=5, h=3, w=4, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(scale * torch.randn(n, c, h, w, generator=g, dtype=torch.float64), dim=1)


def reference(p, kind):
    """Loops over pixels in numpy float64, written from the bounds, not from the code."""
    c = len(p)
    var = sum((pc - 1.0 / c) ** 2 for pc in p) / c
    var_max = (c - 1) / c**2
    if kind == "var":
        return 2 * var / var_max - 1
    if kind == "std":
        return 2 * math.sqrt(var) / math.sqrt(var_max) - 1
    if kind == "logvar":
        lo, hi = math.log(LOGVAR_FLOOR_RATIO * var_max), math.log(var_max)
        return 2 * (math.log(max(var, LOGVAR_FLOOR_RATIO * var_max)) - lo) / (hi - lo) - 1
    h = -sum(pc * math.log(pc) for pc in p if pc > 0)
    return 1 - 2 * h / math.log(c)


@pytest.mark.parametrize("kind", ["var", "std", "logvar", "entropy"])
def test_indicator_matches_pixel_loop(kind):
    probs = random_probs()
    got = indicator(probs, kind)
    assert got.shape == (2, 1, 3, 4)
    arr = probs.numpy()
    for n in range(2):
        for i in range(3):
            for j in range(4):
                assert got[n, 0, i, j].item() == pytest.approx(reference(arr[n, :, i, j], kind), abs=1e-9)


@pytest.mark.parametrize("kind", ["var", "std", "logvar", "entropy"])
@pytest.mark.parametrize("c", [2, 19, 150])
def test_bounds_reached_by_uniform_and_one_hot(kind, c):
    uniform = torch.full((1, c, 1, 1), 1.0 / c, dtype=torch.float64)
    one_hot = torch.zeros(1, c, 1, 1, dtype=torch.float64)
    one_hot[0, c // 2] = 1.0
    assert indicator(uniform, kind).item() == pytest.approx(-1.0, abs=1e-9)
    assert indicator(one_hot, kind).item() == pytest.approx(1.0, abs=1e-9)


def test_eq3_prints_a_sum_but_its_bounds_need_the_mean():
    c = 19
    one_hot = torch.zeros(1, c, 1, 1, dtype=torch.float64)
    one_hot[0, 0] = 1
    summed = ((one_hot - 1 / c) ** 2).sum().item()
    assert summed == pytest.approx((c - 1) / c)                 # the sum exceeds Eq. 3's bound C-fold
    assert summed > (c - 1) / c**2
    assert normalized_variance(one_hot).item() == pytest.approx(1.0)  # ours uses the mean


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 40), st.floats(0.01, 30.0), st.integers(0, 10_000))
def test_variance_in_bounds_and_monotone_in_sharpness(c, temperature, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, c, 2, 2, generator=g, dtype=torch.float64)
    v = normalized_variance(torch.softmax(logits / temperature, dim=1))
    assert ((v >= -1) & (v <= 1)).all()
    sharper = normalized_variance(torch.softmax(logits / (temperature / 2), dim=1))
    assert (sharper >= v - 1e-12).all()  # sharpening a softmax never lowers its variance


def test_float32_stays_in_range():
    probs = torch.softmax(50 * torch.randn(4, 19, 8, 8), dim=1)
    for kind in ("var", "std", "logvar", "entropy"):
        v = indicator(probs, kind)
        assert v.dtype == torch.float32 and v.min() >= -1 and v.max() <= 1


def test_uncertainty_indicator_is_implied_gt_probability():
    p_gt = torch.tensor([0.05, 0.5, 0.99], dtype=torch.float64)
    s_hat = -2 * torch.log(p_gt)                              # Eq. 2's optimum
    v = uncertainty_indicator(s_hat.log().view(1, 1, 1, 3))
    np.testing.assert_allclose(v.flatten().numpy(), (2 * p_gt - 1).numpy(), atol=1e-12)
    extremes = uncertainty_indicator(torch.tensor([-50.0, 50.0]).view(1, 1, 1, 2)).flatten()
    assert extremes[0] == pytest.approx(1.0) and extremes[1] == pytest.approx(-1.0)


@pytest.mark.parametrize("bad, message", [
    (torch.rand(3, 4, 5), "4-D"),
    (torch.ones(1, 1, 2, 2), "at least 2 classes"),
    (torch.rand(1, 3, 2, 2) + 1, "summing to 1"),
    (torch.randn(1, 3, 2, 2), "probabilities"),
    (torch.full((1, 2, 1, 1), float("nan")), "NaN"),
])
def test_bad_probs_raise_naming_the_argument(bad, message):
    with pytest.raises(ValueError, match=message) as info:
        normalized_variance(bad)
    assert "probs" in str(info.value)


def test_unknown_kind_and_bad_log_s():
    with pytest.raises(ValueError, match="kind must be one of"):
        indicator(random_probs(), "margin")
    with pytest.raises(ValueError, match="log_s must be a N×1×H×W"):
        uncertainty_indicator(torch.zeros(1, 2, 3, 3))
