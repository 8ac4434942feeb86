"""Paired comparisons across seeds, sizing a study from a pilot, and the per-seed results tables (scipy.stats and
statsmodels, nothing hand-rolled that a library does). Every claim's verdict is built from these in
:mod:`armlib.reproduction.verdict_rules`.

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

The verdict vocabulary (:data:`VERDICTS`) is defined here, where every layer above can read it.

Sizing a study from a pilot (:func:`sd_upper_bound`, :func:`seeds_needed`, :func:`tost_seeds_needed`): the pilot's
SD is an estimate with few degrees of freedom, so the seeds are sized from its one-sided upper confidence bound
(Browne 1995), not from the point.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from armlib.reproduction.paper import paper_label, paper_value, table_metrics
from armlib.runs import is_failed
from armlib.reproduction.sections import ALPHA, POWER, SD_CONFIDENCE

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


def _multipletests(pvalues: Sequence[float], alpha: float, method: str) -> list[float]:
    """statsmodels ``multipletests`` adjusted p-values over the finite entries; NaN entries stay NaN."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, dtype=float)
    out = np.full(len(p), np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], alpha=alpha, method=method)[1]
    return out.tolist()


def holm(pvalues: Sequence[float], alpha: float = ALPHA) -> list[float]:
    """Holm-adjusted p-values (statsmodels ``multipletests``); NaN entries stay NaN and do not count."""
    return _multipletests(pvalues, alpha, "holm")


def graphical(pvalues: Sequence[float], weights: Sequence[float], transitions: Sequence[Sequence[float]],
              alpha: float = ALPHA) -> list[float]:
    """Adjusted p-values of the Bonferroni-based graphical procedure (Bretz, Maurer, Brannath & Posch 2009,
    Stat. Med. 28:586, Algorithm 1 and its adjusted p-values, Sec. 3): hypothesis i starts with level
    ``weights[i]``·α; when one is rejected its level passes to the others along ``transitions`` (row i: the
    shares it passes, diagonal 0, each row summing to at most 1), and the graph is updated. Controls the
    familywise error at α under any dependence. A hypothesis is rejected when its adjusted p is < α.

    Written here because no maintained Python package implements it (statsmodels has Holm, Bonferroni and the
    FDR procedures; the reference implementation is R's gMCP). Holm is the special case of equal weights and
    transitions 1/(m − 1), the fixed sequence that of weights (1, 0, …) and transitions i → i + 1; the tests
    check both against :func:`holm` and :func:`fixed_sequence`.

    A NaN p (a hypothesis not tested) is never rejected and keeps its level, so the others cannot borrow it.

    Raises:
        ValueError: weights not in [0, 1] or summing above 1, or transitions not square, with a non-zero diagonal,
            negative, or a row summing above 1.
    """
    p = [float(x) for x in pvalues]
    m = len(p)
    w = [float(x) for x in weights]
    g = [[float(x) for x in row] for row in transitions]
    if len(w) != m or any(x < 0 or x > 1 for x in w) or sum(w) > 1 + 1e-12:
        raise ValueError(f"weights must be {m} numbers in [0, 1] summing to at most 1, got {list(weights)}")
    if len(g) != m or any(len(row) != m for row in g) or any(g[i][i] for i in range(m)) or \
            any(x < 0 for row in g for x in row) or any(sum(row) > 1 + 1e-12 for row in g):
        raise ValueError("transitions must be a square matrix of the hypotheses' size, zero on the diagonal, "
                         f"non-negative, each row summing to at most 1, got {transitions}")
    adjusted = [math.nan] * m
    graph = set(range(m))                       # hypotheses not yet rejected (untested ones stay)
    active = [i for i in range(m) if math.isfinite(p[i])]
    running = 0.0
    while active:
        j = min(active, key=lambda i: (p[i] / w[i] if w[i] > 0 else math.inf, i))
        running = max(running, min(1.0, p[j] / w[j] if w[j] > 0 else math.inf))
        adjusted[j] = running
        active.remove(j)
        graph.discard(j)
        # Algorithm 1's update: j's level goes along its edges, and every edge through j is rerouted
        new_w = {i: w[i] + w[j] * g[j][i] for i in graph}
        new_g = {(i, k): (g[i][k] + g[i][j] * g[j][k]) / (1 - g[i][j] * g[j][i])
                 if i != k and g[i][j] * g[j][i] < 1 else 0.0 for i in graph for k in graph}
        for i in graph:
            w[i] = new_w[i]
            for k in graph:
                g[i][k] = new_g[i, k]
    return adjusted


def benjamini_hochberg(pvalues: Sequence[float], q: float = ALPHA) -> list[float]:
    """Benjamini–Hochberg adjusted p-values (statsmodels ``multipletests``, ``fdr_bh``): rejecting those < q keeps
    the expected share of false rejections at most q (independent or positively dependent tests). NaN entries stay
    NaN and do not count."""
    return _multipletests(pvalues, q, "fdr_bh")


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


__all__ = ["PairedComparison", "paired_comparison", "sign_flip_p", "paired_t_power", "minimal_detectable_effect",
           "seeds_needed", "sd_upper_bound", "tost_power", "tost_seeds_needed", "fixed_sequence", "WORST",
           "tost_p", "holm", "seed_results", "summarize", "unify_experiments", "VERDICTS", "SEED_COLUMNS"]
