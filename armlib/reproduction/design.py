"""The confirmatory plans of a scale: sized from their pilots, written once, committed before any of their seeds
run. This docstring describes the first (``configs/plans/<scale>.json``); the follow-up that decides every other
comparison (``quick_full.json``, :func:`make_followup_plan`) is described in the comments above its constants.

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
                                          SD_CONFIDENCE, SECONDARY, SECTION_KEYS, TABLE_CLAIMS, claim_by_id, claim_rows,
                                          claims_for,
                                          confirmatory_plan, get_scale, plan_hash, planned_seeds, table_rows)

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


# -- the follow-up plan: every comparison (issue 31) -----------------------------------------------------------
#
# Written from the follow-up pilot (seeds 0-4 of every row, trained with the scale's runs) and committed before any
# of its seeds runs. The comparisons the first plan tested on confirmatory seeds (ARM vs base on coarse and on fine
# labels) keep that plan's verdicts; every other distinct comparison is sized here:
#
# * primary (the first plan's three comparisons it could not fund): the Bonferroni-based graphical procedure
#   (Bretz et al. 2009, :func:`armlib.reproduction.stats.graphical`) over :data:`FOLLOWUP_GRAPH`. It is a second
#   confirmatory study with an α of its own: the first plan's fixed sequence stopped before these three, so over
#   the paper's five primary claims the chance of any false rejection is at most 2α across the two plans (each
#   plan's at most α); the report shows which plan decided each verdict;
# * secondary: Benjamini-Hochberg at q = α over every funded secondary comparison (the ablations a reader scans as a
#   list: at most 5 % of the reported effects false in expectation, where Holm over ~30 would size every row at
#   α/30). Comparisons that share a row are positively correlated, the case BH is proven for only in part
#   (one-sided tests under PRDS; Benjamini & Yekutieli 2001); we state it rather than pay BY's factor of ~4;
# * n: seeds for 80 % power at the level a comparison starts at (primary: its weight × α; OHEM, weight 0, at α, the
#   level it has once it is reached; secondary: α/2, BH's level when half the family is rejected), against the
#   paper's effect at our base or, where the paper has none (the noise sweep, the rows it printed NaN for),
#   :data:`SMALLEST_EFFECT`; σ is the pilot's one-sided 80 % upper bound (Browne 1995). Equivalence: TOST power;
# * free power first: a comparison of Table 6 (test-time augmentation, an evaluation of trained models) is tested
#   on every seed the first plan trained for both its rows too, and only the seeds those do not cover are new;
# * above :data:`N_MAX` new seeds a comparison is not funded ("not funded: needs n", with the power N_MAX reaches);
# * new seeds from :data:`FOLLOWUP_FIRST_SEED` (never a seed any comparison used before, never ≥ 100); every
#   comparison is analysed once, at its planned seeds, and before then it is "pending": no interim look.
FOLLOWUP_FIRST_SEED = 19       # the first plan used 5-18, the pilot 0-4; calibration uses 100 and up
N_MAX = 20                     # new seeds at most per comparison
SMALLEST_EFFECT = 1.0          # mIoU: the smallest effect of interest where the paper gives no effect
SECONDARY_SIZING_ALPHA = ALPHA / 2
FOLLOWUP_GRAPH = {
    # Detach vs no detach needs 3 seeds even at 0.2 α (pilot: +63 mIoU), so a small weight costs it nothing and it
    # cannot be starved; once rejected it passes its level to Linear ARM, which is then tested at the full α.
    # OHEM ≈ base (weight 0) is reached only after both are rejected: at n_max it is not funded, and an initial
    # weight there would be level the two fundable comparisons could not use.
    "hypotheses": ["t1_detach", "t1_linear", "t5_coarse_ohem"],
    "weights": [0.2, 0.8, 0.0],
    "transitions": [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.0]],
}
GRAPHICAL, BH = "graphical", "benjamini-hochberg"


def _level(claim_id: str, family: str) -> float:
    if family != PRIMARY:
        return SECONDARY_SIZING_ALPHA
    w = FOLLOWUP_GRAPH["weights"][FOLLOWUP_GRAPH["hypotheses"].index(claim_id)]
    return w * ALPHA if w > 0 else ALPHA


def _size(test: str, effect: float, sd_upper: float, margin, level: float, n_free: int) -> tuple[int | None, int]:
    """(seeds the test needs in all, or None when it cannot be sized; new seeds to fund, capped at N_MAX + 1)."""
    if not (math.isfinite(sd_upper) and math.isfinite(effect)):
        return None, 0
    if test == EQUIVALENCE:
        needed = stats.tost_seeds_needed(effect, sd_upper, margin, level, POWER) if sd_upper > 0 else 2.0
    else:
        needed = stats.seeds_needed(effect, sd_upper, level, POWER) if sd_upper > 0 else 2.0
    if not math.isfinite(needed):
        return None, 0
    n = math.ceil(needed)
    return n, max(0, n - n_free)


def _power(test: str, effect: float, sd: float, n: int, margin, level: float) -> float | None:
    """The test's power at ``n`` seeds; 0 below two seeds, None (JSON null) where the pilot gives no spread."""
    if n < 2:
        return 0.0
    if not (math.isfinite(sd) and math.isfinite(effect)) or sd <= 0:
        return None
    if test == EQUIVALENCE:
        return stats.tost_power(effect, sd, n, margin, level)
    return stats.paired_t_power(effect, sd, n, level)


def followup_comparisons(pilot: pd.DataFrame, first: dict, free: dict[str, list[int]], scale) -> list[dict]:
    """The follow-up's comparisons from the pilot's claims (:func:`armlib.reproduction.verdict_rules.evaluate_claims`
    rows over the pilot seeds), leaving out those the first plan ``first`` tested on seeds of its own; ``free``:
    claim id → the first plan's seeds both rows of that claim trained (Table 6's free power)."""
    decided = {cid for c in first["comparisons"] if c["seeds"] for cid in c["claims"]}
    out = []
    for comparison, rows in pilot[pilot.verdict != stats.NOT_RUN].groupby("comparison", sort=False):
        if decided & set(rows.id):
            continue
        row = rows.iloc[0]
        primary = rows[rows.family == PRIMARY]
        family = PRIMARY if len(primary) else SECONDARY
        lead = primary.iloc[0] if len(primary) else row
        table, claim = claim_by_id(lead.id, scale)
        sd_upper = stats.sd_upper_bound(float(row.sd), int(row.n), SD_CONFIDENCE)
        effect = float(row.paper_effect_at_our_base)
        source = "the paper's effect at our base"
        if not math.isfinite(effect):
            effect, source = SMALLEST_EFFECT, "the smallest effect of interest (the paper gives none)"
        level = _level(lead.id, family)
        n_free = len(free.get(lead.id, []))
        n_needed, new = _size(claim.test, effect, sd_upper, claim.margin, level, n_free)
        funded = n_needed is not None and new <= N_MAX
        n_new = new if funded else 0
        if funded:
            note = ""
        elif n_needed is None:
            note = "not funded: the pilot gives no spread to size it by"
        else:
            note = f"not funded: needs {n_needed} seeds, {new} of them new (n_max {N_MAX})"
        if not funded and n_free:
            note += f"; tested on its {n_free} free seeds"
        out.append({
            "claim": lead.id, "claims": sorted(rows.id), "comparison": comparison, "family": family,
            "text": claim.text, "table": table, "a": claim.a, "b": claim.b, "metric": claim.metric,
            "test": claim.test, "margin": claim.margin, "level": level,
            "pilot": {"seeds": int(row.n), "sd": float(row.sd), "sd_upper": sd_upper},
            "effect": effect, "effect_source": source, "n_needed": n_needed, "free_seeds": free.get(lead.id, []),
            "funded": funded,
            "seeds": list(range(FOLLOWUP_FIRST_SEED, FOLLOWUP_FIRST_SEED + n_new)),
            # at the seeds it is tested at (free and new), and what n_max new seeds would have reached
            "power": _power(claim.test, effect, sd_upper, n_free + n_new, claim.margin, level),
            "power_at_n_max": _power(claim.test, effect, sd_upper, n_free + N_MAX, claim.margin, level),
            "note": note})
    order = {h: i for i, h in enumerate(FOLLOWUP_GRAPH["hypotheses"])}
    out.sort(key=lambda c: (c["family"] != PRIMARY, order.get(c["claim"], 0)))
    for i, c in enumerate(out, 1):
        c["order"] = i
    return out


def make_followup_plan(scale_name: str = "quick-full", results_dir: str | Path | None = None) -> dict:
    """The follow-up plan of a scale with one (:attr:`armlib.reproduction.sections.Scale.followup`) from the pilot
    seeds' per-seed results in ``results_dir`` (default ``reports/<scale>/pilot``: the pilot stage's
    ``*_seeds.csv``, committed; the comments above :data:`FOLLOWUP_FIRST_SEED` say what it fixes and why).

    Raises:
        ValueError: the scale has no follow-up, or a pilot seed is missing from the results.
    """
    scale = get_scale(scale_name)
    if scale.followup is None:
        raise ValueError(f"scale {scale_name!r} has no follow-up plan")
    folder = resolve(results_dir or f"reports/{scale_name}/pilot")
    pilot_seeds = sorted({*scale.seeds, *scale.followup_pilot})
    files = sorted(folder.glob("*_seeds.csv"))
    seeds = pd.concat([read_csv(p) for p in files], ignore_index=True)
    seeds = stats.unify_experiments(seeds[seeds.seed.isin(pilot_seeds)])
    present = set(seeds.table)
    claims = {k: claims_for(k, scale) for k in SECTION_KEYS if k in present}
    pilot = verdict_rules.evaluate_claims(seeds, claims)
    short = pilot[(pilot.verdict != stats.NOT_RUN) & (pilot.n < len(pilot_seeds))]
    if len(short):
        raise ValueError(f"{folder}: the pilot lacks seeds of {sorted(short.id)} (expected seeds {pilot_seeds})")
    first = confirmatory_plan(scale)
    free = {}
    before = dataclasses.replace(scale, followup=None)   # the first plan's seeds alone, whether or not this plan
    for table, cs in claims.items():                     # is written yet: the plan is the same when recomputed
        for c in cs:
            a, b = claim_rows(table, c)
            both = set(planned_seeds(table, a, before)) & set(planned_seeds(table, b, before))
            free[c.id] = sorted(both) if table == "table6" else []
    comparisons = followup_comparisons(pilot, first, free, scale)
    if any(s >= 100 for c in comparisons for s in c["seeds"]):
        raise ValueError("the follow-up would use a calibration seed (100 and up): lower N_MAX")
    return {
        "scale": scale_name, "extends": plan_hash(first), "alpha": ALPHA, "power": POWER,
        "sd_confidence": SD_CONFIDENCE, "equivalence_margin": EQUIVALENCE_MARGIN, "n_max": N_MAX,
        "smallest_effect": SMALLEST_EFFECT, "first_seed": FOLLOWUP_FIRST_SEED,
        "primary": {"procedure": GRAPHICAL, **FOLLOWUP_GRAPH,
                    "reason": "a cheap decisive comparison (detach, 3 seeds) must not wait behind an expensive "
                              "one; the graph passes each rejected hypothesis' level on (Bretz et al. 2009). A "
                              "second study with an alpha of its own: the first plan's sequence stopped before "
                              "these three, so over both plans the familywise error of the five primary claims is "
                              "at most 2 alpha"},
        "secondary": {"procedure": BH, "q": ALPHA, "sizing_alpha": SECONDARY_SIZING_ALPHA,
                      "reason": "a list of ablations: control the expected share of false findings, not the "
                                "chance of any one (Holm over ~30 comparisons)"},
        "interim": "none: each comparison is analysed once, at its planned seeds",
        "pilot": {"folder": str(folder.relative_to(resolve(".")) if folder.is_relative_to(resolve(".")) else folder),
                  "seeds": pilot_seeds,
                  "files": {p.name: _file_hash(p) for p in files}},
        "comparisons": comparisons,
    }


def write_plan(plan: dict, path: Path) -> Path:
    """A plan as strict JSON (no NaN: a reader in any language parses it), written atomically.

    Raises:
        ValueError: a number in the plan is NaN or infinite."""
    atomic_write_text(path, json.dumps(plan, indent=1, allow_nan=False) + "\n")
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Write a scale's confirmatory plan from its pilot "
                                                 "(only before any confirmatory seed has run).")
    parser.add_argument("--scale", default="quick")
    parser.add_argument("--pilot", default=None, help="the pilot's results folder (default reports/<scale>/pilot)")
    parser.add_argument("--followup", action="store_true",
                        help="write the scale's follow-up plan (quick-full) from its pilot instead")
    args = parser.parse_args(argv)
    if args.followup:
        out = PLAN_DIR / get_scale(args.scale).followup
        plan = make_followup_plan(args.scale, args.pilot)
    else:
        out = PLAN_DIR / f"{args.scale}.json"
        plan = make_plan(args.scale, args.pilot)
    print(write_plan(plan, out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
