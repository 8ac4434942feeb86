"""armlib: the reproduction suite for "ARM: A Confidence-Based Adversarial Reweighting Module for
Coarse Semantic Segmentation" (Liu et al.).

Drop-in use::

    from armlib import ARMLoss, adversarial_sgd
    criterion = ARMLoss()                                   # ARM, var input, L2 normalisation
    optimizer = adversarial_sgd(model.parameters(), criterion.parameters(), lr=0.01)
    loss = criterion(model(images)["out"], masks)           # masks: N×H×W, 255 = ignore
    # an optimiser / lr scheduler you already have: add_adversarial_group(optimizer, criterion.parameters(), scheduler)
"""
from armlib.arm import ARM, ARMLoss, LinearARM, add_adversarial_group, adversarial_sgd, normalize_weights
from armlib.fused import FusedARMLoss  # ARMLoss's exact maths, reading the logits once (the trainer's choice)

__all__ = ["ARM", "ARMLoss", "FusedARMLoss", "LinearARM", "add_adversarial_group", "adversarial_sgd",
           "normalize_weights"]
__version__ = "0.1.0"
