"""ARM, the weight normalisation, the reweighted loss and the adversarial update."""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from hypothesis import given, settings
from hypothesis import strategies as st

from armlib import ARM, ARMLoss, LinearARM, add_adversarial_group, adversarial_sgd, normalize_weights
from armlib.confidence import normalized_variance


def test_arm_has_53_parameters_and_paper_structure():
    arm = ARM()
    assert sum(p.numel() for p in arm.parameters()) == 53
    convs = [m for m in arm.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (1, 4, (1, 1)), (4, 4, (1, 1)), (4, 4, (1, 1)), (4, 1, (1, 1))]
    assert sum(isinstance(m, torch.nn.SiLU) for m in arm.modules()) == 3
    assert isinstance(arm.layers[-1], torch.nn.Sigmoid)


def test_arm_is_a_per_pixel_mlp():
    torch.manual_seed(0)
    arm = ARM()
    v = torch.rand(2, 1, 3, 4) * 2 - 1
    w = arm(v)
    assert w.shape == v.shape and (w > 0).all() and (w < 1).all()
    # same computation written as explicit matrix products on each scalar
    layers = [m for m in arm.layers if isinstance(m, torch.nn.Conv2d)]
    x = v.reshape(-1, 1).double()
    for i, conv in enumerate(layers):
        x = x @ conv.weight.double().flatten(1).T + conv.bias.double()
        x = x * torch.sigmoid(x) if i < 3 else torch.sigmoid(x)
    np.testing.assert_allclose(w.reshape(-1).double().detach().numpy(), x.flatten().detach().numpy(), rtol=1e-5)


def test_linear_arm():
    v = torch.tensor([-1.0, 0.0, 1.0]).view(1, 1, 1, 3)
    assert LinearARM()(v).flatten().tolist() == [1.0, 0.5, 0.0]
    assert LinearARM(0.5, 0.5)(v).flatten().tolist() == [0.0, 0.5, 1.0]
    assert list(LinearARM().parameters()) == []
    with pytest.raises(ValueError, match="N×1×H×W"):
        LinearARM()(torch.zeros(3))


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([1.0, 2.0, 3.0, 1.5]), st.floats(1e-3, 1e3))
def test_normalize_weights_invariants(seed, p, scale):
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(2, 1, 4, 5, generator=g, dtype=torch.float64) + 1e-3
    valid = torch.rand(2, 1, 4, 5, generator=g) < 0.7
    valid[0, 0, 0, 0] = True
    out = normalize_weights(w, valid, p)
    assert out.sum().item() == pytest.approx(1.0)             # sums to 1 over valid pixels
    assert (out[~valid] == 0).all()                           # zero outside
    np.testing.assert_allclose(normalize_weights(scale * w, valid, p).numpy(), out.numpy(), rtol=1e-9)
    ref = np.where(valid.numpy(), w.numpy(), 0) / w.numpy()[valid.numpy()].sum()
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-9)  # forward value is w/‖w‖₁


def lp_then_l1(w, l, p, l1_grad):
    """The double normalisation written out in float64, L1 factor a constant unless l1_grad."""
    wp = w / (w.pow(p).sum() ** (1 / p))
    c = wp.sum() if l1_grad else wp.sum().detach()
    return (wp / c * l).sum()


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
@pytest.mark.parametrize("l1_grad", [False, True])
def test_arm_gradient_sees_the_lp_constraint_not_l1(p, l1_grad):
    g = torch.Generator().manual_seed(1)
    base = torch.rand(1, 1, 3, 4, generator=g, dtype=torch.float64) + 0.1
    loss = torch.rand(1, 1, 3, 4, generator=g, dtype=torch.float64)
    valid = torch.ones_like(base, dtype=torch.bool)
    w1 = base.clone().requires_grad_(True)
    (normalize_weights(w1, valid, p, l1_grad=l1_grad) * loss).sum().backward()
    w2 = base.clone().requires_grad_(True)
    lp_then_l1(w2, loss, p, l1_grad).backward()
    np.testing.assert_allclose(w1.grad.numpy(), w2.grad.numpy(), rtol=1e-9, atol=1e-15)
    # with the L1 factor differentiated, the Lp division cancels: the gradient is that of Σ w l / Σ w
    if l1_grad:
        w3 = base.clone().requires_grad_(True)
        ((w3 / w3.sum()) * loss).sum().backward()
        np.testing.assert_allclose(w1.grad.numpy(), w3.grad.numpy(), rtol=1e-9, atol=1e-15)


def test_normalize_weights_bad_input():
    w = torch.rand(1, 1, 2, 2)
    with pytest.raises(ValueError, match="p must be"):
        normalize_weights(w, w > 0, 0.5)
    with pytest.raises(ValueError, match="valid must have the shape"):
        normalize_weights(w, torch.ones(1, 1, 3, 2, dtype=torch.bool))
    assert normalize_weights(w, torch.zeros_like(w, dtype=torch.bool)).abs().sum() == 0


def batch(seed=0, n=2, c=5, h=6, w=7):
    g = torch.Generator().manual_seed(seed)
    logits = (2 * torch.randn(n, c, h, w, generator=g)).requires_grad_(True)
    target = torch.randint(0, c, (n, h, w), generator=g)
    target[:, 0] = 255
    return logits, target


def test_constant_weights_give_the_plain_mean_loss():
    logits, target = batch()
    loss = ARMLoss(LinearARM(0.0, 0.7))(logits, target)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, target, ignore_index=255).item(), rel=1e-6)


def test_arm_loss_equals_explicit_weighted_sum():
    torch.manual_seed(0)
    logits, target = batch(1)
    criterion = ARMLoss(ARM(), p=2)
    out = criterion.forward_with_weights(logits, target)
    v = normalized_variance(torch.softmax(logits.detach().double(), 1))
    w = criterion.weight_fn.double()(v).squeeze(1) * (target != 255)
    w = w / w.sum()
    ce = F.cross_entropy(logits.double(), target, ignore_index=255, reduction="none")
    assert out.loss.item() == pytest.approx((w * ce).sum().item(), rel=1e-5)
    np.testing.assert_allclose(out.weights.double().numpy(), w.detach().numpy(), rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("detach", [True, False])
def test_weight_path_gradient_into_logits_is_zero_only_when_detached(detach):
    logits, target = batch(2)
    constant_loss = torch.rand(target.shape)  # a loss map that does not depend on the logits
    loss = ARMLoss(LinearARM(), detach=detach)(logits, target, loss_map=constant_loss)
    if loss.requires_grad:  # detached: no path from the logits at all
        loss.backward()
    grad = torch.zeros_like(logits) if logits.grad is None else logits.grad
    assert (grad.abs().max() == 0) == detach


def test_isolated_phase_model_sees_plain_mean_and_arm_sees_q():
    torch.manual_seed(0)
    logits, target = batch(3)
    crit = ARMLoss(ARM())
    iso = crit(logits, target, isolated=True)
    iso.backward()
    model_grad = logits.grad.clone()
    arm_grad = [p.grad.clone() for p in crit.parameters()]
    assert iso.item() == pytest.approx(F.cross_entropy(logits, target, ignore_index=255).item(), rel=1e-6)
    logits.grad = None
    F.cross_entropy(logits, target, ignore_index=255).backward()
    torch.testing.assert_close(model_grad, logits.grad)
    crit.zero_grad()
    crit(logits.detach(), target).backward()                 # ARM's gradient of Q itself
    for a, b in zip(arm_grad, crit.parameters()):
        torch.testing.assert_close(a, b.grad)


def test_all_ignored_batch_gives_zero_loss_without_nan():
    logits, target = batch(4)
    target[:] = 255
    crit = ARMLoss(ARM())
    loss = crit(logits, target)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(logits.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in crit.parameters())


def test_bad_arguments():
    with pytest.raises(ValueError, match="p must be"):
        ARMLoss(p=0.9)
    logits, target = batch(5)
    with pytest.raises(ValueError, match="loss_map must be"):
        ARMLoss()(logits, target, loss_map=torch.zeros(2, 6))
    with pytest.raises(ValueError, match="kind must be"):
        ARMLoss(indicator="margin")(logits, target)


def test_adversarial_sgd_step_matches_hand_computation():
    theta, phi = torch.nn.Parameter(torch.tensor([1.0, -2.0])), torch.nn.Parameter(torch.tensor([0.5]))
    opt = adversarial_sgd([theta], [phi], lr=0.1, momentum=0.9, weight_decay=0.01)
    for step in range(2):
        opt.zero_grad()
        (theta.square().sum() * phi.sum()).backward()
        g_t, g_p = theta.grad.clone(), phi.grad.clone()
        t0, p0 = theta.detach().clone(), phi.detach().clone()
        if step == 0:
            buf_t, buf_p = g_t + 0.01 * t0, -g_p + 0.01 * p0        # maximise: −g, decay still +wd·θ
        else:
            buf_t, buf_p = 0.9 * buf_t + g_t + 0.01 * t0, 0.9 * buf_p - g_p + 0.01 * p0
        opt.step()
        torch.testing.assert_close(theta.detach(), t0 - 0.1 * buf_t)
        torch.testing.assert_close(phi.detach(), p0 - 0.1 * buf_p)


def test_arm_raises_q_while_the_model_lowers_it():
    torch.manual_seed(0)
    # float64: one step moves Q by ~1e-7, below float32's resolution of Q
    model = torch.nn.Conv2d(3, 4, 3, padding=1).double()
    crit = ARMLoss(ARM().double())
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    target = torch.randint(0, 4, (4, 8, 8))

    def q():
        with torch.no_grad():
            return crit(model(x), target).item()

    opt = adversarial_sgd(model.parameters(), crit.parameters(), lr=0.5, momentum=0.0, weight_decay=0.0)
    rises = falls = 0
    for _ in range(20):
        snapshot_model = [p.detach().clone() for p in model.parameters()]
        snapshot_arm = [p.detach().clone() for p in crit.parameters()]
        before = q()
        opt.zero_grad()
        crit(model(x), target).backward()
        opt.step()
        stepped_model = [p.detach().clone() for p in model.parameters()]
        with torch.no_grad():                           # ARM's step alone, model held at its old value
            for p, s in zip(model.parameters(), snapshot_model):
                p.copy_(s)
        rises += q() > before
        with torch.no_grad():                           # model's step alone, ARM held at its old value
            stepped_arm = [p.detach().clone() for p in crit.parameters()]
            for p, s in zip(crit.parameters(), snapshot_arm):
                p.copy_(s)
            for p, s in zip(model.parameters(), stepped_model):
                p.copy_(s)
        falls += q() < before
        with torch.no_grad():
            for p, s in zip(crit.parameters(), stepped_arm):
                p.copy_(s)
    assert rises == 20 and falls == 20


@pytest.mark.parametrize("make_scheduler", [
    lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 0.5 ** it),
    lambda opt: torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2, 4], gamma=0.1),
    lambda opt: torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=6, power=0.9),
], ids=["LambdaLR", "MultiStepLR", "PolynomialLR"])
def test_add_adversarial_group_to_existing_optimizer_and_scheduler(make_scheduler):
    """Adding ARM to a running optimiser + scheduler trains exactly as adversarial_sgd built up front."""
    def run(late: bool):
        torch.manual_seed(0)
        model, criterion = nn.Conv2d(3, 4, 1), ARMLoss()
        if late:
            opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
            sched = make_scheduler(opt)
            group = add_adversarial_group(opt, criterion.parameters(), sched)
            assert group["maximize"] and group["momentum"] == 0.9 and len(sched.get_last_lr()) == 2
        else:
            opt = adversarial_sgd(model.parameters(), criterion.parameters(), lr=0.1)
            sched = make_scheduler(opt)
        gen = torch.Generator().manual_seed(1)
        lrs = []
        for _ in range(6):
            x = torch.randn(2, 3, 4, 4, generator=gen)
            y = torch.randint(0, 4, (2, 4, 4), generator=gen)
            opt.zero_grad()
            criterion(model(x), y).backward()
            opt.step()
            sched.step()
            lrs.append([g["lr"] for g in opt.param_groups])
        return lrs, [p.detach().clone() for p in (*model.parameters(), *criterion.parameters())]

    lrs_late, params_late = run(late=True)
    lrs_early, params_early = run(late=False)
    assert sum(lrs_late, []) == pytest.approx(sum(lrs_early, [])) and all(a == b for a, b in lrs_late)
    assert all(torch.equal(a, b) for a, b in zip(params_late, params_early))


def test_add_adversarial_group_errors():
    model, criterion = nn.Conv2d(3, 4, 1), ARMLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="arm_params is empty"):
        add_adversarial_group(opt, ARMLoss(LinearARM()).parameters())
    with pytest.raises(ValueError, match="no 'maximize' option"):
        add_adversarial_group(torch.optim.Optimizer(model.parameters(), {"lr": 0.1}), criterion.parameters())
    one_cycle = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10)
    with pytest.raises(ValueError, match="OneCycleLR keeps per-group state"):
        add_adversarial_group(opt, criterion.parameters(), one_cycle)
    adam = torch.optim.AdamW(model.parameters(), lr=1e-3)
    assert add_adversarial_group(adam, criterion.parameters())["maximize"]


def test_arm_moved_sees_shape_not_scale():
    """Scaling W changes nothing after the weight map's normalisation, so it must not count as learning; the
    seed-0 case of the 400-step quick scale (W 0.578 → 0.577, flat) must read as 'did not move'."""
    import numpy as np

    from armlib.arm import arm_moved, curve_shape_change, curve_suppression

    v = np.linspace(-1, 1, 101)
    init = 0.578 - 0.0005 * (v + 1)
    record = lambda w: {"config": {"reweight": "arm"}, "arm_curve": {"w": list(w)},  # noqa: E731
                        "arm_curve_init": {"w": list(init)}}
    assert arm_moved(record(init * 0.5)) is False                    # a uniform scale: no shape change
    assert arm_moved(record(0.577 - 0.0005 * (v + 1))) is False
    learned = 0.383 - 0.175 * (v + 1)                                # seed 0 at 1600 steps: 0.383 → 0.034
    assert arm_moved(record(learned)) is True
    # by hand: max |w/mean(w) − w0/mean(w0)| at v = ±1 for the learned curve
    expected = max(abs(learned[i] / learned.mean() - init[i] / init.mean()) for i in range(101))
    assert curve_shape_change(init, learned) == pytest.approx(expected)
    assert curve_suppression(learned) == pytest.approx((learned[0] - learned[-1]) / learned.mean())
    assert arm_moved({"config": {"reweight": "none"}}) is None


def test_shape_pull_matches_a_finite_difference_gradient_in_float64():
    from armlib.arm import shape_pull

    torch.manual_seed(3)
    arm = ARM().double()
    v = torch.linspace(-1.0, 1.0, 201, dtype=torch.float64).view(1, 1, 1, -1)

    def objective() -> float:
        with torch.no_grad():
            w = arm(v).flatten()
            loss = -v.flatten()
            return float(((loss - loss.mean()) * w).sum() / w.sum())

    grads = []
    for param in arm.parameters():
        flat = param.data.view(-1)
        for i in range(flat.numel()):
            keep = flat[i].item()
            flat[i] = keep + 1e-6
            up = objective()
            flat[i] = keep - 1e-6
            down = objective()
            flat[i] = keep
            grads.append((up - down) / 2e-6)
    assert shape_pull(arm) == pytest.approx(float(np.sqrt(np.sum(np.square(grads)))), rel=1e-5)
    # A bias before the sigmoid of a flat map only scales W uniformly, which the normalisation cancels: no pull.
    # Its weight on v does change the shape, and gets one.
    flat = nn.Sequential(nn.Conv2d(1, 1, 1), nn.Sigmoid()).double()
    flat[0].weight.data.zero_()
    assert shape_pull(flat) > 0.01
    flat[0].weight.requires_grad_(False)
    assert shape_pull(flat) == pytest.approx(0.0, abs=1e-12)
    assert shape_pull(LinearARM()) == 0.0


# -- where a PyTorch user trains (issue 21) ---------------------------------------------------------------

def _batch(n=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, 12, 16, generator=gen)
    masks = torch.randint(0, 5, (n, 12, 16), generator=gen)
    masks[:, :2] = 255
    masks[0, 2:5] = 255     # micro-batches with different numbers of valid pixels
    return images, masks


def _grads(model, criterion, chunks):
    """Model and ARM gradients of one accumulated step: ``chunks`` is a list of (images, masks) micro-batches,
    each loss divided by their number (the usual accumulation)."""
    model.zero_grad(); criterion.zero_grad()
    for images, masks in chunks:
        (criterion(model(images), masks) / len(chunks)).backward()
    return (torch.cat([p.grad.flatten() for p in model.parameters()]),
            torch.cat([p.grad.flatten() for p in criterion.parameters()]))


def test_gradient_accumulation_normalises_per_micro_batch_and_concatenation_avoids_it():
    from torch import nn

    from armlib.arm import ARMLoss

    torch.manual_seed(1)
    model, criterion = nn.Conv2d(3, 5, 3, padding=1), ARMLoss()
    images, masks = _batch()
    images[2:] *= 4.0     # the second micro-batch is predicted more confidently (easy images vs hard ones)
    whole_model, whole_arm = _grads(model, criterion, [(images, masks)])
    acc_model, acc_arm = _grads(model, criterion, [(images[:2], masks[:2]), (images[2:], masks[2:])])
    rel = lambda a, b: float((a - b).norm() / b.norm())  # noqa: E731
    # Documented difference: each micro-batch's weight map is normalised over its own pixels, so ARM's gradient
    # is the mean of the micro-batches' own gradients, not the whole batch's: 56 % apart here (the model's 7 %,
    # mostly the unequal valid-pixel counts, which plain cross-entropy's accumulation shares).
    assert rel(acc_arm, whole_arm) > 0.1
    # How to avoid it: the micro-batches' outputs concatenated, one criterion call = the whole batch.
    model.zero_grad(); criterion.zero_grad()
    criterion(torch.cat([model(images[:2]), model(images[2:])]), masks).backward()
    torch.testing.assert_close(torch.cat([p.grad.flatten() for p in model.parameters()]), whole_model)
    torch.testing.assert_close(torch.cat([p.grad.flatten() for p in criterion.parameters()]), whole_arm)


def test_dict_output_reweights_out_and_adds_plain_aux_at_its_weight():
    from armlib.arm import ARMLoss
    from armlib.losses import cross_entropy_map, mean_over_valid

    torch.manual_seed(0)
    criterion = ARMLoss(aux_weight=0.4)
    images, masks = _batch()
    out, aux = torch.randn(4, 5, 12, 16), torch.randn(4, 5, 12, 16)
    expected = criterion(out, masks) + 0.4 * mean_over_valid(cross_entropy_map(aux, masks), masks)
    torch.testing.assert_close(criterion({"out": out, "aux": aux}, masks), expected)
    torch.testing.assert_close(criterion({"out": out}, masks), criterion(out, masks))
    with pytest.raises(ValueError, match="'out'"):
        criterion({"logits": out}, masks)


def test_arm_in_a_minimising_group_warns_at_the_first_step():
    from torch import nn

    from armlib.arm import AdversarialWarning, ARMLoss, adversarial_sgd

    model, criterion = nn.Conv2d(3, 5, 1), ARMLoss()
    images, masks = _batch()
    plain = torch.optim.SGD([*model.parameters(), *criterion.parameters()], lr=0.01)
    criterion(model(images), masks).backward()
    with pytest.warns(AdversarialWarning, match=r"param_groups\[0\] holds ARM's parameters but minimises"):
        plain.step()
    good = adversarial_sgd(model.parameters(), criterion.parameters(), lr=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        good.step()


def test_arm_in_no_optimiser_warns_once_and_a_maximised_arm_never():
    from torch import nn

    from armlib.arm import UNSTEPPED_CALLS, AdversarialWarning, ARMLoss, adversarial_sgd

    images, masks = _batch()
    model, criterion = nn.Conv2d(3, 5, 1), ARMLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)   # ARM forgotten
    with pytest.warns(AdversarialWarning, match="have not changed") as caught:
        for _ in range(2 * UNSTEPPED_CALLS):
            optimizer.zero_grad(); criterion(model(images), masks).backward(); optimizer.step()
    assert len([w for w in caught if issubclass(w.category, AdversarialWarning)]) == 1
    criterion = ARMLoss()
    optimizer = adversarial_sgd(model.parameters(), criterion.parameters(), lr=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(2 * UNSTEPPED_CALLS):
            optimizer.zero_grad(); criterion(model(images), masks).backward(); optimizer.step()
        with torch.no_grad():                     # evaluation calls never count
            for _ in range(2 * UNSTEPPED_CALLS):
                criterion(model(images), masks)
