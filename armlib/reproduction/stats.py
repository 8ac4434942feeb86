"""Paired comparisons across seeds and the verdict of every claim (scipy.stats and statsmodels, nothing hand-rolled
that a library does).

A seed fixes the model's initialisation, the data order and the augmentation identically for every row
(:mod:`armlib.data.loading`, ``tests/test_loading.py``), so two rows' results at the same seed are a pair and the
per-seed difference Δ_s = metric[a]_s − metric[b]_s cancels the seed's shared luck. For each comparison:

* mean Δ, its SD, the 95 % t-interval and the two-sided paired t-test p (``scipy.stats.ttest_rel``: the verdict's
  p), the exact sign-flip p beside it (``scipy.stats.permutation_test``, every one of the 2^n sign patterns), and a
  BCa bootstrap interval where n ≥ 6 (``scipy.stats.bootstrap``; with fewer seeds it cannot be trusted);
* the minimal detectable effect: the |Δ| a paired t-test of this n and SD detects with 80 % power, two-sided, at
  the α the claim is tested at (scipy's noncentral t; :func:`minimal_detectable_effect` says why not statsmodels);
* for a claim that an effect is absent, TOST equivalence within ±margin (``statsmodels`` ``ttost_paired``): at
  an unadjusted α that is the 90 % t-interval lying inside ±margin; a primary claim uses its Holm-adjusted TOST p.

Verdicts, one vocabulary: **reproduced** (significant in the paper's direction, or equivalent within the margin),
**contradicted** (significant in the opposite direction; for equivalence, the whole 95 % interval outside the
margin), **inconclusive** (neither), **not run** (a row is not run at this scale). The primary family (the paper's
central claims, :data:`armlib.reproduction.sections.PRIMARY`) is adjusted across its distinct comparisons: Holm by default
(the pilot), a fixed sequence in the paper's order under a confirmatory plan (:mod:`armlib.reproduction.design`); secondary
claims keep their raw p and are exploratory. Claims that are thresholds, not comparisons, say **holds** / **fails**.

Failed runs (:func:`armlib.runs.is_failed`: diverged, value NaN) are never dropped: they stay in every table, marked,
and take the metric's worst value (:data:`WORST`, mIoU 0) in the same paired test of the same family, so a failure
on the side the paper favours counts against the claim and one on the other side for it. Where the paper itself
printed NaN for a row (Table 2's L1 and entropy rows, ``Claim.diverges``), divergence in at least half of that
row's seeds reproduces it.

Sizing a study from a pilot (:func:`sd_upper_bound`, :func:`seeds_needed`, :func:`tost_seeds_needed`): the pilot's
SD is an estimate with few degrees of freedom, so the seeds are sized from its one-sided upper confidence bound
(Browne 1995), not from the point.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from armlib.reproduction.paper import paper_label, paper_value, table_metrics
from armlib.runs import is_failed
from armlib.reproduction.sections import ALPHA, EQUIVALENCE, FIXED_SEQUENCE, HOLM, POWER, PRIMARY, SD_CONFIDENCE, Claim

REPRODUCED, CONTRADICTED, INCONCLUSIVE, NOT_RUN = "reproduced", "contradicted", "inconclusive", "not run"
HOLDS, FAILS = "holds", "fails"
VERDICTS = (REPRODUCED, CONTRADICTED, INCONCLUSIVE, NOT_RUN, HOLDS, FAILS)
BOOTSTRAP_MIN_N = 6
WORST = 0.0   # the worst value of every compared metric (mIoU, aAcc, mAcc, TTA mIoU; %): a failed run's value
SEED_COLUMNS = ("table", "row", "seed", "metric", "value", "status", "experiment", "arm_moved")


@dataclass(frozen=True)
class PairedComparison:
    """Statistics of Δ_s = a_s − b_s over the n seeds where both rows finished (NaN where n is too small)."""

    n: int
    delta: float            # mean Δ
    sd: float               # SD of Δ (ddof 1)
    ci_low: float           # 95 % t-interval of the mean Δ
    ci_high: float
    ci90_low: float         # 90 % t-interval (the TOST interval)
    ci90_high: float
    boot_low: float         # 95 % BCa bootstrap interval (n ≥ 6)
    boot_high: float
    p: float                # two-sided paired t-test
    p_signflip: float       # exact two-sided sign-flip test of the mean
    mde: float              # minimal detectable |Δ| at ``power``, two-sided, at ``alpha``
    alpha: float


def sign_flip_p(deltas: Sequence[float]) -> float:
    """Exact two-sided sign-flip p of the mean of ``deltas`` (scipy's permutation test over all 2^n patterns)."""
    d = np.asarray(deltas, dtype=float)
    if len(d) == 0:
        return math.nan
    if not np.any(d):
        return 1.0
    res = sps.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=np.inf,
                               alternative="two-sided")
    return float(res.pvalue)


def paired_t_power(effect: float, sd: float, n: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test with n pairs at true mean Δ ``effect`` (SD of Δ ``sd``):
    P(|T| > t_{1−α/2, n−1}) for T noncentral t with n − 1 degrees of freedom and noncentrality effect·√n/sd.

    scipy's ``nct`` returns NaN for large noncentrality at 1–2 degrees of freedom (the few-seed, Holm-adjusted
    case we need), so where it does the power is integrated from the definition, T = (Z + nc)/√(V/df) with
    V ~ χ²_df: P = E_V[Φ(nc − c√(V/df)) + Φ(−nc − c√(V/df))].
    """
    from scipy import integrate

    df, nc = n - 1, abs(effect) * math.sqrt(n) / sd
    crit = sps.t.ppf(1 - alpha / 2, df)
    power = float(sps.nct.sf(crit, df, nc) + sps.nct.cdf(-crit, df, nc))
    if math.isfinite(power):
        return power

    def integrand(v):
        s = crit * math.sqrt(v / df)
        return (sps.norm.cdf(nc - s) + sps.norm.cdf(-nc - s)) * sps.chi2.pdf(v, df)

    return float(integrate.quad(integrand, 0, np.inf, limit=200)[0])


def minimal_detectable_effect(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """|Δ| (units of Δ) that a two-sided paired t-test with n pairs and SD ``sd`` detects with ``power`` at
    ``alpha``. NaN for n < 2.

    Solved with scipy (noncentral t, ``brentq``) rather than statsmodels' ``TTestPower.solve_power``, which does
    not converge at few seeds and Holm-adjusted α: measured with statsmodels 0.15, n = 2 at α = 0.01 returned
    10.0 standard deviations, whose power is 0.18, not 0.8.
    """
    from scipy.optimize import brentq

    if n < 2 or not math.isfinite(sd):
        return math.nan
    if sd == 0:
        return 0.0
    high = sd
    while paired_t_power(high, sd, n, alpha) < power:
        high *= 2
    return float(brentq(lambda d: paired_t_power(d, sd, n, alpha) - power, 0.0, high, xtol=1e-10 * sd))


def seeds_needed(effect: float, sd: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Pairs (fractional; round up) a two-sided paired t-test needs to detect ``effect`` with ``power`` at
    ``alpha`` when the SD of Δ is ``sd``; NaN when there is no effect or no spread to size it by."""
    from scipy.optimize import brentq

    if not (math.isfinite(effect) and math.isfinite(sd)) or effect == 0 or sd <= 0:
        return math.nan
    if paired_t_power(effect, sd, 2, alpha) >= power:
        return 2.0
    high = 4.0
    while paired_t_power(effect, sd, high, alpha) < power:
        high *= 2
    return float(brentq(lambda n: paired_t_power(effect, sd, n, alpha) - power, 2.0, high, xtol=1e-6))


def sd_upper_bound(sd: float, n: int, confidence: float = SD_CONFIDENCE) -> float:
    """One-sided ``confidence`` upper bound of σ from a sample SD ``sd`` of ``n`` values (n − 1 degrees of freedom):
    sd·√((n − 1)/χ²_{1−confidence, n−1}), from (n − 1)s²/σ² ~ χ²_{n−1} (scipy's chi2). Browne (1995) sizes a study
    from the pilot's 80 % bound so that the planned power holds with that probability, not one half. NaN for
    n < 2 or a non-finite ``sd``; ValueError for ``confidence`` outside (0, 1)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if n < 2 or not math.isfinite(sd):
        return math.nan
    return float(sd * math.sqrt((n - 1) / sps.chi2.ppf(1 - confidence, n - 1)))


def tost_power(effect: float, sd: float, n: float, margin: float, alpha: float = ALPHA) -> float:
    """Power of the paired TOST (both one-sided t-tests at ``alpha``, i.e. the (1 − 2α) t-interval inside
    ±``margin``) with n pairs at true mean Δ ``effect`` and SD ``sd``.

    Exact by conditioning on the sample SD S (V = (n − 1)S²/σ² ~ χ²_{n−1}): the test passes when
    |Δ̄| < margin − t_{1−α,n−1}·S/√n, so P = E_V[max(0, Φ((m − ε)√n/σ) − Φ((−m − ε)√n/σ))] with
    m = margin − t·σ√(V/(n−1))/√n (Owen 1965; statsmodels has no TOST power for paired data).
    """
    from scipy import integrate

    if n < 2:
        return 0.0
    df = n - 1
    crit = sps.t.ppf(1 - alpha, df)
    scale = sd / math.sqrt(n)

    def integrand(v):
        m = margin - crit * scale * math.sqrt(v / df)
        if m <= 0:
            return 0.0
        return (sps.norm.cdf((m - effect) / scale) - sps.norm.cdf((-m - effect) / scale)) * sps.chi2.pdf(v, df)

    v_max = df * (margin / (crit * scale)) ** 2   # beyond it the interval is wider than the margin
    return float(integrate.quad(integrand, 0, v_max, limit=200)[0])


def tost_seeds_needed(effect: float, sd: float, margin: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Pairs (fractional; round up) the paired TOST within ±``margin`` needs for ``power`` at true mean Δ ``effect``;
    NaN when |effect| ≥ margin (equivalence then is not the truth) or ``sd`` is not a positive number."""
    from scipy.optimize import brentq

    if not (math.isfinite(effect) and math.isfinite(sd)) or abs(effect) >= margin or sd <= 0:
        return math.nan
    if tost_power(effect, sd, 2, margin, alpha) >= power:
        return 2.0
    high = 4.0
    while tost_power(effect, sd, high, margin, alpha) < power:
        high *= 2
    return float(brentq(lambda n: tost_power(effect, sd, n, margin, alpha) - power, 2.0, high, xtol=1e-6))


def paired_comparison(a: Mapping[int, float], b: Mapping[int, float], alpha: float = ALPHA,
                      power: float = POWER) -> PairedComparison:
    """Paired statistics of a − b over the seeds present and finite in both (seed → value mappings)."""
    seeds = sorted(s for s in set(a) & set(b) if math.isfinite(a[s]) and math.isfinite(b[s]))
    x = np.array([a[s] for s in seeds], dtype=float)
    y = np.array([b[s] for s in seeds], dtype=float)
    d = x - y
    n = len(d)
    nan = math.nan
    if n == 0:
        return PairedComparison(0, nan, nan, nan, nan, nan, nan, nan, nan, nan, nan, nan, alpha)
    delta = float(d.mean())
    if n < 2:
        return PairedComparison(n, delta, nan, nan, nan, nan, nan, nan, nan, nan, nan, nan, alpha)
    sd = float(d.std(ddof=1))
    if sd == 0:   # identical differences: the t-statistic is undefined, the interval a point
        p = 1.0 if delta == 0 else 0.0
        ci, ci90 = (delta, delta), (delta, delta)
    else:
        res = sps.ttest_rel(x, y)
        p = float(res.pvalue)
        ci = tuple(float(v) for v in res.confidence_interval(0.95))
        ci90 = tuple(float(v) for v in res.confidence_interval(0.90))
    boot = (nan, nan)
    if n >= BOOTSTRAP_MIN_N and sd > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # BCa warns on degenerate resamples; the interval is still returned
            res = sps.bootstrap((d,), np.mean, confidence_level=0.95, method="BCa", n_resamples=9999,
                                rng=np.random.default_rng(0))
        boot = (float(res.confidence_interval.low), float(res.confidence_interval.high))
    return PairedComparison(n, delta, sd, *ci, *ci90, *boot, p, sign_flip_p(d),
                            minimal_detectable_effect(sd, n, alpha, power), alpha)


def tost_p(a: Mapping[int, float], b: Mapping[int, float], margin: float) -> float:
    """TOST p of |mean(a − b)| < margin over the paired finite seeds (statsmodels ``ttost_paired``)."""
    from statsmodels.stats.weightstats import ttost_paired

    seeds = sorted(s for s in set(a) & set(b) if math.isfinite(a[s]) and math.isfinite(b[s]))
    if len(seeds) < 2:
        return math.nan
    x = np.array([a[s] for s in seeds], dtype=float)
    y = np.array([b[s] for s in seeds], dtype=float)
    if np.all(x - y == (x - y)[0]):
        return 0.0 if abs((x - y)[0]) < margin else 1.0
    return float(ttost_paired(x, y, -margin, margin)[0])


def fixed_sequence(pvalues: Sequence[float]) -> list[float]:
    """Adjusted p-values of a fixed-sequence test (hypotheses tested in the given order, each at the full α,
    stopping at the first not rejected; controls the familywise error at α): p̃_k = max(p_1, …, p_k). A NaN
    (a comparison that could not be tested) makes it and every later one NaN: the sequence stops there."""
    out, running = [], 0.0
    for p in pvalues:
        running = max(running, p) if math.isfinite(running) and math.isfinite(p) else math.nan
        out.append(running)
    return out


def holm(pvalues: Sequence[float], alpha: float = ALPHA) -> list[float]:
    """Holm-adjusted p-values (statsmodels ``multipletests``); NaN entries stay NaN and do not count."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, dtype=float)
    out = np.full(len(p), np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], alpha=alpha, method="holm")[1]
    return out.tolist()


# -- per-seed results ------------------------------------------------------------------------------------

def seed_results(records: pd.DataFrame, table: str, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Long per-seed results (:data:`SEED_COLUMNS`) from :func:`armlib.reproduction.experiments.collect`'s frame.

    ``records`` has one row per run with columns row, seed, status, experiment and one column per metric
    (or ``experiment_<metric>`` where each metric is its own run, as in Table 6).
    """
    metrics = list(metrics or table_metrics(table))
    rows = []
    for r in records.to_dict("records"):
        for m in metrics:
            if m not in r:
                continue
            rows.append({"table": table, "row": r["row"], "seed": int(r["seed"]), "metric": m,
                         "value": float(r[m]) if r[m] is not None else math.nan,
                         "status": r.get(f"status_{m}", r.get("status", "ok")),
                         "experiment": r.get(f"experiment_{m}", r.get("experiment", "")),
                         "arm_moved": r.get(f"arm_moved_{m}", r.get("arm_moved"))})
    return pd.DataFrame(rows, columns=list(SEED_COLUMNS))


def unify_experiments(seeds: pd.DataFrame) -> pd.DataFrame:
    """Every row gets every seed its experiment ran, whichever table's notebook wrote it: rows of several tables
    that are one experiment (Table 2's "L2 norm" and "input var", the noise sweep's own level and Table 2's ARM)
    then show one set of values and pair on the same seeds. Rows without an experiment id are left as they are."""
    if not len(seeds):
        return seeds
    seeds = seeds.reindex(columns=list(SEED_COLUMNS))
    named = seeds[seeds.experiment.notna() & (seeds.experiment != "")]
    runs = named.drop_duplicates(["experiment", "metric", "seed"])[
        ["experiment", "metric", "seed", "value", "status", "arm_moved"]]
    rows = named[["table", "row", "metric", "experiment"]].drop_duplicates()
    unified = rows.merge(runs, on=["experiment", "metric"])
    rest = seeds[~seeds.index.isin(named.index)]
    out = pd.concat([unified, rest], ignore_index=True)[list(SEED_COLUMNS)]
    return out.sort_values(["table", "row", "metric", "seed"], kind="stable").reset_index(drop=True)


def summarize(seeds: pd.DataFrame, scale: str, skipped: Mapping[str, str] | None = None,
              table: str | None = None) -> pd.DataFrame:
    """Mean ± SD over finished seeds per (row, metric), the diverged seeds counted, beside the paper's value.

    ``skipped`` ({row: reason}, :func:`armlib.reproduction.sections.skipped_rows`) adds the rows not run at this scale with
    the reason in ``note``, so a table never silently loses a row of the paper's.
    """
    out = []
    for (group_table, row, metric), g in seeds.groupby(["table", "row", "metric"], sort=False):
        finished = g[g.status == "ok"]["value"].astype(float)
        finished = finished[np.isfinite(finished)]
        out.append({"table": group_table, "row": row, "label": paper_label(group_table, row), "metric": metric,
                    "paper": _paper_or_nan(group_table, row, metric),
                    "mean": finished.mean() if len(finished) else math.nan,
                    "std": finished.std(ddof=1) if len(finished) > 1 else math.nan,
                    "n": len(g), "n_diverged": int(g.status.map(is_failed).sum()), "scale": scale, "note": "",
                    # ARM rows: in how many seeds ARM's curve left its initialisation (an ARM row whose ARM never
                    # moved is the base model in disguise); empty for rows without a learned curve
                    "arm_moved": _moved(g)})
    for name, reason in (skipped or {}).items():
        row, _, column = name.partition("@")   # Table 6 names a run "method@annotation"
        metrics = [column] if column else list(table_metrics(table))
        for metric in metrics:
            out.append({"table": table, "row": row, "label": paper_label(table, row), "metric": metric,
                        "paper": _paper_or_nan(table, row, metric), "mean": math.nan, "std": math.nan, "n": 0, "n_diverged": 0, "scale": scale,
                        "note": reason, "arm_moved": ""})
    return pd.DataFrame(out, columns=["table", "row", "label", "metric", "paper", "mean", "std", "n", "n_diverged",
                                      "scale", "note", "arm_moved"])


def _paper_or_nan(table: str, row: str, metric: str) -> float:
    try:
        return paper_value(table, row, metric)
    except KeyError:   # a row the paper does not have (the noise sweep, our controls)
        return math.nan


def _moved(group: pd.DataFrame) -> str:
    flags = [bool(v) if not isinstance(v, str) else v == "True" for v in group["arm_moved"]
             if v is not None and not (isinstance(v, float) and math.isnan(v))] if "arm_moved" in group else []
    return f"{sum(flags)}/{len(flags)}" if flags else ""


# -- verdicts --------------------------------------------------------------------------------------------

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


def evaluate_claims(seeds: pd.DataFrame, claims: Mapping[str, Sequence[Claim]], alpha: float = ALPHA,
                    power: float = POWER, procedure: str = HOLM, order: Sequence[str] = ()) -> pd.DataFrame:
    """One row per claim, with its distinct comparison's statistics and the verdict.

    Args:
        seeds: per-seed results (:data:`SEED_COLUMNS`) of every table the claims refer to; a failed run
            (:func:`armlib.runs.is_failed`) enters its comparisons at :data:`WORST`.
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
    if procedure not in (HOLM, FIXED_SEQUENCE):
        raise ValueError(f"procedure must be {HOLM!r} or {FIXED_SEQUENCE!r}, got {procedure!r}")
    primary_keys = [k for k, members in distinct.items() if any(c.family == PRIMARY for _, c, _, _ in members)]
    if procedure == FIXED_SEQUENCE:
        rank = {claim_id: i for i, claim_id in enumerate(order)}
        unranked = [k for k in primary_keys if not any(c.id in rank for _, c, _, _ in distinct[k])]
        if unranked:
            raise ValueError(f"order must name a claim of every primary comparison; missing {unranked}")
        primary_keys.sort(key=lambda k: min(rank[c.id] for _, c, _, _ in distinct[k] if c.id in rank))
    # the MDE at the level each comparison is tested at: Holm's strictest step, or α in a fixed sequence
    m = max(1, len(primary_keys)) if procedure == HOLM else 1
    computed = {}
    for key, members in distinct.items():
        table, claim, a, b = members[0]
        is_primary = key in primary_keys
        level = alpha / m if is_primary else alpha   # MDE at Holm's strictest step for the primary family
        ok_a, ok_b = _tested_values(a), _tested_values(b)
        comp = paired_comparison(ok_a, ok_b, alpha, power)
        comp = PairedComparison(**{**asdict(comp), "mde": minimal_detectable_effect(comp.sd, comp.n, level, power),
                                   "alpha": level})
        p_tost = tost_p(ok_a, ok_b, claim.margin) if claim.test == EQUIVALENCE else math.nan
        computed[key] = {"comp": comp, "p_test": p_tost if claim.test == EQUIVALENCE else comp.p,
                         "p_tost": p_tost, "primary": is_primary,
                         "div": (int(a.status.map(is_failed).sum()), len(a), int(b.status.map(is_failed).sum()),
                                 len(b)),
                         "tables": sorted({t for t, _, _, _ in members}),
                         "means": (float(a[a.status == "ok"].value.mean()), float(b[b.status == "ok"].value.mean()))}
    for k in primary_keys:   # the Bonferroni interval beside the raw one: level 1 − α/m over the m comparisons
        c = computed[k]["comp"]
        half = (sps.t.ppf(1 - alpha / (2 * len(primary_keys)), c.n - 1) * c.sd / math.sqrt(c.n) if c.n >= 2
                else math.nan)
        computed[k]["bonferroni"] = (c.delta - half, c.delta + half)
    primary_p = [computed[k]["p_test"] for k in primary_keys]
    adjusted = holm(primary_p, alpha) if procedure == HOLM else fixed_sequence(primary_p)
    for k, p in zip(primary_keys, adjusted):
        computed[k]["p_adjusted"] = p
    rows = []
    for table, claim, key in entries:
        # a claim that repeats a primary comparison (the noise sweep's own noise level is Table 2's ARM vs base)
        # is that comparison, so it carries the primary family and its Holm-adjusted p
        family = PRIMARY if key is not None and computed[key]["primary"] else claim.family
        base = {"id": claim.id, "table": table, "text": claim.text, "a": claim.a, "b": claim.b,
                "metric": claim.metric, "family": family, "test": claim.test, "margin": claim.margin,
                **_paper_columns(table, claim)}
        if key is None:
            rows.append({**base, "verdict": NOT_RUN, "note": "a row of this claim is not run at this scale"})
            continue
        info = computed[key]
        comp = info["comp"]
        p_adjusted = info.get("p_adjusted", math.nan)
        p_used = p_adjusted if info["primary"] else info["p_test"]
        verdict, note = _verdict(claim, comp, p_used, alpha)
        failed_a, n_a = info["div"][:2]
        if claim.diverges and n_a and failed_a * 2 >= n_a:
            verdict, note = REPRODUCED, f"{failed_a} of {n_a} seeds of {claim.a} diverged, as the paper's NaN"
        elif any(info["div"][::2]):
            note = _failure_note(claim, *info["div"]) + "; " + note
        if math.isfinite(base["paper_delta"]) and math.isfinite(comp.ci_low):
            inside = comp.ci_low <= base["paper_delta"] <= comp.ci_high
            note += "; the paper's Δ lies " + ("inside" if inside else "outside") + " our 95 % CI" + (
                "" if inside or verdict != REPRODUCED else ": the direction reproduces, the size does not")
        mean_b = info["means"][1]
        paper_effect = _paper_effect_at_our_base(base, mean_b)   # what the seeds should be able to detect
        rows.append({**base, **{k: v for k, v in asdict(comp).items()}, "p_tost": info["p_tost"],
                     "p_adjusted": p_adjusted, "procedure": procedure if info["primary"] else "",
                     **dict(zip(("ci_bonf_low", "ci_bonf_high"), info.get("bonferroni", (math.nan, math.nan)))),
                     "family_size": len(primary_keys) if info["primary"] else math.nan,
                     "paper_effect_at_our_base": paper_effect,
                     "n_needed": seeds_needed(paper_effect, comp.sd, comp.alpha, power)
                     if claim.test != EQUIVALENCE else
                     tost_seeds_needed(paper_effect, comp.sd, claim.margin, comp.alpha, power),
                     "verdict": verdict, "note": note, "comparison": " vs ".join(key[:2]) + f" [{key[2]}]",
                     "tables": " ".join(info["tables"]), "n_diverged_a": info["div"][0],
                     "n_diverged_b": info["div"][2], "ours_base": mean_b,
                     "ours_relative_pct": 100 * comp.delta / mean_b if mean_b else math.nan,
                     "paper_in_ci": bool(comp.ci_low <= base["paper_delta"] <= comp.ci_high)
                     if math.isfinite(comp.ci_low) and math.isfinite(base["paper_delta"]) else None})
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


PILOT, CONFIRMATORY = "pilot", "confirmatory"


def staged_claims(seeds: pd.DataFrame, claims: Mapping[str, Sequence[Claim]], plan: Mapping | None = None,
                  alpha: float = ALPHA, power: float = POWER) -> pd.DataFrame:
    """Every claim's verdict, pilot and confirmation kept apart (column ``stage``).

    Without a plan: :func:`evaluate_claims` on every seed, stage "". With a confirmatory plan
    (:func:`armlib.reproduction.sections.confirmatory_plan`): the pilot (every seed the plan does not name) as
    :func:`evaluate_claims` gives it, stage "pilot", exploratory whatever its family; and the plan's primary
    comparisons on its confirmatory seeds alone, stage "confirmatory", id ``<claim>@confirmatory``, tested as the
    plan says (its procedure, in its order, at its α). A comparison the plan could not fund says so.
    """
    if plan is None:
        return evaluate_claims(seeds, claims, alpha, power).assign(stage="")
    planned = {s for c in plan["comparisons"] for s in c["seeds"]}
    pilot = evaluate_claims(seeds[~seeds.seed.isin(planned)], claims, alpha, power).assign(stage=PILOT)
    order = [claim_id for c in plan["comparisons"] for claim_id in c["claims"]]
    mine = {t: [c for c in cs if c.id in order] for t, cs in claims.items()}
    mine = {t: cs for t, cs in mine.items() if cs}
    if not mine:
        return pilot
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
    return pd.concat([confirm, pilot], ignore_index=True)


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


__all__ = ["PairedComparison", "paired_comparison", "sign_flip_p", "paired_t_power", "minimal_detectable_effect",
           "seeds_needed", "sd_upper_bound", "tost_power", "tost_seeds_needed", "fixed_sequence", "WORST",
           "tost_p", "holm", "seed_results", "summarize", "evaluate_claims", "threshold_claim",
           "threshold_claims_frame", "distinct_verdicts", "staged_claims", "unify_experiments", "PILOT",
           "CONFIRMATORY", "one_seed_note", "VERDICTS", "CLAIM_COLUMNS", "SEED_COLUMNS"]
