"""The paper's learning-rate policy (Sec. 4.2): linear warm-up, then two ×0.1 steps."""
from __future__ import annotations

WARMUP_FRACTION = 0.05
WARMUP_START_FACTOR = 0.01
MILESTONES = ((0.6, 0.1), (0.9, 0.01))  # (fraction of T, factor of base_lr) from that fraction on


def paper_lr(it: int, total: int, base_lr: float = 0.02) -> float:
    """Learning rate at iteration ``it`` (0-based) of ``total``.

    Rises linearly from base_lr/100 (it = 0) to base_lr (it = 0.05·T), then is base_lr, base_lr/10 from
    0.6·T and base_lr/100 from 0.9·T. ``paper_lr(it, T, 1.0)`` is the factor a
    ``torch.optim.lr_scheduler.LambdaLR`` needs.
    """
    if total <= 0:
        raise ValueError(f"total must be a positive number of iterations, got {total}")
    if not 0 <= it <= total:
        raise ValueError(f"it must be in [0, total={total}], got {it}")
    warmup = WARMUP_FRACTION * total
    if it < warmup:
        return base_lr * (WARMUP_START_FACTOR + (1.0 - WARMUP_START_FACTOR) * it / warmup)
    factor = 1.0
    for fraction, f in MILESTONES:
        if it >= fraction * total:
            factor = f
    return base_lr * factor
