"""The two numbers that say whether ARM learned, in a module without torch.

Every report section, the calibration rule and :func:`armlib.arm.arm_moved` read them; the manifest
(:mod:`armlib.reproduction.sections`) states them in its criteria, and ``armlib --help`` must not import torch to read them.
"""
MOVED_THRESHOLD = 0.1         # "ARM moved": max_v |W_end/mean W_end − W_0/mean W_0| ≥ 0.1
SUPPRESSION_THRESHOLD = 0.1   # "ARM suppresses confident pixels": (W_end(−1) − W_end(+1)) / mean W_end ≥ 0.1
