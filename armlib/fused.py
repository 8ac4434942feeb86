"""A fast ARM loss path: :class:`FusedARMLoss`, same values and gradients as :class:`armlib.arm.ARMLoss`.

The reference path materialises several N×C×H×W float32 tensors per step (the float32 copy of the logits,
log-softmax for CE and its saved output, a second softmax for the confidence, ``(p − 1/C)²``, and the
finiteness/sum checks, each a device sync). Here the per-pixel CE and the normalised variance v come out of
one pass over the logits, and the CE backward recomputes the softmax from the logits, which the model's
own backward keeps alive anyway:

- forward (:func:`cross_entropy_and_variance`): with m = max_c x_c and e_c = exp(x_c − m),
  s1 = Σ_c e_c, s2 = Σ_c e_c²: CE = log s1 − (x_y − m), Σ_c p_c² = s2/s1², and since Σ_c p_c = 1,
  var = (1/C) Σ_c (p_c − 1/C)² = (Σ_c p_c² − 1/C)/C, so v = 2C²/(C−1)·var − 1
  = 2C/(C−1)·(Σ_c p_c² − 1/C) − 1.
  Saved for backward: the logits (no copy), lse = m + log s1 and the CE map (N×H×W each).
- backward: ∂CE_i/∂x_ic = p_ic − [c = y_i], so grad_x = g·exp(x − lse) off the label and g·expm1(−CE_i)
  on it, zero at ignored pixels; one N×C×H×W float32 temporary, and for half/bf16 logits the product is
  written straight into a gradient of the logits' dtype.
- the tail (ARM's MLP on the N×1×H×W map v, :func:`armlib.arm.normalize_weights`, Q = Σ w·CE) is the
  reference's own code under plain autograd, so the detached-L1 semantics are the reference's. Each op
  touches 1–4 float32 channels of N×H×W instead of C, but there are ~30 of them forward and backward, and
  autograd keeps ~26 channels for backward: eager, the tail costs about as much as the fused CE pass
  (BENCHMARKS.md); ``compile=True`` fuses it.

What is fused and what falls back (every case keeps the reference semantics):

- ``loss_map=None`` (per-pixel CE): fused CE; ``confidence=None`` with ``indicator="var"`` and
  ``detach=True``: fused v. A given ``loss_map`` (GCE, KL) still gets the fused v; a given ``confidence``
  still gets the fused CE. ``indicator`` other than ``"var"``, or ``detach=False``, without a given
  ``confidence``: the reference :meth:`ARMLoss.forward_with_weights`, unchanged.
- Any ``weight_fn`` (:class:`~armlib.arm.ARM`, :class:`~armlib.arm.LinearARM`, a custom module) works.
- Value checks (``validate``): the reference checks the logits for NaN/Inf and the labels for values outside
  [0, C) on every call, which costs device syncs. ``validate="first"`` (the default) makes the same checks,
  with the same messages, on the first call only, the fast path for a training loop whose batches all come
  from one dataset and one model; ``True`` on every call, as the reference; ``False`` never (a label in
  [C, 255) then raises in ``gather`` on CPU and trips a device assert on CUDA, NaN logits give a NaN loss).
- Precision: CE and v in float32 for half/bf16 logits (float64 stays float64), like the reference. The
  weight map is computed with autocast disabled, in float32 (or float64); under autocast the reference runs
  ARM's 1×1 convs in bf16, so there the weights differ by bf16 rounding (~0.4 %) and ARM's parameter
  gradients by a few %; without autocast the two paths agree to float rounding.

``compile=True`` (or a backend) additionally runs the three pieces (forward pass, CE backward, MLP +
normalisation + Q) through :func:`torch.compile`, which fuses each into a few kernels (ARM's 1×1 convs are
then written as pointwise ops, :func:`_pointwise_mlp`, since a compiled Conv2d stays an unfused library
call); a piece whose compilation fails warns once and stays eager.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from armlib.arm import ARM, ARMLoss, ReweightedLoss, normalize_weights, reweighted_sum
from armlib.losses import IGNORE_INDEX, at_least_float32, check_logits_target

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _compute_dtype(logits: Tensor) -> torch.dtype:
    """float32 for half/bf16 logits, else their own dtype (``armlib.losses.at_least_float32``)."""
    return torch.float32 if logits.dtype in _LOW_PRECISION else logits.dtype


def _check_shapes(logits: Tensor, target: Tensor) -> None:
    """Shape/dtype checks only: nothing that reads values (no device sync)."""
    if not isinstance(logits, Tensor) or logits.dim() != 4 or not logits.dtype.is_floating_point:
        raise ValueError(f"logits must be a floating N×C×H×W tensor, got "
                         f"{tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__}")
    if logits.shape[1] < 2:
        raise ValueError(f"logits must have at least 2 classes along dim 1, got C={logits.shape[1]}")
    n, _, h, w = logits.shape
    if not isinstance(target, Tensor) or tuple(target.shape) != (n, h, w):
        raise ValueError(f"target must be N×H×W {(n, h, w)} like the logits, got "
                         f"{tuple(target.shape) if isinstance(target, Tensor) else type(target).__name__}")
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer labels, got dtype {target.dtype}")


# ---------------------------------------------------------------------------------------------------------
# CE + normalised variance in one pass
# ---------------------------------------------------------------------------------------------------------

def _ce_var_forward(logits: Tensor, target: Tensor, ignore_index: int) -> tuple[Tensor, Tensor, Tensor]:
    """logits N×C×H×W, target N×H×W → (CE N×H×W, 0 at ignored; v N×1×H×W; lse N×H×W) in float32+."""
    num_classes = logits.shape[1]
    dtype = _compute_dtype(logits)
    m = logits.amax(1, keepdim=True).to(dtype)                    # N×1×H×W, read in the logits' dtype
    # bf16 − float32 promotes to float32 inside one kernel: no separate float32 copy of the logits.
    e = torch.sub(logits, m).exp_()                                # N×C×H×W, the one big temporary, e ≤ 1
    s1 = e.sum(1)                                                  # N×H×W, ≥ 1 (the max contributes 1)
    s2 = e.square_().sum(1)                                        # in place: no second temporary
    del e
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros((), dtype=target.dtype, device=target.device)).long()
    m = m.squeeze(1)
    x_gt = logits.gather(1, safe.unsqueeze(1)).squeeze(1).to(dtype) - m
    log_s1 = s1.log()
    ce = torch.where(valid, log_s1 - x_gt, torch.zeros((), dtype=dtype, device=logits.device))
    sum_p2 = s2 / s1.square()
    v = (2.0 * num_classes / (num_classes - 1) * (sum_p2 - 1.0 / num_classes) - 1.0).clamp(-1.0, 1.0)
    return ce, v.unsqueeze(1), m + log_s1


def _ce_backward(logits: Tensor, lse: Tensor, ce: Tensor, target: Tensor, grad_ce: Tensor,
                 ignore_index: int) -> Tensor:
    """grad of Σ_i grad_ce_i·CE_i w.r.t. the logits: grad_ce·(softmax − onehot), 0 at ignored pixels.

    Shapes: logits N×C×H×W; lse, ce (the forward's CE map), target, grad_ce N×H×W → N×C×H×W in the
    logits' dtype and memory format.
    """
    dtype = lse.dtype
    valid = target != ignore_index
    g = torch.where(valid, grad_ce.to(dtype), torch.zeros((), dtype=dtype, device=lse.device)).unsqueeze(1)
    safe = torch.where(valid, target, torch.zeros((), dtype=target.dtype, device=target.device))
    safe = safe.long().unsqueeze(1)                                # N×1×H×W
    # On the label p_y − 1 = expm1(x_y − lse) = expm1(−CE): no second gather, and no rounding of p_y before
    # the subtraction. g = 0 at ignored pixels, so their stand-in label 0 gets 0.
    at_label = g * torch.expm1(-ce).unsqueeze(1)
    probs = torch.sub(logits, lse.unsqueeze(1)).exp_()             # softmax, recomputed: float32 temporary
    if logits.dtype == dtype:
        grad = probs.mul_(g)
    else:                                                          # half/bf16: one rounding, no float32 copy
        grad = torch.mul(probs, g, out=torch.empty_like(logits))
    return grad.scatter_(1, safe, at_label.to(grad.dtype))


class _CEVar(torch.autograd.Function):
    """(logits, target) → (CE map, v); differentiable in the logits through CE only (v is detached)."""

    @staticmethod
    def forward(ctx, logits, target, ignore_index, forward_impl, backward_impl):
        # Autocast would run exp/sum in its own dtype choices; the maths here picks float32 itself.
        with torch.autocast(logits.device.type, enabled=False):
            ce, v, lse = forward_impl(logits, target, ignore_index)
        ctx.save_for_backward(logits, lse, ce, target)
        ctx.ignore_index, ctx.backward_impl = ignore_index, backward_impl
        ctx.mark_non_differentiable(v)
        return ce, v

    @staticmethod
    @once_differentiable  # the backward is hand-written: a double backward raises instead of being wrong
    def backward(ctx, grad_ce, grad_v):
        logits, lse, ce, target = ctx.saved_tensors
        grad = None
        if ctx.needs_input_grad[0]:
            with torch.autocast(logits.device.type, enabled=False):
                grad = ctx.backward_impl(logits, lse, ce, target, grad_ce, ctx.ignore_index)
        return grad, None, None, None, None


def cross_entropy_and_variance(logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX,
                               *, _impls: tuple[Callable, Callable] | None = None) -> tuple[Tensor, Tensor]:
    """Per-pixel CE and normalised variance of softmax(logits) from one pass over the logits.

    Equal to ``(armlib.losses.cross_entropy_map(logits, target), armlib.confidence.normalized_variance(
    softmax(logits.detach())))`` up to rounding, without their N×C×H×W intermediates or value checks.

    Args:
        logits: N×C×H×W, any float dtype (half/bf16 are computed in float32).
        target: N×H×W integer labels in [0, C) or ``ignore_index``.

    Returns:
        (CE N×H×W, 0 at ignored pixels, differentiable in the logits;
        v N×1×H×W in [-1, 1], no gradient), both float32 (float64 for float64 logits).
    """
    _check_shapes(logits, target)
    forward_impl, backward_impl = _impls or (_ce_var_forward, _ce_backward)
    return _CEVar.apply(logits, target, ignore_index, forward_impl, backward_impl)


@torch.no_grad()
def normalized_variance_from_logits(logits: Tensor) -> Tensor:
    """v = normalized_variance(softmax(logits)) without a probability map. N×C×H×W → N×1×H×W, no grad."""
    target = torch.zeros((logits.shape[0], *logits.shape[2:]), dtype=torch.long, device=logits.device)
    _check_shapes(logits, target)
    return _ce_var_forward(logits, target, IGNORE_INDEX)[1]


# ---------------------------------------------------------------------------------------------------------
# The small N×1×H×W tail: W(v), the double normalisation, Q
# ---------------------------------------------------------------------------------------------------------

def _is_pointwise_mlp(module: nn.Module) -> bool:
    """True for ARM-shaped modules: (1×1 Conv2d with bias, SiLU)*, 1×1 Conv2d with bias, Sigmoid."""
    layers = list(getattr(module, "layers", ()))
    if not isinstance(module, ARM) or len(layers) < 2 or len(layers) % 2 or not isinstance(layers[-1], nn.Sigmoid):
        return False
    convs, acts = layers[0::2], layers[1::2]
    return (all(isinstance(c, nn.Conv2d) and c.kernel_size == (1, 1) and c.stride == (1, 1) and c.groups == 1
                and c.padding == (0, 0) and c.bias is not None for c in convs)
            and all(isinstance(a, nn.SiLU) for a in acts[:-1]))


def _pointwise_mlp(arm: nn.Module, v: Tensor) -> Tensor:
    """ARM's 1×1 convolutions written as broadcast multiply + sum over the (≤ 4) input channels.

    Same function as ``arm(v)``; for ``torch.compile`` only: the compiler lowers a Conv2d to a library call
    (cuDNN, or a slow CPU path for 1→4 channels) that it cannot fuse, while these pointwise ops and tiny
    reductions fuse, with their backward, into a few kernels. Eager, the N×k×k×H×W products would be slower.
    Shape: v N×1×H×W → N×1×H×W.
    """
    layers = list(arm.layers)
    h = v
    for conv, act in zip(layers[0::2], layers[1::2]):
        out_ch, in_ch = conv.weight.shape[:2]
        h = (conv.weight.view(1, out_ch, in_ch, 1, 1) * h.unsqueeze(1)).sum(2) + conv.bias.view(1, out_ch, 1, 1)
        h = act(h)
    return h


def _reweighted_loss(weight_fn: nn.Module, v: Tensor, loss_map: Tensor, valid: Tensor, p: float,
                     isolated: bool, pointwise: bool = False) -> tuple[Tensor, Tensor]:
    """The reference's tail: Q = Σ normalize_weights(W(v))·loss, or the isolated split → (loss, weights).

    ``pointwise`` evaluates an ARM-shaped ``weight_fn`` with :func:`_pointwise_mlp` (the compiled path).
    Shapes: v N×1×H×W, loss_map/valid N×H×W → scalar, N×H×W.
    """
    with torch.autocast(v.device.type, enabled=False):
        # float32 even for a bf16 confidence map (e.g. the KL head's s under autocast), as ARM's parameters.
        v = at_least_float32(v)
        w = _pointwise_mlp(weight_fn, v) if pointwise and _is_pointwise_mlp(weight_fn) else weight_fn(v)
        weights = normalize_weights(w, valid, p).squeeze(1)
        loss = reweighted_sum(weights, loss_map, valid, isolated)
    return loss, weights


# ---------------------------------------------------------------------------------------------------------
# torch.compile with a per-piece eager fallback
# ---------------------------------------------------------------------------------------------------------

class _CompiledOrEager:
    """Call ``torch.compile(fn)``; if compiling or running it raises, warn once and use ``fn`` from then on.

    A genuine error in the inputs then raises from the eager retry, with the eager traceback.
    """

    def __init__(self, fn: Callable, backend: str | Callable, **compile_kwargs):
        self.fn, self.backend = fn, backend
        self.compiled = torch.compile(fn, backend=backend, **compile_kwargs)
        self.failed: str | None = None

    def __call__(self, *args, **kwargs):
        if self.failed is None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001  (any compiler failure: fall back, say why)
                self.failed = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                warnings.warn(f"torch.compile(backend={self.backend!r}) of {self.fn.__name__} failed "
                              f"({self.failed}); using the eager version", RuntimeWarning, stacklevel=2)
        return self.fn(*args, **kwargs)


# ---------------------------------------------------------------------------------------------------------
# The module
# ---------------------------------------------------------------------------------------------------------

class FusedARMLoss(ARMLoss):
    """:class:`armlib.arm.ARMLoss` with the fused CE/variance pass; same constructor, forward and state_dict.

    Args (as :class:`ARMLoss`, plus):
        compile: ``False`` (eager), ``True`` (``torch.compile`` with inductor) or a ``torch.compile``
            backend (a name such as ``"aot_eager"``, which traces without generating code, or a callable).
            Each compiled piece falls back to eager, with a warning, if its compilation fails.
        validate: ``"first"`` (default): check the logits (finite) and labels (in [0, C) or ``ignore_index``) on
            the first call, raising ``ValueError`` as :class:`ARMLoss` does; ``True``: on every call; ``False``:
            never (module docstring).

    Shapes: logits N×C×H×W (any float dtype), target N×H×W → scalar loss (see
    :meth:`ARMLoss.forward_with_weights`). See the module docstring for what is fused.
    """

    def __init__(self, weight_fn: nn.Module | None = None, p: float = 2.0, indicator: str = "var",
                 detach: bool = True, ignore_index: int = IGNORE_INDEX, compile: bool | str | Callable = False,
                 validate: bool | str = "first"):
        super().__init__(weight_fn, p, indicator, detach, ignore_index)
        if validate not in (True, False, "first"):
            raise ValueError(f"validate must be True, False or 'first', got {validate!r}")
        self.validate = validate
        self._validated = False
        self.compile_backend = compile    # not ``self.compile``: that would shadow nn.Module.compile()
        self._impls: tuple[Callable, Callable] | None = None
        self._tail: Callable = _reweighted_loss
        if compile:
            backend = "inductor" if compile is True else compile
            self._impls = (_CompiledOrEager(_ce_var_forward, backend),
                           _CompiledOrEager(_ce_backward, backend))
            self._tail = _CompiledOrEager(_reweighted_loss, backend)

    def extra_repr(self) -> str:
        return f"p={self.p}, indicator={self.indicator!r}, compile={self.compile_backend!r}"

    def forward_with_weights(self, logits: Tensor, target: Tensor, loss_map: Tensor | None = None,
                             confidence: Tensor | None = None, isolated: bool = False) -> ReweightedLoss:
        """As :meth:`ARMLoss.forward_with_weights`; returns (loss, weights N×H×W, v N×H×W)."""
        fused_v = confidence is None and self.indicator == "var" and self.detach
        if confidence is None and not fused_v:
            return super().forward_with_weights(logits, target, loss_map, confidence, isolated)
        _check_shapes(logits, target)
        if self.validate is True or (self.validate == "first" and not self._validated):
            check_logits_target(logits, target, self.ignore_index)   # ARMLoss's checks and messages
            self._validated = True
        if loss_map is None:
            loss_map, v = cross_entropy_and_variance(logits, target, self.ignore_index, _impls=self._impls)
        else:
            if loss_map.shape != target.shape:
                raise ValueError(f"loss_map must be N×H×W like target {tuple(target.shape)}, got "
                                 f"{tuple(loss_map.shape)}")
            v = normalized_variance_from_logits(logits) if fused_v else None
        if confidence is not None:
            v = confidence.detach() if self.detach else confidence
        valid = target != self.ignore_index
        pointwise = bool(self.compile_backend)
        loss, weights = self._tail(self.weight_fn, v, loss_map, valid, self.p, isolated, pointwise)
        return ReweightedLoss(loss, weights.detach(), v.detach().squeeze(1))
