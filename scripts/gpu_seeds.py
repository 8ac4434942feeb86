"""How many reporting seeds a scale's primary rows need, sized from its calibration (run on the CPU, once a GPU
session's calibration is committed and has chosen a T):

    PYTHONPATH=. python3 scripts/gpu_seeds.py                       # reports/gpu/calibration/
    PYTHONPATH=. python3 scripts/gpu_seeds.py --calibration reports/quick/calibration

The calibration's ARM − base pairs on coarse labels at the chosen T (seeds 100 and up, never reporting seeds) are
the pilot: σ is their paired SD's one-sided 80 % upper confidence bound (the report's rule, Browne 1995:
:func:`armlib.reproduction.stats.sd_upper_bound`), and the seeds are the pairs a two-sided paired t-test needs to detect the
calibration's effect (``power_target.effect`` of ``calibration.json``: the paper's gain carried to our base) at
``--alpha`` with 80 % power (:func:`armlib.reproduction.stats.seeds_needed`), rounded up, and never fewer than the scale's floor
of 5. Prints one line per quantity; exit 3 while no T is chosen (nothing to size from yet).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from armlib.reproduction import calibration, stats  # noqa: E402
from armlib.reproduction.sections import ALPHA, POWER  # noqa: E402

FLOOR = 5   # the smallest number of seeds a primary row runs with at any scale (armlib.reproduction.sections.SCALES)


def pilot(folder: Path) -> tuple[int, float, float]:
    """(chosen T, n pairs, paired SD of ARM − base on coarse labels at T) from a calibration's files.

    Raises:
        LookupError: no T chosen yet.
    """
    summary = json.loads((folder / calibration.SUMMARY_FILE).read_text())
    t = summary.get("chosen_T")
    if t is None:
        raise LookupError(f"{folder / calibration.SUMMARY_FILE}: no T chosen yet, nothing to size from")
    arms = pd.read_csv(folder / calibration.ARM_FILE)
    at = arms[(arms["T"] == t) & (arms["annotation"] == "coarse")].dropna(subset=["base mIoU", "ARM mIoU"])
    diff = at["ARM mIoU"] - at["base mIoU"]
    return int(t), len(diff), float(diff.std(ddof=1))


def size(sd: float, n: int, effect: float, alpha: float, power: float = POWER) -> dict:
    """σ's upper bound and the seeds it asks for (at least :data:`FLOOR`)."""
    bound = stats.sd_upper_bound(sd, n)
    needed = stats.seeds_needed(effect, bound, alpha=alpha, power=power)
    return {"sd": sd, "n": n, "sd_upper": bound, "effect": effect, "alpha": alpha, "power": power,
            "seeds_needed": needed, "seeds": max(FLOOR, math.ceil(needed)) if math.isfinite(needed) else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calibration", type=Path, default=calibration.committed_dir("gpu"))
    p.add_argument("--alpha", type=float, default=ALPHA,
                   help="level the first primary comparison (ARM on coarse labels) is tested at (default %(default)s)")
    p.add_argument("--effect", type=float, default=None,
                   help="mIoU to detect (default: calibration.json's power_target.effect)")
    args = p.parse_args(argv)
    try:
        t, n, sd = pilot(args.calibration)
    except LookupError as exc:
        print(f"gpu_seeds: {exc}")
        return 3
    effect = args.effect
    if effect is None:
        effect = json.loads((args.calibration / calibration.SUMMARY_FILE).read_text())["power_target"]["effect"]
    s = size(sd, n, effect, args.alpha)
    print(f"pilot: T = {t}, {n} ARM − base pairs on coarse labels, paired SD {sd:.3f} mIoU")
    print(f"σ upper 80 % bound: {s['sd_upper']:.3f} mIoU")
    print(f"seeds to detect {effect:g} mIoU at α = {args.alpha:g} with {POWER:.0%} power: {s['seeds_needed']:.2f} "
          f"-> {s['seeds']} (floor {FLOOR})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
