"""armlib: the reproduction suite for "ARM: A Confidence-Based Adversarial Reweighting Module for
Coarse Semantic Segmentation" (Liu et al.).

Drop-in use (README, "ARM as a drop-in loss")::

    from armlib import ARMLoss, adversarial_sgd
    criterion = ARMLoss()                                   # ARM, var input, L2 normalisation
    optimizer = adversarial_sgd(model.parameters(), criterion.parameters(), lr=0.01)
    loss = criterion(model(images), masks, isolated=it < 0.05 * iterations)   # dict or N×C×H×W; 255 = ignore
    optimizer.zero_grad(); loss.backward()                  # under DDP, ARM's gradients are averaged over ranks
    optimizer.step()
    # an optimiser / lr scheduler you already have: add_adversarial_group(optimizer, criterion.parameters(), scheduler)

The names below are imported on first use (PEP 562), so ``armlib.errors`` or ``armlib --help`` do not import torch.
"""
import importlib

_EXPORTS = {
    "ARM": "armlib.arm", "ARMLoss": "armlib.arm", "AdversarialWarning": "armlib.arm", "LinearARM": "armlib.arm",
    "add_adversarial_group": "armlib.arm", "adversarial_sgd": "armlib.arm", "normalize_weights": "armlib.arm",
    "sync_arm_gradients": "armlib.arm",
    "FusedARMLoss": "armlib.fused",   # ARMLoss's exact maths, reading the logits once (the trainer's choice)
}
__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'armlib' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
