"""The confirmatory plan of a scale: sized from its pilot, written once, committed before any of its seeds run.

The pilot (the quick scale's seeds 0–4) is exploratory: its SDs size the confirmatory seeds, its means decide
nothing. Per primary comparison the plan fixes, before any confirmatory seed runs:

* the multiplicity procedure: a fixed sequence in the paper's order of emphasis (:data:`ORDER`), each comparison
  at the full α until the first not rejected. Why not Holm: the paper ranks its claims (the abstract leads with
  ARM on coarse labels "by a considerable margin", then "consistent improvements" on fine labels), and Holm
  would test that central claim at α/5 at its first step, 21 seeds instead of 14 at the pilot's bound;
* n: the seeds a two-sided paired t-test (TOST within ±1 mIoU for OHEM) needs for 80 % power at α against the
  paper's effect relative to its base, carried to our base (:func:`armlib.reproduction.stats.seeds_needed`), with σ the
  pilot's one-sided 80 % upper confidence bound (Browne 1995, :func:`armlib.reproduction.stats.sd_upper_bound`);
* how the budget is spent: in :data:`ORDER`, a comparison is funded when its n fits in what is left; the first
  that does not fit gets what is left (its power and the n it needs are in the plan) and the sequence stops
  there, since no later comparison can be confirmed unless it is. The order is the paper's, never the pilot's
  means.

The budget is what ``make report`` trains: every row at the scale's seeds, plus the confirmatory seeds; the
pilot's other seeds stay in the committed pilot (``reports/<scale>/pilot/``) and are retrained on request only.
``python -m armlib.reproduction.design`` writes ``configs/plans/<scale>.json``; ``tests/test_design.py`` recomputes it from the
committed pilot, so the plan cannot drift from the numbers it claims to come from.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import tempfile
from pathlib import Path

import pandas as pd

from armlib.reproduction import stats, verdict_rules
from armlib.paths import atomic_write_text, resolve
from armlib.reproduction.results import read_csv
from armlib.reproduction.sections import (ALPHA, EQUIVALENCE, EQUIVALENCE_MARGIN, FIXED_SEQUENCE, PLAN_DIR, POWER, PRIMARY,
                             SD_CONFIDENCE, SECTION_KEYS, TABLE_CLAIMS, claim_by_id, get_scale, table_rows)

# The primary comparisons in the paper's order of emphasis, one claim each: the abstract's two (ARM on coarse,
# then on fine labels), then Table 1's two ablations as Sec. 3 builds them (Linear ARM beats the base model,
# detaching is essential), then Table 5's contrast (OHEM no better than the base model on coarse labels).
ORDER = ("t5_coarse_arm", "t5_fine_arm", "t1_linear", "t1_detach", "t5_coarse_ohem")
FIRST_SEED = 5                 # the pilot is 0–4; calibration uses 100 and up
BUDGET_MIN = 90.0              # minutes `make report` may take from a fresh clone (README)
# Minutes of `make report` that are not training: from a fresh clone it took 72.0 min, 68.2 of them the
# training span (README, measured on the committed reference's machine).
OUTSIDE_TRAINING_MIN = 72.0 - 68.2


def pilot_comparisons(pilot_dir: str | Path) -> pd.DataFrame:
    """The pilot's primary claims (exploratory, Holm as the pilot was reported), one row per claim."""
    seeds = pd.concat([read_csv(p) for p in sorted(resolve(pilot_dir).glob("*_seeds.csv"))], ignore_index=True)
    claims = verdict_rules.evaluate_claims(seeds, {t: TABLE_CLAIMS[t] for t in TABLE_CLAIMS if t in set(seeds.table)})
    return claims[claims.family == PRIMARY]


def run_wall_s(pilot_dir: str | Path) -> float:
    """Wall seconds per run of the scale's own parallel training (``meta_training.json``: span / runs)."""
    meta = json.loads((resolve(pilot_dir) / "meta_training.json").read_text())
    return meta["wall_time_s"] / meta["runs"]


def runs_at_scale_seeds(scale) -> int:
    """Runs ``make report`` trains without any confirmatory seed: every section's rows at the scale's seeds."""
    from armlib.reproduction.experiments import plan_sections

    bare = dataclasses.replace(scale, plan=None, primary_seeds=None)
    with tempfile.TemporaryDirectory() as runs_dir:
        return len(plan_sections(SECTION_KEYS, bare, runs_dir))


def _experiments(claim_ids, scale) -> list[tuple]:
    """The experiments (row specs, hashable) a comparison's claims compare: [a, b]."""
    table, claim = claim_by_id(claim_ids[0])
    rows = table_rows(table, scale)
    return [tuple(sorted(rows[claim.a].items())), tuple(sorted(rows[claim.b].items()))]


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def make_plan(scale_name: str = "quick", pilot_dir: str | Path | None = None) -> dict:
    """The confirmatory plan of a scale from its pilot's files (module docstring: what it fixes and why)."""
    scale = get_scale(scale_name)
    pilot_dir = resolve(pilot_dir or f"reports/{scale_name}/pilot")
    pilot = pilot_comparisons(pilot_dir)
    wall = run_wall_s(pilot_dir)
    affordable = math.floor((BUDGET_MIN - OUTSIDE_TRAINING_MIN) * 60 / wall)
    fixed = runs_at_scale_seeds(scale)
    left = affordable - fixed
    funded: dict[tuple, int] = {}   # experiment → confirmatory seeds bought so far
    comparisons, stopped = [], False
    for i, claim_id in enumerate(ORDER, 1):
        row = pilot[pilot.id == claim_id].iloc[0]
        shared = sorted(pilot[pilot.comparison == row.comparison].id)
        table, claim = claim_by_id(claim_id)
        sd_upper = stats.sd_upper_bound(row.sd, int(row.n), SD_CONFIDENCE)
        effect = row.paper_effect_at_our_base
        if claim.test == EQUIVALENCE:
            needed = stats.tost_seeds_needed(effect, sd_upper, claim.margin, ALPHA, POWER)
        else:
            needed = stats.seeds_needed(effect, sd_upper, ALPHA, POWER)
        n_needed = math.ceil(needed)
        experiments = _experiments([claim_id], scale)

        def cost(n):
            return sum(max(0, n - funded.get(e, 0)) for e in experiments)

        if stopped:
            n = 0
        elif cost(n_needed) <= left:
            n = n_needed
        else:   # the first comparison the budget cannot buy whole: it gets what is left, and the sequence ends
            stopped = True
            n = max((k for k in range(n_needed) if cost(k) <= left), default=0)
            n = n if n >= 2 else 0
        left -= cost(n)
        for e in experiments:
            funded[e] = max(funded.get(e, 0), n)
        if claim.test == EQUIVALENCE:
            power = stats.tost_power(effect, sd_upper, n, claim.margin, ALPHA) if n >= 2 else 0.0
        else:
            power = stats.paired_t_power(effect, sd_upper, n, ALPHA) if n >= 2 else 0.0
        comparisons.append({
            "order": i, "claim": claim_id, "claims": shared, "text": claim.text, "table": table, "a": claim.a,
            "b": claim.b,
            "test": claim.test, "margin": claim.margin, "alpha": ALPHA,
            "pilot": {"seeds": int(row.n), "sd": float(row.sd), "sd_upper": sd_upper},
            "paper_delta": float(row.paper_delta), "paper_base": float(row.paper_base),
            "our_base": float(row.ours_base), "effect": float(effect), "n_needed": n_needed,
            "funded": n == n_needed, "seeds": list(range(FIRST_SEED, FIRST_SEED + n)), "power": power})
    files = sorted(pilot_dir.glob("*_seeds.csv")) + [pilot_dir / "meta_training.json"]
    return {
        "scale": scale_name,
        "procedure": FIXED_SEQUENCE, "alpha": ALPHA, "power": POWER, "sd_confidence": SD_CONFIDENCE,
        "equivalence_margin": EQUIVALENCE_MARGIN,
        "reason": "the paper ranks its claims (abstract: ARM on coarse labels first, then fine labels); a fixed "
                  "sequence tests each at the full alpha until the first not rejected, where Holm would test the "
                  "central claim at alpha/5",
        "pilot": {"folder": str(pilot_dir.relative_to(resolve("."))), "seeds": sorted(scale.primary_seeds or ()),
                  "files": {p.name: _file_hash(p) for p in files}},
        "budget": {"minutes": BUDGET_MIN, "outside_training_min": round(OUTSIDE_TRAINING_MIN, 6),
                   "run_wall_s": wall, "runs_affordable": affordable, "runs_at_scale_seeds": fixed,
                   "confirmatory_runs": affordable - fixed - left},
        "comparisons": comparisons,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Write a scale's confirmatory plan from its pilot "
                                                 "(only before any confirmatory seed has run).")
    parser.add_argument("--scale", default="quick")
    parser.add_argument("--pilot", default=None, help="the pilot's results folder (default reports/<scale>/pilot)")
    args = parser.parse_args(argv)
    out = PLAN_DIR / f"{args.scale}.json"
    atomic_write_text(out, json.dumps(make_plan(args.scale, args.pilot), indent=1) + "\n")
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
