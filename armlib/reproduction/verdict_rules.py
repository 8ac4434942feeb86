"""Every claim's verdict from the per-seed results: distinct comparisons, the primary family's multiplicity
procedure, pilot and confirmation apart, and the claims schema (:data:`CLAIM_COLUMNS`) that ``results/claims.csv``
holds (:mod:`armlib.reproduction.verdicts` writes it). The statistics themselves are :mod:`armlib.reproduction.stats`.

Verdicts, one vocabulary: **reproduced** (significant in the paper's direction, or equivalent within the margin),
**contradicted** (significant in the opposite direction; for equivalence, the whole 95 % interval outside the
margin), **inconclusive** (neither), **not run** (a row is not run at this scale). The primary family (the paper's
central claims, :data:`armlib.reproduction.sections.PRIMARY`) is adjusted across its distinct comparisons: Holm by default
(the pilot), a fixed sequence in the paper's order under a confirmatory plan (:mod:`armlib.reproduction.design`); secondary
claims keep their raw p and are exploratory. Claims that are thresholds, not comparisons, say **holds** / **fails**.

Failed runs (:func:`armlib.runs.is_failed`: diverged, value NaN) are never dropped: they stay in every table, marked,
and take the metric's worst value (:data:`armlib.reproduction.stats.WORST`, mIoU 0) in the same paired test of the same family, so a failure
on the side the paper favours counts against the claim and one on the other side for it. Where the paper itself
printed NaN for a row (Table 2's L1 and entropy rows, ``Claim.diverges``), divergence in at least half of that
row's seeds reproduces it.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace

import pandas as pd
from scipy import stats as sps

from armlib.reproduction.paper import paper_value
from armlib.reproduction.sections import ALPHA, EQUIVALENCE, FIXED_SEQUENCE, HOLM, POWER, PRIMARY, Claim
from armlib.reproduction.stats import (CONTRADICTED, FAILS, HOLDS, INCONCLUSIVE, NOT_RUN, REPRODUCED, WORST,
                                       PairedComparison, benjamini_hochberg, fixed_sequence, graphical, holm, minimal_detectable_effect,
                                       paired_comparison, seeds_needed, tost_p, tost_seeds_needed)
from armlib.runs import is_failed

def _verdict(claim: Claim, c: PairedComparison, p_used: float, alpha: float) -> tuple[str, str]:
    if c.n < 2:
        why = "one paired seed: no variance estimate" if c.n == 1 else "no seed where both rows finished"
        return INCONCLUSIVE, why
    if claim.test == EQUIVALENCE:
        if p_used < alpha:
            return REPRODUCED, f"equivalent within ±{claim.margin:g} (TOST p = {p_used:.3g})"
        outside = c.ci_low > claim.margin or c.ci_high < -claim.margin
        if c.p < alpha and outside:
            return CONTRADICTED, f"95 % CI entirely outside ±{claim.margin:g}"
        return INCONCLUSIVE, f"not shown equivalent within ±{claim.margin:g} (TOST p = {p_used:.3g})"
    if p_used < alpha:
        return (REPRODUCED, "significant, the paper's direction") if c.delta * claim.sign > 0 else \
            (CONTRADICTED, "significant, the opposite direction")
    return INCONCLUSIVE, f"not significant (p = {p_used:.3g}); MDE {c.mde:.2f}"


def _failure_note(claim: Claim, failed_a: int, n_a: int, failed_b: int, n_b: int) -> str:
    """Which side's failed seeds entered the test at the worst value, and whom that counts against (for an
    equivalence claim, a failure on either side: it widens the difference)."""
    parts = []
    for row, k, n, side in ((claim.a, failed_a, n_a, +1), (claim.b, failed_b, n_b, -1)):
        if k:
            against = claim.test == EQUIVALENCE or side * claim.sign > 0
            parts.append(f"{k} of {n} seeds of {row} diverged or learned nothing, taken as {WORST:g} in the "
                         f"paired test ({'against' if against else 'for'} the claim)")
    return "; ".join(parts)



@dataclass
class _Comparison:
    """One distinct comparison (a, b experiments and metric): its claims' first member's rows and statistics."""

    comp: PairedComparison
    p_test: float           # the p its verdict uses before any adjustment (TOST p for an equivalence claim)
    p_tost: float
    primary: bool
    failed: tuple[int, int, int, int]   # failed seeds of a, seeds of a, failed of b, seeds of b
    tables: list[str]
    mean_b: float           # b's mean over its finished seeds: our base
    p_adjusted: float = math.nan
    bonferroni: tuple[float, float] = field(default=(math.nan, math.nan))


def _distinct(seeds: pd.DataFrame, claims: Mapping[str, Sequence[Claim]]) -> tuple[list, dict]:
    """Each claim with the key of its distinct comparison (None when a row did not run), and key → the claims
    sharing it with their rows a, b."""
    entries, distinct = [], {}
    for table, table_claims in claims.items():
        t = seeds[seeds.table == table]
        for claim in table_claims:
            a = t[(t.row == claim.a) & (t.metric == claim.metric)]
            b = t[(t.row == claim.b) & (t.metric == claim.metric)]
            if a.empty or b.empty:
                entries.append((table, claim, None))
                continue
            key = (a.experiment.iloc[0], b.experiment.iloc[0], claim.metric)
            distinct.setdefault(key, []).append((table, claim, a, b))
            entries.append((table, claim, key))
    return entries, distinct


def _primary_keys(distinct: dict, procedure: str, order: Sequence[str]) -> list:
    """The primary family's distinct comparisons, in the fixed sequence's order when that is the procedure."""
    if procedure not in (HOLM, FIXED_SEQUENCE):
        raise ValueError(f"procedure must be {HOLM!r} or {FIXED_SEQUENCE!r}, got {procedure!r}")
    keys = [k for k, members in distinct.items() if any(c.family == PRIMARY for _, c, _, _ in members)]
    if procedure == FIXED_SEQUENCE:
        rank = {claim_id: i for i, claim_id in enumerate(order)}
        unranked = [k for k in keys if not any(c.id in rank for _, c, _, _ in distinct[k])]
        if unranked:
            raise ValueError(f"order must name a claim of every primary comparison; missing {unranked}")
        keys.sort(key=lambda k: min(rank[c.id] for _, c, _, _ in distinct[k] if c.id in rank))
    return keys


def _compare(members: list, primary: bool, level: float, alpha: float, power: float) -> _Comparison:
    """The statistics of one distinct comparison, its MDE at ``level`` (the level it is tested at)."""
    _, claim, a, b = members[0]
    ok_a, ok_b = _tested_values(a), _tested_values(b)
    comp = paired_comparison(ok_a, ok_b, alpha, power)
    comp = replace(comp, mde=minimal_detectable_effect(comp.sd, comp.n, level, power), alpha=level)
    p_tost = tost_p(ok_a, ok_b, claim.margin) if claim.test == EQUIVALENCE else math.nan
    return _Comparison(comp=comp, p_test=p_tost if claim.test == EQUIVALENCE else comp.p, p_tost=p_tost,
                       primary=primary,
                       failed=(int(a.status.map(is_failed).sum()), len(a), int(b.status.map(is_failed).sum()), len(b)),
                       tables=sorted({t for t, _, _, _ in members}), mean_b=float(b[b.status == "ok"].value.mean()))


def _adjust_primary(computed: dict, keys: list, procedure: str, alpha: float) -> None:
    """The primary family's adjusted p (Holm or the fixed sequence) and, beside the raw interval, the Bonferroni
    interval at level 1 − α/m over its m comparisons."""
    for k in keys:
        c = computed[k].comp
        half = sps.t.ppf(1 - alpha / (2 * len(keys)), c.n - 1) * c.sd / math.sqrt(c.n) if c.n >= 2 else math.nan
        computed[k].bonferroni = (c.delta - half, c.delta + half)
    primary_p = [computed[k].p_test for k in keys]
    for k, p in zip(keys, holm(primary_p, alpha) if procedure == HOLM else fixed_sequence(primary_p)):
        computed[k].p_adjusted = p


def _claim_row(base: dict, claim: Claim, key: tuple, info: _Comparison, alpha: float, power: float,
               procedure: str, family_size: int) -> dict:
    """A tested claim's row of the claims schema: its comparison's statistics, verdict and why."""
    comp = info.comp
    p_used = info.p_adjusted if info.primary else info.p_test
    verdict, note = _verdict(claim, comp, p_used, alpha)
    failed_a, n_a = info.failed[:2]
    if claim.diverges and n_a and failed_a * 2 >= n_a:
        verdict, note = REPRODUCED, f"{failed_a} of {n_a} seeds of {claim.a} diverged, as the paper's NaN"
    elif any(info.failed[::2]):
        note = _failure_note(claim, *info.failed) + "; " + note
    if math.isfinite(base["paper_delta"]) and math.isfinite(comp.ci_low):
        inside = comp.ci_low <= base["paper_delta"] <= comp.ci_high
        note += "; the paper's Δ lies " + ("inside" if inside else "outside") + " our 95 % CI" + (
            "" if inside or verdict != REPRODUCED else ": the direction reproduces, the size does not")
    mean_b = info.mean_b
    paper_effect = _paper_effect_at_our_base(base, mean_b)   # what the seeds should be able to detect
    return {**base, **asdict(comp), "p_tost": info.p_tost,
            "p_adjusted": info.p_adjusted, "procedure": procedure if info.primary else "",
            **dict(zip(("ci_bonf_low", "ci_bonf_high"), info.bonferroni)),
            "family_size": family_size if info.primary else math.nan,
            "paper_effect_at_our_base": paper_effect,
            "n_needed": seeds_needed(paper_effect, comp.sd, comp.alpha, power)
            if claim.test != EQUIVALENCE else
            tost_seeds_needed(paper_effect, comp.sd, claim.margin, comp.alpha, power),
            "verdict": verdict, "note": note, "comparison": " vs ".join(key[:2]) + f" [{key[2]}]",
            "tables": " ".join(info.tables), "n_diverged_a": info.failed[0],
            "n_diverged_b": info.failed[2], "ours_base": mean_b,
            "ours_relative_pct": 100 * comp.delta / mean_b if mean_b else math.nan,
            "paper_in_ci": bool(comp.ci_low <= base["paper_delta"] <= comp.ci_high)
            if math.isfinite(comp.ci_low) and math.isfinite(base["paper_delta"]) else None}


def evaluate_claims(seeds: pd.DataFrame, claims: Mapping[str, Sequence[Claim]], alpha: float = ALPHA,
                    power: float = POWER, procedure: str = HOLM, order: Sequence[str] = ()) -> pd.DataFrame:
    """One row per claim, with its distinct comparison's statistics and the verdict.

    Args:
        seeds: per-seed results (:data:`armlib.reproduction.stats.SEED_COLUMNS`) of every table the claims refer
            to; a failed run (:func:`armlib.runs.is_failed`) enters its comparisons at
            :data:`armlib.reproduction.stats.WORST`.
        claims: {table: claims}, e.g. :data:`armlib.reproduction.sections.TABLE_CLAIMS`.
        procedure: the primary family's multiplicity procedure, ``"holm"`` or ``"fixed sequence"``.
        order: for the fixed sequence, claim ids in the order tested (one per distinct primary comparison; the
            comparisons of the other claims follow it).

    Raises:
        ValueError: an unknown ``procedure``, or a fixed sequence whose ``order`` misses a primary comparison.

    A comparison is distinct by (experiment of a, experiment of b, metric): claims of several tables over the
    same runs share one set of statistics (column ``comparison``; ``tables`` lists who shares it), and the Holm
    family counts it once. Claims whose rows did not run get the verdict "not run".
    """
    entries, distinct = _distinct(seeds, claims)
    primary_keys = _primary_keys(distinct, procedure, order)
    # the MDE at the level each comparison is tested at: Holm's strictest step, or α in a fixed sequence
    m = max(1, len(primary_keys)) if procedure == HOLM else 1
    computed = {key: _compare(members, key in primary_keys, alpha / m if key in primary_keys else alpha, alpha,
                              power) for key, members in distinct.items()}
    _adjust_primary(computed, primary_keys, procedure, alpha)
    rows = []
    for table, claim, key in entries:
        # a claim that repeats a primary comparison (the noise sweep's own noise level is Table 2's ARM vs base)
        # is that comparison, so it carries the primary family and its Holm-adjusted p
        family = PRIMARY if key is not None and computed[key].primary else claim.family
        base = {"id": claim.id, "table": table, "text": claim.text, "a": claim.a, "b": claim.b,
                "metric": claim.metric, "family": family, "test": claim.test, "margin": claim.margin,
                **_paper_columns(table, claim)}
        if key is None:
            rows.append({**base, "verdict": NOT_RUN, "note": "a row of this claim is not run at this scale"})
        else:
            rows.append(_claim_row(base, claim, key, computed[key], alpha, power, procedure, len(primary_keys)))
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


PILOT, CONFIRMATORY = "pilot", "confirmatory"


def staged_claims(seeds: pd.DataFrame, claims: Mapping[str, Sequence[Claim]], plan: Mapping | None = None,
                  alpha: float = ALPHA, power: float = POWER, followup: Mapping | None = None) -> pd.DataFrame:
    """Every claim's verdict, pilot and confirmation kept apart (column ``stage``).

    Without a plan: :func:`evaluate_claims` on every seed, stage "". With a confirmatory plan
    (:func:`armlib.reproduction.sections.confirmatory_plan`): the pilot (every seed the plan does not name) as
    :func:`evaluate_claims` gives it, stage "pilot", exploratory whatever its family; and the plan's primary
    comparisons on its confirmatory seeds alone, stage "confirmatory", id ``<claim>@confirmatory``, tested as the
    plan says (its procedure, in its order, at its α). A comparison the plan could not fund says so. Table 6's
    comparisons are tested on the plan's seeds too wherever both their rows have them (:func:`free_power_claims`).

    With a follow-up plan (:func:`armlib.reproduction.sections.followup_plan`) its seeds leave the pilot as well,
    and its comparisons (Table 6's among them) are decided as it says (:func:`followup_claims`), stage
    "follow-up".
    """
    if plan is None:
        return evaluate_claims(seeds, claims, alpha, power).assign(stage="")
    planned = {s for c in plan["comparisons"] for s in c["seeds"]}
    later = {s for c in (followup or {}).get("comparisons", ()) for s in c["seeds"]}
    pilot = evaluate_claims(seeds[~seeds.seed.isin(planned | later)], claims, alpha, power).assign(stage=PILOT)
    stages = [followup_claims(seeds, claims, followup)] if followup else [
        free_power_claims(seeds[seeds.seed.isin(planned)], claims, alpha, power)]
    order = [claim_id for c in plan["comparisons"] for claim_id in c["claims"]]
    mine = {t: [c for c in cs if c.id in order] for t, cs in claims.items()}
    mine = {t: cs for t, cs in mine.items() if cs}
    if not mine:
        return pd.concat([*stages, pilot], ignore_index=True)
    confirm = evaluate_claims(seeds[seeds.seed.isin(planned)], mine, plan["alpha"], plan["power"],
                              procedure=plan["procedure"], order=order)
    rank = {claim_id: k for k, c in enumerate(plan["comparisons"]) for claim_id in c["claims"]}
    # a fixed sequence stops at its first comparison not reproduced, whether tested or not run: every later one
    # stays undecided (evaluate_claims' running maximum covers only the comparisons that ran)
    first_open = min((rank[r.id] for r in confirm.itertuples() if r.verdict != REPRODUCED), default=len(rank))
    verdicts, notes = [], []
    for r in confirm.itertuples():
        c = plan["comparisons"][rank[r.id]]
        planned_note = (f"confirmatory seeds {c['seeds'][0]}–{c['seeds'][-1]}" if c["seeds"] else
                        "no confirmatory seed") + f" (plan: n = {c['n_needed']}"
        if not c["funded"]:
            planned_note += (f", not funded within the budget: power {c['power']:.2f} at its {len(c['seeds'])} seeds"
                             if c["seeds"] else ", not funded within the budget")
        verdict, why = r.verdict, str(r.note)
        if verdict == NOT_RUN:
            why = "no confirmatory seed of this comparison ran"
        elif plan["procedure"] == FIXED_SEQUENCE and rank[r.id] > first_open:
            verdict, why = INCONCLUSIVE, "the fixed sequence stopped at an earlier comparison; " + why
        verdicts.append(verdict)
        notes.append(planned_note + "); " + why)
    confirm = confirm.assign(verdict=verdicts, note=notes, id=confirm.id + "@" + CONFIRMATORY, stage=CONFIRMATORY)
    return pd.concat([confirm, *stages, pilot], ignore_index=True)


FREE_POWER_NOTE = ("free power: the test-time-augmentation mIoU of runs the plan trained for other comparisons "
                   "(secondary, raw p)")


def free_power_claims(seeds: pd.DataFrame, claims: Mapping[str, Sequence[Claim]], alpha: float = ALPHA,
                      power: float = POWER) -> pd.DataFrame:
    """Table 6's comparisons on a plan's seeds (``seeds`` holds those alone) wherever both rows have at least two of
    them: an evaluation of models trained anyway, so they cost no training (issue 31); stage "confirmatory", id
    ``<claim>@confirmatory``, secondary with raw p as the plan did not name them."""
    t6 = seeds[seeds.table == "table6"]
    keep = []
    for c in claims.get("table6", ()):
        a = set(t6[(t6.row == c.a) & (t6.metric == c.metric)].seed)
        b = set(t6[(t6.row == c.b) & (t6.metric == c.metric)].seed)
        if len(a & b) >= 2:
            keep.append(c)
    if not keep:
        return pd.DataFrame(columns=CLAIM_COLUMNS)
    out = evaluate_claims(t6, {"table6": keep}, alpha, power)
    return out.assign(id=out.id + "@" + CONFIRMATORY, stage=CONFIRMATORY, note=FREE_POWER_NOTE + "; " + out.note)


FOLLOWUP = "follow-up"


def _followup_comparison(seeds: pd.DataFrame, by_id: Mapping[str, tuple[str, Claim]], c: Mapping,
                         alpha: float, power: float) -> tuple[pd.DataFrame, str]:
    """One follow-up comparison's claims on its planned seeds (free and new), and its state: "tested",
    "pending" (a planned seed has not run yet) or "not funded"."""
    planned = set(c["free_seeds"]) | set(c["seeds"])
    members: dict[str, list[Claim]] = {}
    for cid in c["claims"]:
        table, claim = by_id[cid]
        members.setdefault(table, []).append(claim)
    rows = evaluate_claims(seeds[seeds.seed.isin(planned)], members, alpha, power)
    if not planned:
        return rows, "not funded"
    table, claim = by_id[c["claim"]]
    have = seeds[(seeds.table == table) & seeds.seed.isin(planned) & (seeds.metric == claim.metric)]
    complete = all(planned <= set(have[have.row == r].seed) for r in (claim.a, claim.b))
    return rows, "tested" if complete else "pending"


def followup_claims(seeds: pd.DataFrame, claims: Mapping[str, Sequence[Claim]], plan: Mapping) -> pd.DataFrame:
    """The follow-up plan's comparisons (:func:`armlib.reproduction.design.make_followup_plan`), decided as it
    fixes: each on its planned seeds alone, once every one of them has run ("not run", pending, before: no interim
    look); the primary family by the graphical procedure over its graph, the secondary by Benjamini–Hochberg at q,
    each family's adjustment made only once none of its comparisons is pending. Stage "follow-up", id
    ``<claim>@follow-up``."""
    alpha, power = plan["alpha"], plan["power"]
    by_id = {c.id: (t, c) for t, cs in claims.items() for c in cs}
    comparisons = [c for c in plan["comparisons"] if all(cid in by_id for cid in c["claims"])]
    results = {c["claim"]: _followup_comparison(seeds, by_id, c, alpha, power) for c in comparisons}
    adjusted: dict[str, float] = {}
    graph = plan["primary"]
    for family, ids in ((PRIMARY, graph["hypotheses"]),
                        ("secondary", [c["claim"] for c in comparisons if c["family"] != PRIMARY])):
        ids = [i for i in ids if i in results]
        if any(results[i][1] == "pending" for i in ids):
            continue
        p = [float(results[i][0].set_index("id").loc[i, "p_tost" if by_id[i][1].test == EQUIVALENCE else "p"])
             if results[i][1] == "tested" else math.nan for i in ids]
        if family == PRIMARY:
            index = [graph["hypotheses"].index(i) for i in ids]
            p_adj = graphical(p, [graph["weights"][k] for k in index],
                              [[graph["transitions"][k][j] for j in index] for k in index], alpha)
        else:
            p_adj = benjamini_hochberg(p, plan["secondary"]["q"])
        adjusted.update(zip(ids, p_adj))
    frames = []
    for c in comparisons:
        rows, state = results[c["claim"]]
        planned = sorted(set(c["free_seeds"]) | set(c["seeds"]))
        seeds_note = (f"planned seeds {planned[0]}–{planned[-1]} ({len(planned)}; "
                      f"{len(c['free_seeds'])} free)" if planned else "no planned seed")
        procedure = plan["primary"]["procedure"] if c["family"] == PRIMARY else plan["secondary"]["procedure"]
        verdicts, notes, p_adj = [], [], []
        for r in rows.itertuples():
            claim = by_id[r.id][1]
            if state == "not funded":
                verdict, why = NOT_RUN, c["note"]
            elif state == "pending" or c["claim"] not in adjusted:
                verdict, why = NOT_RUN, "pending: analysed once every planned seed of its family has run"
            else:
                comp = PairedComparison(**{f: getattr(r, f) for f in PairedComparison.__dataclass_fields__})
                verdict, why = _verdict(claim, comp, adjusted[c["claim"]], alpha)
                if claim.diverges and r.n_diverged_a * 2 >= r.n:
                    verdict, why = REPRODUCED, f"{int(r.n_diverged_a)} of {int(r.n)} seeds of {claim.a} diverged"
            verdicts.append(verdict)
            power_text = "—" if c["power"] is None else f"{c['power']:.2f}"
            notes.append(f"{seeds_note}, plan n = {c['n_needed']}, power {power_text}; {why}")
            p_adj.append(adjusted.get(c["claim"], math.nan))
        frames.append(rows.assign(verdict=verdicts, note=notes, p_adjusted=p_adj, procedure=procedure,
                                  family=c["family"], id=rows.id + "@" + FOLLOWUP, stage=FOLLOWUP))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CLAIM_COLUMNS)


CLAIM_COLUMNS = ("id", "table", "text", "a", "b", "metric", "family", "test", "margin", "n", "delta", "sd",
                 "ci_low", "ci_high", "ci_bonf_low", "ci_bonf_high", "family_size", "ci90_low", "ci90_high",
                 "boot_low", "boot_high", "p", "p_signflip", "p_tost", "p_adjusted", "procedure", "mde",
                 "alpha", "verdict", "note", "paper_delta", "paper_status", "paper_base", "paper_relative_pct",
                 "paper_effect_at_our_base", "n_needed", "ours_base", "ours_relative_pct", "paper_in_ci", "comparison", "tables", "n_diverged_a",
                 "n_diverged_b", "value", "threshold", "seed", "stage")


def _tested_values(rows: pd.DataFrame) -> dict[int, float]:
    """seed → the value a comparison tests: the run's value, or :data:`WORST` for a failed run."""
    return {int(s): WORST if is_failed(st) else float(v) for s, v, st in zip(rows.seed, rows.value, rows.status)}


def _paper_columns(table: str, claim: Claim) -> dict:
    """The paper's Δ, its base and the relative Δ; ``paper_status`` says why a Δ is missing: "diverged" (the
    paper printed NaN for a row) or "not in the paper" (our rows the paper does not have, e.g. the noise sweep)."""
    try:
        a, b = paper_value(table, claim.a, claim.metric), paper_value(table, claim.b, claim.metric)
        status = "diverged" if math.isnan(a - b) else ""
    except KeyError:
        a = b = math.nan
        status = "not in the paper"
    delta = a - b
    return {"paper_delta": delta, "paper_base": b, "paper_status": status,
            "paper_relative_pct": 100 * delta / b if math.isfinite(delta) and b else math.nan}


WORKING_BASE = 50.0   # mIoU: below it the paper's row is a collapsed model, and a Δ relative to it means nothing


def _paper_effect_at_our_base(paper: dict, ours_base: float) -> float:
    """The paper's effect carried to our scale: relative to the paper's base, times ours (ARM on coarse: +2.3 % of
    70.33 → +0.74 at a base of 32.5). Relative to a collapsed base (Table 1's no-detach row, 4.03 mIoU) that
    would multiply the Δ by 17, so there the paper's Δ is taken in points."""
    if not math.isfinite(paper["paper_delta"]):
        return math.nan
    if paper["paper_base"] < WORKING_BASE:
        return paper["paper_delta"]
    return paper["paper_relative_pct"] / 100 * ours_base


def threshold_claim(id: str, table: str, text: str, metric: str, value: float, threshold: str, holds: bool,
                    seed: int | None = None) -> dict:
    """A claim that is a threshold on a measured quantity (a figure's), in the claims schema: holds / fails."""
    return {"id": id if seed is None else f"{id}_s{seed}", "table": table, "text": text, "metric": metric,
            "family": "threshold", "test": "threshold", "value": value, "delta": value, "threshold": threshold,
            "verdict": HOLDS if holds else FAILS, "seed": seed,
            "n": 1, "note": "" if math.isfinite(value) else "not measurable"}


def threshold_claims_frame(rows: Sequence[dict]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=CLAIM_COLUMNS)


def distinct_verdicts(claims: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct comparison (threshold claims: one per id) for the headline count."""
    comparisons = claims[claims.comparison.notna() & (claims.comparison != "")]
    rest = claims[~claims.index.isin(comparisons.index)]
    keys = ["stage", "comparison"] if "stage" in claims else ["comparison"]
    return pd.concat([comparisons.drop_duplicates(keys), rest])


def one_seed_note(n_seeds: int) -> str | None:
    """Why every comparison is inconclusive at one seed (the report prints it)."""
    if n_seeds >= 2:
        return None
    return ("Every comparison ran with one seed, so no verdict can be significant: a paired test needs at least "
            "two seeds to estimate the seed-to-seed spread. Run more seeds (--seeds) to decide the claims.")


__all__ = ["evaluate_claims", "staged_claims", "threshold_claim", "threshold_claims_frame", "distinct_verdicts",
           "one_seed_note", "CLAIM_COLUMNS", "WORKING_BASE", "PILOT", "CONFIRMATORY"]
