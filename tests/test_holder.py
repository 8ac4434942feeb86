"""Sec. 3.4: closed form, projected-gradient solver and a trained ARM must agree (Eq. 10–13)."""
import numpy as np
import pytest
import torch

from armlib import holder
from armlib.arm import ARM, normalize_weights
from armlib.models import default_dtype


@pytest.mark.parametrize("p", [1.0, 1.5, 2.0, 3.0])
def test_solver_reaches_closed_form(p):
    closed = holder.closed_form(holder.PAPER_LOSSES, p)
    solved = holder.solve(holder.PAPER_LOSSES, p)
    np.testing.assert_allclose(solved.numpy(), closed.numpy(), atol=1e-4)
    assert closed.pow(p).sum().item() == pytest.approx(1.0)


def test_eq11_and_eq12_ratios():
    l = np.array(holder.PAPER_LOSSES)
    assert holder.closed_form(l, 1).tolist() == [1.0, 0.0, 0.0]
    for p in (1.5, 2.0, 3.0):
        w = holder.closed_form(l, p).numpy()
        np.testing.assert_allclose(w / w[0], l ** (1 / (p - 1)) / l[0] ** (1 / (p - 1)), rtol=1e-12)
        q = p / (p - 1)   # Theorem 3.1's form ‖L‖_q^{−1/(p−1)} L^{1/(p−1)}
        np.testing.assert_allclose(w, np.linalg.norm(l, q) ** (-1 / (p - 1)) * l ** (1 / (p - 1)), rtol=1e-12)


def test_closed_form_is_the_maximum():
    g = torch.Generator().manual_seed(0)
    l = torch.tensor(holder.PAPER_LOSSES, dtype=torch.float64)
    for p in (1.0, 2.0, 3.0):
        best = holder.objective(holder.closed_form(l, p), l, p)
        others = torch.rand(2000, 3, generator=g, dtype=torch.float64)
        values = torch.stack([holder.objective(w, l, p) for w in others])
        assert (values <= best + 1e-12).all()


def test_arm_converges_to_holder_l2_solution_not_the_sparse_l1_one():
    loss_curve = torch.linspace(2.0, 0.1, 41)  # Fig. 5's shape: loss falls as confidence rises
    fit = holder.fit_arm(loss_curve, p=2.0, steps=3000)
    assert fit.gap < 0.01, fit.gap
    collapsed = holder.fit_arm(loss_curve, p=2.0, steps=3000, l1_grad=True)
    assert collapsed.learned[0] > 0.99 and collapsed.learned[5:].max() < 0.01  # all weight on v = -1
    assert collapsed.gap > 0.5


def test_the_fit_stops_once_a_round_gains_nothing_that_matters(monkeypatch):
    """On this curve every L-BFGS round lowered -F by ~4e-11 relative, so a rule that stopped only at no gain at all
    ran all 50 rounds (21 minutes on a 2-core Xeon); the relative rule stops within a few, converged."""
    rounds = []
    step = torch.optim.LBFGS.step
    monkeypatch.setattr(torch.optim.LBFGS, "step", lambda self, closure: rounds.append(1) or step(self, closure))
    fit = holder.fit_arm(torch.linspace(2.0, 0.1, 41), p=2.0, steps=3000)
    assert len(rounds) <= 5 and fit.gap < 0.01, (len(rounds), fit.gap)


# The smoke scale's measured Fig. 5 curve (12 variance bins, rounded)
SMOKE_CURVE = [1.915, 1.762, 1.585, 1.385, 1.442, 1.422, 1.095, 1.2, 0.87, 0.735, 0.754, 0.512]


def test_the_fit_converges_whatever_the_last_bits_of_its_input():
    # Another CPU rounds the measured loss curve differently in its last bits; Adam at a fixed lr alone turned
    # such a difference into gaps of 0.0259 and 0.0284 around the claim's 0.02. Converged, they stay far below.
    curve = np.array(SMOKE_CURVE)
    gaps = [holder.fit_arm(curve * (1 + eps), p=2.0).gap for eps in (0.0, -3e-11)]
    assert max(gaps) < 1e-4, gaps


# The smoke loss curve of a two-thread run, to 8 decimals: one L-BFGS call of 1000 iterations stopped short on it
# (gap 5.6e-3 on a 2-core AMD EPYC; 1.4e-3 on the unrounded curve, over the goldens' bound of 1e-3).
TWO_THREAD_CURVE = [1.91466489, 1.76167265, 1.58498717, 1.38540462, 1.44249583, 1.42160141, 1.09451563, 1.20022919,
                    0.86953301, 0.7352485, 0.75424382, 0.51150595]


def test_the_fit_runs_l_bfgs_until_it_stops_improving():
    fit = holder.fit_arm(np.array(TWO_THREAD_CURVE), p=2.0)
    assert fit.gap < 1e-4, fit.gap


def test_the_training_gradient_is_the_objectives_gradient_over_the_l1_norm():
    # why fit_arm may maximise Eq. 10's F directly: with the L1 factor detached, the ascent direction of
    # Q = Σ normalize_weights(W) L is ∇F / ‖W/‖W‖_p‖_1, so both ascents have the same fixed points
    torch.manual_seed(0)
    with default_dtype(torch.float64):
        arm = ARM()
    v = torch.linspace(-1, 1, 9, dtype=torch.float64).view(1, 1, 1, -1)
    l = torch.rand(9, dtype=torch.float64) + 0.1
    for p in (2.0, 3.0):
        w = arm(v)
        q = (normalize_weights(w, torch.ones_like(v, dtype=torch.bool), p) * l.view_as(w)).sum()
        grad_q = torch.autograd.grad(q, list(arm.parameters()))
        w = arm(v).flatten()
        l1 = float((w / w.pow(p).sum().pow(1 / p)).sum().detach())
        grad_f = torch.autograd.grad(holder.objective(w, l, p), list(arm.parameters()))
        for a, b in zip(grad_q, grad_f):
            torch.testing.assert_close(a, b / l1, rtol=1e-12, atol=1e-15)


def test_bad_input():
    with pytest.raises(ValueError, match="p must be"):
        holder.closed_form([1.0], 0.5)
    with pytest.raises(ValueError, match="non-negative"):
        holder.closed_form([1.0, -1.0], 2)
    with pytest.raises(ValueError, match="one point per loss"):
        holder.fit_arm([1.0, 2.0], v=[0.0], steps=1)
