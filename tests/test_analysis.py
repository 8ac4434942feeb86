"""Figure measurements against loops and an independent Hölder computation."""
import numpy as np
import pandas as pd
import pytest
import torch

from armlib import holder
from armlib.reproduction import analysis


def test_boundary_mask_matches_loop():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (2, 9, 11), generator=g)
    labels[0, :4, :5] = 255
    band = 1
    got = analysis.boundary_mask(labels, band)
    ref = np.zeros_like(got.numpy())
    lab = labels.numpy()
    for n in range(2):
        for i in range(9):
            for j in range(11):
                win = lab[n, max(0, i - band):i + band + 1, max(0, j - band):j + band + 1]
                ref[n, i, j] = (win != lab[n, i, j]).any()
    np.testing.assert_array_equal(got.numpy(), ref)


def test_uniform_map_has_no_boundary():
    assert not analysis.boundary_mask(torch.full((1, 5, 5), 3)).any()


def test_low_variance_boundary_share():
    labels = torch.zeros(1, 20, 20, dtype=torch.long)
    labels[:, :, 10:] = 1
    v = torch.ones(1, 20, 20)
    v[:, :, 9:11] = -1.0   # the least confident pixels sit on the class edge
    out = analysis.low_variance_boundary_share(v, labels, band_px=2, quantile=0.05)
    assert out["low_var_on_boundary"] == 1.0
    assert out["all_on_boundary"] == pytest.approx(4 / 20)


def test_loss_per_variance_bin_matches_numpy_histogram():
    g = torch.Generator().manual_seed(1)
    v = torch.rand(5000, generator=g) * 2 - 1
    loss = (1 - v) ** 2 + torch.rand(5000, generator=g)
    curve = analysis.loss_per_variance_bin(v, loss, bins=10)
    counts, edges = np.histogram(v.numpy(), bins=10, range=(-1, 1))
    sums, _ = np.histogram(v.numpy(), bins=10, range=(-1, 1), weights=loss.numpy())
    np.testing.assert_array_equal(curve["count"].to_numpy(), counts)
    np.testing.assert_allclose(curve["mean_loss"].to_numpy(), sums / counts, rtol=1e-5)
    assert analysis.falling_trend(curve) == pytest.approx(-1.0)


@pytest.mark.parametrize("p", [1.5, 2.0, 3.0])
def test_holder_prediction_is_the_pixel_level_optimum(p):
    # Bins with different pixel counts n_b: maximise Σ W_b L_b s.t. Σ n_b W_b^p = 1. Substituting
    # u_b = n_b^{1/p} W_b turns it into Eq. 10 with losses L_b / n_b^{1/p}: solve that with closed_form.
    counts = np.array([50, 400, 1000, 3000, 200])
    mean = np.array([2.0, 1.2, 0.6, 0.2, 0.1])
    curve = pd.DataFrame({"count": counts, "mean_loss": mean, "v_mid": np.linspace(-0.8, 0.8, 5)})
    u = holder.closed_form(counts * mean / counts ** (1 / p), p).numpy()
    w = u / counts ** (1 / p)
    np.testing.assert_allclose(analysis.holder_prediction(curve, p), w / w.max(), rtol=1e-9)


def test_confidence_quadrants():
    # 4 pixels per cell; mislabelled pixels are exactly the confident high-loss ones
    v = torch.tensor([0.0] * 8 + [1.0] * 8)
    loss = torch.tensor(([0.1] * 4 + [2.0] * 4) * 2)
    bad = torch.zeros(16, dtype=torch.bool)
    bad[12:] = True
    q = analysis.confidence_quadrants(v, loss, bad).set_index(["label", "loss", "confidence"])
    assert q.loc[("mislabelled", "high loss", "high confidence"), "share_of_label"] == 1.0
    assert q.loc[("correct", "high loss", "high confidence"), "count"] == 0
    assert q.loc[("correct", "high loss", "low confidence"), "mislabelled_rate"] == 0.0
    assert q["count"].sum() == 16
