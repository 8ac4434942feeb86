"""FusedARMLoss against the reference ARMLoss: forward value, weights, v, and the gradients to the logits and to
ARM's parameters; the one-pass CE/variance maths; the fallbacks; the compile wrapper; CUDA + bf16 autocast."""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from armlib.arm import ARM, ARMLoss, LinearARM
from armlib.confidence import normalized_variance
from armlib.fused import FusedARMLoss, cross_entropy_and_variance, normalized_variance_from_logits
from armlib.losses import cross_entropy_map, gce_map


def batch(seed=0, n=2, c=5, h=6, w=7, dtype=torch.float64, ignored=True, scale=3.0):
    """Logits N×C×H×W (scale·N(0,1): confident and unconfident pixels), labels N×H×W with row 0 ignored."""
    g = torch.Generator().manual_seed(seed)
    logits = (scale * torch.randn(n, c, h, w, generator=g, dtype=torch.float64)).to(dtype)
    target = torch.randint(0, c, (n, h, w), generator=g)
    if ignored:
        target[:, 0] = 255
    return logits, target


def run(criterion, logits, target, **kwargs):
    """(ReweightedLoss, grad of the loss w.r.t. the logits, grads w.r.t. the criterion's parameters)."""
    x = logits.detach().clone().requires_grad_(True)
    criterion.zero_grad(set_to_none=True)
    out = criterion.forward_with_weights(x, target, **kwargs)
    out.loss.backward()
    return out, x.grad, [p.grad for p in criterion.parameters()]


def pair(p=2.0, dtype=torch.float64, weight_fn=None, **kwargs):
    """A reference and a fused criterion sharing one ARM (same parameters), in ``dtype``."""
    torch.manual_seed(0)
    weight_fn = (ARM() if weight_fn is None else weight_fn).to(dtype)
    return ARMLoss(weight_fn, p=p, **kwargs), FusedARMLoss(weight_fn, p=p, **kwargs)


def assert_same(a, b, rtol, atol=0.0):
    """Compare two run() results; atol is relative to each tensor's largest entry (gradients to ARM's
    parameters are sums of terms that cancel, so an entry-wise rtol alone would be meaningless), plus an
    absolute 1e-15 when atol > 0: the reference rounds p_y − 1 = exp(log p_y) − 1 near 1 (float64 ulp 2e-16),
    where the fused path computes expm1(−CE)."""
    (out_a, ga, pa), (out_b, gb, pb) = a, b
    for x, y in [(out_a.loss, out_b.loss), (out_a.weights, out_b.weights), (out_a.v, out_b.v), (ga, gb),
                 *zip(pa, pb)]:
        assert x is not None and y is not None and x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_allclose(y.detach().double().numpy(), x.detach().double().numpy(), rtol=rtol,
                                   atol=atol * float(x.detach().abs().max()) + (1e-15 if atol else 0.0))


# ---------------------------------------------------------------------------------------------------------
# The one-pass maths
# ---------------------------------------------------------------------------------------------------------

def test_variance_identity_mean_of_squared_deviations_is_sum_of_squares_minus_1_over_c():
    logits, _ = batch(1, c=19)
    logits[0, :, 0, 0] = 0.0                         # uniform: v = −1
    logits[0, 3, 0, 1] = 80.0                        # one-hot: v = +1
    p = torch.softmax(logits, 1)
    c = p.shape[1]
    lhs = (p - 1 / c).square().mean(1)
    rhs = (p.square().sum(1) - 1 / c) / c
    np.testing.assert_allclose(rhs.numpy(), lhs.numpy(), rtol=1e-12, atol=1e-17)
    v = normalized_variance_from_logits(logits)
    np.testing.assert_allclose(v.numpy(), normalized_variance(p).numpy(), rtol=0, atol=1e-14)
    assert v[0, 0, 0, 0].item() == pytest.approx(-1.0, abs=1e-12)
    assert v[0, 0, 0, 1].item() == pytest.approx(1.0, abs=1e-12)


def test_ce_and_variance_match_the_reference_maps_and_ce_gradient():
    logits, target = batch(2, c=7)
    x1 = logits.clone().requires_grad_(True)
    x2 = logits.clone().requires_grad_(True)
    ce, v = cross_entropy_and_variance(x1, target)
    ref_ce = cross_entropy_map(x2, target)
    np.testing.assert_allclose(ce.detach().numpy(), ref_ce.detach().numpy(), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(v.numpy(), normalized_variance(torch.softmax(logits, 1)).numpy(), atol=1e-14)
    assert (ce[:, 0] == 0).all() and not v.requires_grad
    g = torch.rand(target.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    (ce * g).sum().backward()
    (ref_ce * g).sum().backward()
    np.testing.assert_allclose(x1.grad.numpy(), x2.grad.numpy(), rtol=1e-12, atol=1e-15)
    assert (x1.grad[:, :, 0] == 0).all()             # ignored pixels get no gradient


def test_extreme_logits_stay_exact():
    # CE of a pixel 200 logits off is 200 (no overflow, no log of an underflowed probability), and a pixel
    # with p_y ≈ 1 still gets its small gradient on the label (the backward's expm1(−CE)).
    logits = torch.zeros(1, 3, 1, 2, dtype=torch.float64)
    logits[0, 0, 0, 0], logits[0, 1, 0, 1] = 200.0, 10.0
    target = torch.tensor([[[1, 1]]])
    x = logits.clone().requires_grad_(True)
    ce, _ = cross_entropy_and_variance(x, target)
    ce.sum().backward()
    y = logits.clone().requires_grad_(True)
    F.cross_entropy(y, target, reduction="sum").backward()
    assert ce[0, 0, 0].item() == pytest.approx(200.0, rel=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), y.grad.numpy(), rtol=1e-9, atol=0)
    assert x.grad[0, 1, 0, 1].item() == pytest.approx(-2 * np.exp(-10) / (1 + 2 * np.exp(-10)), rel=1e-9)


# ---------------------------------------------------------------------------------------------------------
# FusedARMLoss == ARMLoss
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
@pytest.mark.parametrize("isolated", [False, True])
def test_fused_equals_reference_float64(p, isolated):
    ref, fused = pair(p)
    logits, target = batch(4)
    a, b = run(ref, logits, target, isolated=isolated), run(fused, logits, target, isolated=isolated)
    assert_same(a, b, rtol=1e-10, atol=1e-11)
    assert all(g.abs().max() > 0 for g in a[2])      # the comparison is not between zeros


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
def test_fused_float32_is_as_close_to_the_float64_truth_as_the_reference(p):
    logits, target = batch(5, c=19, h=16, w=16)
    ref64, _ = pair(p)
    truth = run(ref64, logits, target)
    ref32, fused32 = pair(p, torch.float32)
    a, b = run(ref32, logits.float(), target), run(fused32, logits.float(), target)

    def errors(res):
        out, g, params = res
        return [((x.double() - y).abs().max() / y.abs().max()).item() for x, y in
                [(out.loss, truth[0].loss), (out.weights, truth[0].weights), (out.v, truth[0].v), (g, truth[1]),
                 *zip(params, truth[2])]]

    for err_ref, err_fused in zip(errors(a), errors(b)):
        assert err_fused <= 10 * err_ref + 1e-6


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 12), st.sampled_from([1.0, 1.5, 2.0, 3.0]), st.booleans())
def test_fused_equals_reference_on_random_shapes(seed, classes, p, isolated):
    g = torch.Generator().manual_seed(seed)
    n, h, w = (int(x) for x in torch.randint(1, 5, (3,), generator=g))
    scale = 8 * float(torch.rand(1, generator=g))                   # from near-uniform to near-one-hot
    logits, target = batch(seed, n=n, c=classes, h=h, w=w, ignored=False, scale=scale)
    target[torch.rand(target.shape, generator=g) < 0.3] = 255
    ref, fused = pair(p)
    assert_same(run(ref, logits, target, isolated=isolated), run(fused, logits, target, isolated=isolated),
                rtol=1e-9, atol=1e-10)


def test_all_ignored_batch_gives_zero_loss_and_no_nan():
    ref, fused = pair()
    logits, target = batch(6)
    target[:] = 255
    out, g, params = run(fused, logits, target)
    assert out.loss.item() == 0.0 and (out.weights == 0).all()
    assert torch.isfinite(g).all() and (g == 0).all()
    assert all(torch.isfinite(q).all() for q in params)
    assert_same(run(ref, logits, target), (out, g, params), rtol=1e-12, atol=1e-14)


def test_bf16_logits_compute_in_float32_and_match_the_reference():
    ref, fused = pair(dtype=torch.float32)
    logits, target = batch(7, c=19, dtype=torch.bfloat16)
    (a, ga, pa), (b, gb, pb) = run(ref, logits, target), run(fused, logits, target)
    assert b.loss.dtype == torch.float32 and gb.dtype == torch.bfloat16
    torch.testing.assert_close(b.loss, a.loss, rtol=1e-6, atol=0)
    torch.testing.assert_close(b.weights, a.weights, rtol=1e-5, atol=1e-9)
    # each gradient entry is one float32 value rounded to bf16 in both paths: at most one bf16 step apart
    torch.testing.assert_close(gb.float(), ga.float(), rtol=2**-7, atol=1e-9)
    for x, y in zip(pa, pb):
        torch.testing.assert_close(y, x, rtol=1e-4, atol=1e-4 * float(x.abs().max()))
    # under autocast the fused path still computes in float32 (the reference would run ARM's convs in bf16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        c, gc, pc = run(fused, logits, target)
    assert c.weights.dtype == torch.float32
    torch.testing.assert_close(c.weights, b.weights, rtol=1e-6, atol=0)
    torch.testing.assert_close(gc, gb, rtol=0, atol=0)
    for x, y in zip(pb, pc):
        torch.testing.assert_close(y, x, rtol=1e-6, atol=1e-6 * float(x.abs().max()))


def test_channels_last_logits_keep_their_layout_and_values():
    ref, fused = pair()
    logits, target = batch(8)
    logits = logits.contiguous(memory_format=torch.channels_last)
    a, b = run(ref, logits, target), run(fused, logits, target)
    assert b[1].is_contiguous(memory_format=torch.channels_last)
    assert_same(a, b, rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("kwargs", [dict(indicator="entropy"), dict(indicator="logvar"), dict(detach=False)],
                         ids=["entropy", "logvar", "no-detach"])
def test_unfused_settings_fall_back_to_the_reference(kwargs):
    ref, fused = pair(**kwargs)
    logits, target = batch(9)
    assert_same(run(ref, logits, target), run(fused, logits, target), rtol=0, atol=0)


def test_given_loss_map_or_confidence_or_linear_arm_match_the_reference():
    logits, target = batch(10)
    gce = lambda x: gce_map(x, target)                                       # noqa: E731
    conf = torch.rand(2, 1, 6, 7, dtype=torch.float64) * 2 - 1
    for weight_fn in (None, LinearARM()):
        ref, fused = pair(weight_fn=weight_fn)
        for kwargs in (dict(), dict(confidence=conf)):
            res = []
            for crit in (ref, fused):                                      # loss map built from the same x
                x = logits.clone().requires_grad_(True)
                crit.zero_grad(set_to_none=True)
                out = crit.forward_with_weights(x, target, loss_map=gce(x), **kwargs)
                out.loss.backward()
                res.append((out, x.grad, [p.grad for p in crit.parameters()]))
            assert_same(*res, rtol=1e-10, atol=1e-11)
            assert_same(run(ref, logits, target, **kwargs), run(fused, logits, target, **kwargs),
                        rtol=1e-10, atol=1e-11)


def test_state_dict_and_bad_inputs():
    ref, _ = pair()
    fused = FusedARMLoss().double()
    fused.load_state_dict(ref.state_dict())                               # same keys: checkpoints interchange
    logits, target = batch(11)
    assert_same(run(ref, logits, target), run(fused, logits, target), rtol=1e-10, atol=1e-11)
    with pytest.raises(ValueError, match="target must be N×H×W"):
        fused(logits, target[:, :3])
    with pytest.raises(ValueError, match="integer labels"):
        fused(logits, target.double())
    with pytest.raises(ValueError, match="loss_map must be"):
        fused(logits, target, loss_map=torch.zeros(2, 6))
    with pytest.raises(ValueError, match="p must be"):
        FusedARMLoss(p=0.5)


# ---------------------------------------------------------------------------------------------------------
# torch.compile
# ---------------------------------------------------------------------------------------------------------

def test_pointwise_mlp_is_arm():
    # the compiled path evaluates ARM's 1×1 convs as broadcast products; same function, other hidden widths too
    from armlib.fused import _is_pointwise_mlp, _pointwise_mlp

    torch.manual_seed(0)
    v = torch.rand(2, 1, 5, 6, dtype=torch.float64) * 2 - 1
    for arm in (ARM().double(), ARM(hidden=7).double()):
        assert _is_pointwise_mlp(arm)
        np.testing.assert_allclose(_pointwise_mlp(arm, v).detach().numpy(), arm(v).detach().numpy(), rtol=1e-13)
    assert not _is_pointwise_mlp(LinearARM())


def test_compiled_pieces_trace_and_match_the_reference():
    # aot_eager traces each piece through dynamo + AOTAutograd without generating code: it checks that the
    # pieces compile (no graph break that changes semantics) in a few seconds; inductor runs on CUDA below.
    ref, _ = pair(dtype=torch.float32)
    fused = FusedARMLoss(ref.weight_fn, compile="aot_eager")
    logits, target = batch(12, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)                     # the fallback would warn
        # the training path; isolated=True is the same traced function with the other Python branch
        assert_same(run(ref, logits, target), run(fused, logits, target), rtol=1e-5, atol=1e-5)


def test_failing_compiler_warns_and_falls_back_to_eager():
    def broken_backend(gm, example_inputs):
        raise RuntimeError("no compiler here")

    ref, _ = pair(dtype=torch.float32)
    fused = FusedARMLoss(ref.weight_fn, compile=broken_backend)
    logits, target = batch(13, dtype=torch.float32)
    with pytest.warns(RuntimeWarning, match="failed"):
        b = run(fused, logits, target)
    assert_same(run(ref, logits, target), b, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# CUDA
# ---------------------------------------------------------------------------------------------------------

@pytest.fixture
def no_tf32():
    """True float32 on CUDA: cuDNN's default TF32 would round the reference's ARM convs to 10-bit mantissas
    while the compiled path's pointwise MLP stays float32."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("compile", [False, True], ids=["eager", "inductor"])
def test_cuda_bf16_autocast_matches_the_reference(compile, no_tf32):
    device = torch.device("cuda")
    torch.manual_seed(0)
    arm = ARM().to(device)
    ref, fused = ARMLoss(arm), FusedARMLoss(arm, compile=compile)
    logits, target = batch(14, n=2, c=19, h=64, w=128, dtype=torch.float32)
    logits = logits.to(device, torch.bfloat16).contiguous(memory_format=torch.channels_last)
    target = target.to(device)

    def go(crit, autocast):
        x = logits.clone().requires_grad_(True)
        crit.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            out = crit.forward_with_weights(x, target)
        out.loss.backward()
        return out, x.grad, [p.grad.clone() for p in crit.parameters()]

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)                     # inductor must really compile
        b, gb, pb = go(fused, True)
        b, gb, pb = go(fused, True)                                        # second call: the cached graphs
    # The reference without autocast runs ARM in float32 like the fused path: float32 agreement.
    a, ga, pa = go(ref, False)
    assert gb.dtype == torch.bfloat16 and gb.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(b.loss, a.loss, rtol=1e-5, atol=0)
    torch.testing.assert_close(b.weights, a.weights, rtol=1e-4, atol=1e-10)
    torch.testing.assert_close(b.v, a.v, rtol=0, atol=1e-5)
    # each gradient entry is one float32 value rounded to bf16 in both paths: at most one bf16 step apart
    torch.testing.assert_close(gb.float(), ga.float(), rtol=2**-7, atol=1e-9)
    for x, y in zip(pa, pb):
        torch.testing.assert_close(y, x, rtol=1e-3, atol=1e-3 * float(x.abs().max()))
    # Under autocast the reference's 1×1 convs run in bf16: agreement to bf16 rounding of the weights.
    c, _, _ = go(ref, True)
    torch.testing.assert_close(b.loss, c.loss, rtol=2e-2, atol=0)
    torch.testing.assert_close(b.weights, c.weights, rtol=5e-2, atol=1e-8)
