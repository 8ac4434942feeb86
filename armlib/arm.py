"""The Adversarial Reweighting Module (paper Sec. 3.3–3.5, Fig. 3) as a drop-in loss.

Pipeline per pixel i: class probabilities p_i → confidence v_i ∈ [-1, 1] → weight W(v_i) → normalised
weight map → Q = Σ_i w_i l_i (Eq. 4–6). The segmentation model minimises Q; ARM maximises it (Eq. 9).

Three resolutions of the paper's gaps live here, each tested in ``tests/test_arm.py``:

1. **The double normalisation** (Sec. 4.2): the weight map is divided by its L_p norm, then by its L1
   norm. If ARM's gradient flowed through the L1 division, the L_p division would cancel
   (w/‖w‖_p / ‖w/‖w‖_p‖_1 = w/‖w‖_1) and ARM would face an L1 constraint, whose optimum is sparse
   (Eq. 11): it collapses onto the lowest-confidence pixels. So the L1 factor is a constant for ARM's
   gradient (detached); ARM then maximises Σ (w/‖w‖_p)·l, the Hölder problem of Eq. 13, while the loss
   keeps the scale of a mean over pixels.
2. **The norm's domain**: one weight map per mini-batch, normalised over all valid (non-ignored) pixels
   of the batch (under DDP: of the rank's local batch). With W ≡ const, Q is then exactly the mean
   per-pixel loss over valid pixels, i.e. the base model's loss.
3. **The negative learning rate** (Sec. 3.3): ``torch.optim.SGD`` rejects lr < 0, so ARM's parameters
   go into a parameter group with ``maximize=True`` (see :func:`adversarial_sgd`). ARM's parameters in a
   minimising group, or in no optimiser at all, turn the adversary into a cooperator or a constant: both are
   warned about (:class:`AdversarialWarning`).

Where a PyTorch user trains:

* **DDP.** Wrap the model in ``DistributedDataParallel``, not the criterion. DDP averages only the gradients of
  the module it wraps; ARMLoss averages ARM's own over the ranks at the end of every backward pass that reached
  them (one all-reduce of its 53 values) whenever a process group of several ranks is initialised, so ARM
  stays in sync with no extra line. :func:`sync_arm_gradients` (the earlier README's explicit call, and the
  trainer's) stays valid: on gradients already averaged it does nothing. Every rank's backward must reach ARM,
  as every rank's must reach the model under DDP. Each rank normalises the weight map over its own batch, as
  the paper's per-GPU loss does (mmsegmentation computes the loss per GPU).
* **Gradient accumulation.** The weight map is normalised over the pixels of one call, as the paper normalises
  over one (per-GPU) batch: k accumulated micro-batches give what k GPUs each holding one micro-batch give, not
  what one call on the whole batch gives (ARM's gradient differs by tens of per cent; the model's too, once ARM
  has learned a shape). For the whole batch's normalisation, concatenate the micro-batches' outputs and call
  the criterion once (``tests/test_arm.py`` shows both).
* **torchvision's dict outputs.** ``criterion(model(images), masks)`` accepts ``{"out", "aux"}``: "out" is
  reweighted, "aux" enters as ``aux_weight`` (0.4, the paper's §4.2) times its plain mean cross-entropy,
  never reweighted, as the trainer does: the paper reweights the decode head's loss (ARM's input is the
  prediction's confidence), and its auxiliary FCN head keeps mmsegmentation's plain loss.

One module of about 520 lines, over the suite's 400, on purpose: the weight function, its normalisation, the
adversarial optimiser group and the DDP averaging are one mechanism that ``tests/test_arm.py`` exercises
together, and this file is training code whose syntax tree the run keys fingerprint (``tests/test_runs.py``):
splitting it would move every committed run's key for no change in what it computes.
"""
from __future__ import annotations

import math
import warnings
import weakref
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import numpy as np

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from armlib.confidence import indicator as confidence_indicator
from armlib.losses import IGNORE_INDEX, at_least_float32, cross_entropy_map, mean_over_valid

_EPS = 1e-12
AUX_WEIGHT = 0.4          # the auxiliary head's loss weight (§4.2, mmsegmentation's FCN head)
UNSTEPPED_CALLS = 20      # training calls without any change of ARM's parameters before ARMLoss warns


class AdversarialWarning(UserWarning):
    """ARM's parameters are not being maximised: in a minimising group, or stepped by no optimiser."""


class ARM(nn.Module):
    """W(v; θ_W): four 1×1 convolutions 1→4→4→4→1, Swish between, Sigmoid last (Fig. 3, Sec. 4.2).

    8 + 20 + 20 + 5 = 53 parameters. 1×1 convolutions make it a per-pixel MLP applied to a map.

    Shape: v N×1×H×W in [-1, 1] → weights N×1×H×W in (0, 1).
    """

    def __init__(self, hidden: int = 4):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(1, hidden, 1), nn.SiLU(),
            nn.Conv2d(hidden, hidden, 1), nn.SiLU(),
            nn.Conv2d(hidden, hidden, 1), nn.SiLU(),
            nn.Conv2d(hidden, 1, 1), nn.Sigmoid(),
        )

    def forward(self, v: Tensor) -> Tensor:
        _check_v(v)
        return self.layers(v)

    @torch.no_grad()
    def curve(self, num: int = 101) -> tuple[Tensor, Tensor]:
        """W sampled on a uniform grid of v ∈ [-1, 1]; returns (v, W(v)), both 1-D float32 on CPU (float64 for a
        float64 ARM)."""
        param = next(self.parameters())
        v = torch.linspace(-1.0, 1.0, num, device=param.device, dtype=param.dtype)
        dtype = torch.float64 if param.dtype == torch.float64 else torch.float32
        return v.cpu().to(dtype), self(v.view(1, 1, 1, -1)).flatten().cpu().to(dtype)


class LinearARM(nn.Module):
    """Linear ARM W(v) = k·v + b with constants k, b (Table 1, Sec. 4.3). No parameters.

    k = −0.5, b = 0.5 suppresses confident pixels (W(+1) = 0, W(−1) = 1); k = +0.5, b = 0.5 is the
    "focusing" variant. Shape: N×1×H×W → N×1×H×W.
    """

    def __init__(self, k: float = -0.5, b: float = 0.5):
        super().__init__()
        self.k, self.b = float(k), float(b)

    def forward(self, v: Tensor) -> Tensor:
        _check_v(v)
        return self.k * v + self.b

    def extra_repr(self) -> str:
        return f"k={self.k}, b={self.b}"

    @torch.no_grad()
    def curve(self, num: int = 101) -> tuple[Tensor, Tensor]:
        v = torch.linspace(-1.0, 1.0, num)
        return v, self(v.view(1, 1, 1, -1)).flatten()


def _check_v(v: Tensor) -> None:
    if not isinstance(v, Tensor) or v.dim() != 4 or v.shape[1] != 1:
        shape = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
        raise ValueError(f"v must be a N×1×H×W confidence map, got {shape}")


def normalize_weights(w: Tensor, valid: Tensor, p: float = 2.0, *, l1_grad: bool = False) -> Tensor:
    """Normalise a weight map twice (Sec. 4.2): by its L_p norm, then by its L1 norm.

    Args:
        w: N×1×H×W or N×H×W non-negative weights.
        valid: bool mask of the same shape (or N×H×W when w is N×1×H×W); weights outside are zeroed.
        p: the L_p constraint of Eq. 13 / Table 2, p ≥ 1 (the paper uses 1, 2, 3; 2 by default).
        l1_grad: let gradients flow through the L1 division. Only for the ablation that shows ARM
            collapsing to the sparse L1 solution; never use it for training (module docstring, point 1).

    Returns:
        Weights of w's shape, zero outside ``valid``, summing to 1 over the valid pixels (all zeros when
        nothing is valid). Forward value = w/‖w‖_1; ARM's gradient is that of w/‖w‖_p up to a constant.
    """
    if not isinstance(p, (int, float)) or not 1.0 <= p < math.inf:
        raise ValueError(f"p must be a finite number ≥ 1 (the L_p norm of Eq. 13), got {p!r}")
    if valid.dim() == w.dim() - 1:
        valid = valid.unsqueeze(1)
    if valid.shape != w.shape:
        raise ValueError(f"valid must have the shape of w {tuple(w.shape)}, got {tuple(valid.shape)}")
    w = torch.where(valid, w, torch.zeros((), dtype=w.dtype, device=w.device))
    lp = w.square().sum().sqrt() if p == 2 else w.pow(p).sum().pow(1.0 / p)
    w = w / lp.clamp_min(_EPS)
    l1 = w.sum()
    return w / (l1 if l1_grad else l1.detach()).clamp_min(_EPS)


class ReweightedLoss(NamedTuple):
    """What :meth:`ARMLoss.forward_with_weights` returns (weights/v detached, N×H×W)."""

    loss: Tensor
    weights: Tensor
    v: Tensor


class ARMLoss(nn.Module):
    """The whole reweighted loss of Fig. 3 for any model's logits and any per-pixel loss.

    ``loss = criterion(logits, target)`` replaces ``F.cross_entropy(logits, target, ignore_index=255)``;
    put ``criterion.weight_fn``'s parameters in the adversarial group of :func:`adversarial_sgd`.

    Args:
        weight_fn: the mapping W(v): :class:`ARM` (default) or :class:`LinearARM`.
        p: L_p normalisation of the weight map (Table 2), ≥ 1.
        indicator: confidence statistic fed to W (``"var"``, ``"std"``, ``"logvar"``, ``"entropy"``);
            ignored when ``confidence`` is passed to forward (e.g. the KL loss's s, Table 4).
        detach: compute the confidence from detached probabilities (the paper's choice). ``False``
            lets the model lower its loss by changing its confidence instead of its prediction; it
            exists only to reproduce Table 1's collapse.
        ignore_index: label value excluded from the loss and the normalisation.
        aux_weight: weight of a dict output's ``"aux"`` head (plain mean cross-entropy, never reweighted).

    ARM's parameters must be maximised (:func:`adversarial_sgd`, :func:`add_adversarial_group`): an optimiser
    step with them in a minimising group, or :data:`UNSTEPPED_CALLS` training calls (grad enabled, train mode)
    without any change to them, warns once (:class:`AdversarialWarning`).
    """

    def __init__(self, weight_fn: nn.Module | None = None, p: float = 2.0, indicator: str = "var",
                 detach: bool = True, ignore_index: int = IGNORE_INDEX, *, aux_weight: float = AUX_WEIGHT):
        super().__init__()
        if not isinstance(p, (int, float)) or not 1.0 <= p < math.inf:
            raise ValueError(f"p must be a finite number ≥ 1, got {p!r}")
        self.weight_fn = ARM() if weight_fn is None else weight_fn
        self.p, self.indicator, self.detach, self.ignore_index = float(p), indicator, detach, ignore_index
        self.aux_weight = float(aux_weight)
        global _ANY_ARM
        self._rank_average = _RankAverage(self.weight_fn)
        for param in self.weight_fn.parameters():
            param._armlib_adversarial = True   # an attribute: tensors compare elementwise, so no set of them
            param.register_post_accumulate_grad_hook(self._rank_average.reached)
            _ANY_ARM = True
        self._versions: tuple[int, ...] | None = None
        self._unstepped = 0

    def forward(self, logits: Tensor | Mapping[str, Tensor], target: Tensor, loss_map: Tensor | None = None,
                confidence: Tensor | None = None, isolated: bool = False) -> Tensor:
        """Q (:meth:`forward_with_weights`) of a tensor of logits, or of torchvision's dict output.

        ``logits`` may be ``{"out": N×C×H×W[, "aux": N×C×H×W]}``: the loss is then Q of "out" plus
        ``aux_weight`` × the plain mean cross-entropy of "aux" over valid pixels (``loss_map`` and
        ``confidence`` apply to "out"). Returns a scalar.
        """
        self._note_training_call()
        if not isinstance(logits, Mapping):
            return self.forward_with_weights(logits, target, loss_map, confidence, isolated).loss
        if "out" not in logits:
            raise ValueError(f"a dict output needs the key 'out' (torchvision's segmentation models), got "
                             f"{sorted(logits)}")
        loss = self.forward_with_weights(logits["out"], target, loss_map, confidence, isolated).loss
        if "aux" in logits and self.aux_weight > 0:
            aux = cross_entropy_map(logits["aux"], target, self.ignore_index)
            loss = loss + self.aux_weight * mean_over_valid(aux, target, self.ignore_index)
        return loss

    def _note_training_call(self) -> None:
        """Warn once when ARM's parameters stay unchanged over :data:`UNSTEPPED_CALLS` training calls.

        An optimiser step modifies parameters in place, which bumps their version counter: counters unchanged
        from one call to the next mean nothing stepped ARM in between.
        """
        params = [q for q in self.weight_fn.parameters() if q.requires_grad]
        if not params or not self.training or not torch.is_grad_enabled() or self._unstepped < 0:
            return
        versions = tuple(q._version for q in params)
        self._unstepped = self._unstepped + 1 if versions == self._versions else 0
        self._versions = versions
        if self._unstepped >= UNSTEPPED_CALLS:
            self._unstepped = -1   # once
            warnings.warn(f"ARMLoss: ARM's parameters have not changed in {UNSTEPPED_CALLS} training calls, so no "
                          f"optimiser steps them and ARM stays a constant; put criterion.parameters() in a "
                          f"maximising group (armlib.adversarial_sgd or armlib.add_adversarial_group)",
                          AdversarialWarning, stacklevel=5)

    def forward_with_weights(self, logits: Tensor, target: Tensor, loss_map: Tensor | None = None,
                             confidence: Tensor | None = None, isolated: bool = False) -> ReweightedLoss:
        """Compute Q = Σ_i w_i l_i.

        Args:
            logits: N×C×H×W raw scores.
            target: N×H×W int64 labels in [0, C) or ``ignore_index``.
            loss_map: N×H×W per-pixel loss (any: CE, GCE, KL); per-pixel CE of ``logits`` if None.
            confidence: N×1×H×W ARM input in [-1, 1] replacing the indicator (e.g.
                :func:`armlib.confidence.uncertainty_indicator` of the KL head's log s).
            isolated: the first 0.05·T of training (Sec. 4.2): the returned loss has the value and the
                model gradient of the plain mean loss over valid pixels, while ARM still gets the
                gradient of Q (computed on the detached loss map).

        Returns:
            (loss: scalar, weights: N×H×W normalised weights (detached), v: N×H×W ARM input (detached)).
            With no valid pixel the loss is 0 (with a graph, no NaN).
        """
        if loss_map is None:
            loss_map = cross_entropy_map(logits, target, self.ignore_index)
        elif loss_map.shape != target.shape:
            raise ValueError(f"loss_map must be N×H×W like target {tuple(target.shape)}, got "
                             f"{tuple(loss_map.shape)}")
        valid = target != self.ignore_index
        if confidence is None:
            source = logits.detach() if self.detach else logits
            # Softmax in float32: bf16 probabilities are too coarse for the variance of 19+ classes.
            confidence = confidence_indicator(F.softmax(at_least_float32(source), dim=1), self.indicator)
        elif self.detach:
            confidence = confidence.detach()
        # ARM's 53 parameters and the norms run in float32 even under autocast: bf16 convs on a 1-channel map
        # cost nothing to avoid, and moved ARM's gradients by several per cent in a CPU-autocast check.
        with torch.autocast(confidence.device.type, enabled=False):
            weights = normalize_weights(self.weight_fn(at_least_float32(confidence)), valid, self.p).squeeze(1)
        loss = reweighted_sum(weights, loss_map, valid, isolated)
        return ReweightedLoss(loss, weights.detach(), confidence.detach().squeeze(1))


def reweighted_sum(weights: Tensor, loss_map: Tensor, valid: Tensor, isolated: bool = False) -> Tensor:
    """Q = Σ_i w_i l_i (Eq. 6) of normalised weights and a loss map (both N×H×W).

    ``isolated`` (the first 0.05·T, Sec. 4.2): the value and the model's gradient of the plain mean over
    ``valid`` pixels, while ARM gets the gradient of Q on the detached loss map.
    """
    if isolated:
        plain = loss_map.sum() / valid.sum().clamp_min(1)
        q_arm = (weights * loss_map.detach()).sum()
        return plain + (q_arm - q_arm.detach())
    return (weights * loss_map).sum()


def adversarial_sgd(model_params, arm_params, lr: float, momentum: float = 0.9,
                    weight_decay: float = 1e-4, **kwargs) -> torch.optim.SGD:
    """One SGD over the model (minimising) and ARM (maximising) with the same lr (Sec. 4.2, Eq. 9).

    The paper flips the sign of ARM's learning rate; ``torch.optim.SGD`` refuses lr < 0, so ARM's
    parameters form a group with ``maximize=True``, which steps along +grad. Consequences:

    - momentum: identical to a negative lr (the buffer holds −g instead of g, the step flips back);
    - weight decay: with ``maximize`` the decay term is added after the gradient is negated, so it
      still shrinks ARM's weights (the maximisation of Q − wd/2‖θ‖²). A literal negative lr would
      instead grow them by a factor (1 + lr·wd) per step. We keep the decay: it regularises, and the
      difference over the paper's T = 40k steps is e^{0.08} at most.

    Both groups follow any lr scheduler together (a ``LambdaLR`` scales every group).
    ``kwargs`` go to ``torch.optim.SGD`` (e.g. ``fused=True`` on CUDA).
    """
    groups = [{"params": list(model_params), "maximize": False}]
    arm_params = list(arm_params)
    if arm_params:
        groups.append({"params": arm_params, "maximize": True})
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, **kwargs)


def _process_group_of_several() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _RankAverage:
    """Averages a module's gradients over the ranks once at the end of each backward pass that reached them.

    Each parameter's post-accumulate hook queues one callback on the autograd engine (as DDP and FSDP queue
    their final reduction), so the average is taken after every gradient of the pass has arrived, in one
    all-reduce, however many forward calls the pass spans. Under gradient accumulation each pass averages what
    has accumulated: averaging is linear, and a gradient that is already the ranks' mean stays it."""

    def __init__(self, module: nn.Module):
        self.module, self.queued = module, False

    def reached(self, param: Tensor) -> None:
        if self.queued or not _process_group_of_several():
            return
        self.queued = True
        torch.autograd.Variable._execution_engine.queue_callback(self.average)

    def average(self) -> None:
        self.queued = False
        sync_arm_gradients(self.module)


def _mark_averaged(param: nn.Parameter) -> None:
    param._armlib_averaged = (weakref.ref(param.grad), param.grad._version)


def _is_averaged(param: nn.Parameter) -> bool:
    """True while ``param.grad`` is the very tensor, unmodified, that an average over the ranks wrote."""
    mark = getattr(param, "_armlib_averaged", None)
    return param.grad is not None and mark is not None and mark[0]() is param.grad and mark[1] == param.grad._version


def sync_arm_gradients(arm_params: nn.Module | Iterable[nn.Parameter], group=None) -> None:
    """Average ARM's gradients over the ranks of a DDP run; call it between ``backward()`` and ``step()``.

    DDP averages the gradients of the module it wraps, the model; the criterion holding ARM is not wrapped
    (wrapping it would also work, at one more reducer per step), so without this each rank steps ARM with its
    own batch's gradient and ARM's parameters drift apart while the model stays in sync. One all-reduce of
    ARM's 53 values; a parameter without a gradient counts as zero. With gradient accumulation, call it once,
    before the step, like DDP's ``no_sync``.

    Args:
        arm_params: an :class:`ARMLoss` (or any module) or its parameters.
        group: the process group (default: the default group, as DDP's).

    No-op when ``torch.distributed`` is not initialised or the group has one rank, and on gradients that are
    already the ranks' mean (:class:`ARMLoss` averages its own at the end of each backward pass): calling it
    after that never averages twice. Gradients are replaced by their mean over ranks (float, same dtype and
    shape).
    """
    params = list(arm_params.parameters() if isinstance(arm_params, nn.Module) else arm_params)
    params = [q for q in params if q.requires_grad]
    if not params or not dist.is_available() or not dist.is_initialized() or all(map(_is_averaged, params)):
        return
    world = dist.get_world_size(group)
    if world == 1:
        return
    flat = torch.cat([(q.grad if q.grad is not None else torch.zeros_like(q)).reshape(-1) for q in params])
    dist.all_reduce(flat, group=group)
    flat /= world
    offset = 0
    for q in params:
        q.grad = flat[offset:offset + q.numel()].view_as(q).clone()
        _mark_averaged(q)
        offset += q.numel()


_ANY_ARM = False   # whether any ARMLoss was built: until then the hook below costs one test per step
_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()   # optimiser → groups already checked


def _check_adversarial_groups(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    """Global optimiser step pre-hook: warn once per group holding ARM's parameters with ``maximize`` off.

    A hook on every optimiser because the mistake happens where armlib is not called (the user's own
    ``torch.optim.SGD(model.parameters() + criterion.parameters())``); each group is checked once.
    """
    if not _ANY_ARM:
        return
    groups = optimizer.param_groups
    start = _CHECKED.get(optimizer, 0)
    if start == len(groups):
        return
    _CHECKED[optimizer] = len(groups)
    for index, group in enumerate(groups[start:], start):
        if not group.get("maximize", False) and any(getattr(q, "_armlib_adversarial", False) for q in group["params"]):
            warnings.warn(f"{type(optimizer).__name__}.param_groups[{index}] holds ARM's parameters but minimises: "
                          f"ARM would cooperate with the model instead of opposing it (Eq. 9); build the optimiser "
                          f"with armlib.adversarial_sgd or add ARM with armlib.add_adversarial_group "
                          f"(maximize=True)", AdversarialWarning, stacklevel=3)


register_optimizer_step_pre_hook(_check_adversarial_groups)


# Schedulers whose per-group state is one base lr (plus, for the lambda ones, one lambda per group): a group
# added after construction is scheduled exactly like the first group once these lists are extended.
_EXTENDABLE_SCHEDULERS = ("LambdaLR", "MultiplicativeLR", "StepLR", "MultiStepLR", "ConstantLR", "LinearLR",
                          "ExponentialLR", "PolynomialLR", "CosineAnnealingLR")


def add_adversarial_group(optimizer: torch.optim.Optimizer, arm_params, scheduler=None) -> dict:
    """Put ARM's parameters into an optimiser (and its lr scheduler) that already exist, maximising.

    The new group copies every hyper-parameter of ``optimizer.param_groups[0]`` (lr, momentum, weight decay,
    betas, ...) and sets ``maximize=True``, so ARM gets the model's lr, as in the paper (Sec. 4.2). A
    scheduler built before the group existed would leave it at its first lr forever (schedulers keep one
    base lr per group, fixed at construction), so ``scheduler``'s per-group state is extended to schedule it
    like group 0. Building :func:`adversarial_sgd` first and the scheduler after is equivalent.

    Args:
        optimizer: any ``torch.optim`` optimiser whose groups accept ``maximize`` (SGD, Adam, AdamW, ...).
        arm_params: ARM's parameters, e.g. ``criterion.parameters()``.
        scheduler: an lr scheduler of ``optimizer`` (one of ``LambdaLR``, ``MultiplicativeLR``, ``StepLR``,
            ``MultiStepLR``, ``ConstantLR``, ``LinearLR``, ``ExponentialLR``, ``PolynomialLR``,
            ``CosineAnnealingLR``), or None.

    Returns:
        The added parameter group.

    Raises:
        ValueError: ``arm_params`` is empty, the optimiser has no ``maximize`` option, or the scheduler keeps
            per-group state this function cannot extend (create that scheduler after adding the group).
    """
    arm_params = list(arm_params)
    if not arm_params:
        raise ValueError("arm_params is empty: pass criterion.parameters() of an ARMLoss with a learnable ARM")
    if "maximize" not in optimizer.defaults:
        raise ValueError(f"optimizer {type(optimizer).__name__} has no 'maximize' option; ARM needs one to "
                         f"ascend its loss (use torch.optim.SGD, Adam or AdamW)")
    if scheduler is not None:
        if scheduler.optimizer is not optimizer:
            raise ValueError("scheduler must be a scheduler of optimizer")
        if type(scheduler).__name__ not in _EXTENDABLE_SCHEDULERS:
            raise ValueError(f"scheduler {type(scheduler).__name__} keeps per-group state that cannot be "
                             f"extended; add ARM's group first, then create the scheduler "
                             f"(supported here: {', '.join(_EXTENDABLE_SCHEDULERS)})")
    template = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
    optimizer.add_param_group({**template, "params": arm_params, "maximize": True})
    group = optimizer.param_groups[-1]
    if scheduler is not None:
        scheduler.base_lrs.append(scheduler.base_lrs[0])
        scheduler._last_lr.append(scheduler._last_lr[0])   # read by get_last_lr() before the next step
        if hasattr(scheduler, "lr_lambdas"):
            scheduler.lr_lambdas.append(scheduler.lr_lambdas[0])
    return group


# -- did ARM learn? ---------------------------------------------------------------------------------------

from armlib.thresholds import MOVED_THRESHOLD, SUPPRESSION_THRESHOLD  # noqa: E402,F401  (torch-free home)


def curve_shape_change(w_init, w_end) -> float:
    """max_v |W_end(v)/mean W_end − W_0(v)/mean W_0| over a curve sampled on a uniform grid of v.

    Each curve is divided by its mean first because the weight map is normalised (w/‖w‖): a uniform scaling of
    W changes nothing ARM does, so it must not count as learning. 0 for an untouched curve.
    """
    w0, w1 = np.asarray(w_init, dtype=float), np.asarray(w_end, dtype=float)
    return float(np.max(np.abs(w1 / w1.mean() - w0 / w0.mean())))


def curve_suppression(w) -> float:
    """(W(−1) − W(+1)) / mean W of a curve sampled from v = −1 to v = +1: > 0 when confident pixels (v = +1)
    weigh less than unsure ones; scale-free for the same reason as :func:`curve_shape_change`."""
    w = np.asarray(w, dtype=float)
    return float((w[0] - w[-1]) / w.mean())


def shape_pull(weight_fn: nn.Module, num: int = 201) -> float:
    """How hard a loss that falls with confidence pulls on the *shape* of W(v) at ARM's current parameters.

    ‖∇_θ Σ_v (l(v) − l̄)·W(v) / Σ_v W(v)‖₂ for l(v) = −v on a uniform grid of ``num`` points of v ∈ [−1, 1]: the
    gradient ARM's maximisation would get if confident pixels (v → +1) had a lower loss, up to the data's own
    scale. Only the shape counts, as in ARM's loss (a uniform scaling of W cancels in the normalisation).

    Why it exists: ARM's four 1×1 layers of width 4 with PyTorch's default init make W nearly flat (its range
    over v ∈ [−1, 1] is 0.0005–0.02 depending on the seed), so ARM starts on a plateau whose slope differs ten-fold
    between seeds (4e-3 to 4e-2 for seeds 0–7). A seed with a weak pull needs more high-lr steps to leave its
    initialisation; when the lr drops first, its curve never moves (issue 11). Units: per unit of loss; ≥ 0.
    """
    params = [q for q in weight_fn.parameters() if q.requires_grad]
    if not params:
        return 0.0
    first = params[0]
    v = torch.linspace(-1.0, 1.0, num, dtype=first.dtype, device=first.device).view(1, 1, 1, -1)
    with torch.enable_grad():
        w = weight_fn(v).flatten()
        loss = -v.flatten()
        pull = ((loss - loss.mean()) * w).sum() / w.sum()
        grads = torch.autograd.grad(pull, params)
    return float(torch.sqrt(sum(g.double().square().sum() for g in grads)))


def arm_moved(record: dict) -> bool | None:
    """Whether a run record's ARM curve moved from its initialisation (None: no learned curve in the record,
    e.g. the base model, Linear ARM or a diverged run)."""
    curve, init = record.get("arm_curve"), record.get("arm_curve_init")
    if not curve or not init or record.get("config", {}).get("reweight") != "arm":
        return None
    return curve_shape_change(init["w"], curve["w"]) >= MOVED_THRESHOLD
