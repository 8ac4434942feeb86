"""Every claim's verdict, evaluated in one place from the result files: ``results/claims.csv``.

A threshold claim's verdict is :func:`thresholds` of the quantity its section measured, against the criterion the
manifest declares (:class:`armlib.reproduction.sections.Threshold`); the section writes it to ``claims_<key>.csv``.
Comparison claims (:data:`armlib.reproduction.sections.TABLE_CLAIMS`) are evaluated from every section's per-seed file
(``<key>_seeds.csv``) and the committed pilot together, pilot and confirmatory apart under the scale's plan
(:func:`armlib.reproduction.verdict_rules.staged_claims`); threshold claims are read as their sections measured them
(``claims_<key>.csv`` of a section without per-seed results). :func:`write` runs once, after every notebook,
and writes ``claims.csv`` and, for each comparison section, its view ``claims_<key>.csv``; the report and
``armlib compare`` read them. A notebook that runs before the others shows :func:`section_claims`: the same
evaluation over the per-seed files that exist so far (its Holm p can still change when others are added).
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from armlib.reproduction import stats, verdict_rules
from armlib.paths import atomic_write_text, resolve
from armlib.reproduction.results import read_csv, read_json, read_seed_results, results_dir, with_pilot
from armlib.reproduction.sections import (SCALES, SECTIONS, SECTION_KEYS, Scale, claims_for, confirmatory_plan,
                                          followup_plan, get_scale, get_section)

CLAIMS_FILE = "claims.csv"


def evaluate(out_dir: str | Path = "reports") -> pd.DataFrame:
    """Every claim of every section from ``<out_dir>/results`` alone (:data:`armlib.reproduction.verdict_rules.CLAIM_COLUMNS`),
    in report order: comparisons recomputed from the per-seed files, threshold claims as their sections wrote
    them. Writes nothing."""
    folder = results_dir(out_dir)
    seeds = with_pilot(read_seed_results(out_dir), resolve(out_dir))
    present = set(seeds.table.unique()) if len(seeds) else set()
    frames = [_comparisons(seeds, _scale_of(folder))] if present else []
    for s in SECTIONS:
        if s.key in present:
            continue
        thresholds = read_csv(folder / f"claims_{s.key}.csv", ("id", "table", "verdict"))
        if thresholds is not None:
            frames.append(thresholds)
    return pd.concat(frames, ignore_index=True) if frames else verdict_rules.threshold_claims_frame([])


def write(out_dir: str | Path = "reports") -> pd.DataFrame:
    """:func:`evaluate`, written to ``results/claims.csv`` and, per comparison section, ``claims_<key>.csv``
    (its rows of ``claims.csv``); returns the claims."""
    claims = evaluate(out_dir)
    folder = results_dir(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / CLAIMS_FILE, claims.to_csv(index=False))
    for key in read_seed_results(out_dir).table.unique():
        atomic_write_text(folder / f"claims_{key}.csv", view(claims, key).to_csv(index=False))
    return claims


def view(claims: pd.DataFrame, key: str) -> pd.DataFrame:
    """The rows of ``claims`` that belong to section ``key``."""
    return claims[claims.table == key].reset_index(drop=True) if len(claims) else claims


def section_claims(key: str, seeds: pd.DataFrame, scale: str, out_dir: str | Path = "reports") -> pd.DataFrame:
    """Section ``key``'s comparison claims with its fresh per-seed results ``seeds``, over the per-seed files of
    the same scale in ``out_dir`` so far and the committed pilot (all of them by the time :func:`write` runs,
    whose ``claims.csv`` is the final word)."""
    everything = pd.concat([read_seed_results(out_dir, exclude=key, scale=scale), seeds], ignore_index=True)
    return view(_comparisons(with_pilot(everything, resolve(out_dir)), get_scale(scale)), key)


def finding(claims: pd.DataFrame) -> str:
    """One sentence from a section's verdicts, counting each distinct comparison once."""
    if claims is None or not len(claims):
        return "No claim is tested in this section: it describes the data (see the table)."
    distinct = verdict_rules.distinct_verdicts(claims)
    counts = distinct.verdict.value_counts()
    parts = [f"{counts[v]} {v}" for v in stats.VERDICTS if v in counts]
    s = f"{len(distinct)} distinct claim{'s' if len(distinct) != 1 else ''}: " + ", ".join(parts) + "."
    failed = distinct[distinct.verdict.isin([stats.CONTRADICTED, stats.FAILS])].text.tolist()
    if failed:
        s += " Contradicted or failed: " + "; ".join(failed) + "."
    return s


def thresholds(key: str, measured: dict[str, float], *, seed: int | None = None, why: str | None = None) -> list[dict]:
    """The claims-file rows of every threshold claim of section ``key`` (its :class:`armlib.reproduction.sections.Threshold`
    lines in the manifest, in their order), from the quantities its ``measure`` recorded: ``measured`` maps each
    claim's ``quantity`` (and ``reference``) key to a value; a key it lacks counts as not measured (NaN).

    A claim holds or fails by its criterion; one whose ``after`` claim (same seed) does not hold is "fails" or
    "not run" as the manifest says. ``why``: the reason the section could not measure (e.g. its run learned
    nothing); every claim whose quantity is then NaN is "not run" with that note, the others stand.
    ``seed`` names per-seed claims (``id_s<seed>``)."""
    rows: dict[str, dict] = {}
    for t in get_section(key).thresholds:
        value = float(measured.get(t.quantity, math.nan))
        reference = float(measured.get(t.reference, math.nan)) if t.reference else None
        prerequisite = not t.after or rows[t.after]["verdict"] == stats.HOLDS
        row = verdict_rules.threshold_claim(t.id, key, t.text.format(seed=seed), t.metric, value, t.criterion(reference),
                                    prerequisite and t.holds(value, reference), seed=seed)
        if not prerequisite and t.unmet == stats.NOT_RUN:
            row = {**row, "verdict": stats.NOT_RUN, "note": f"{t.after} does not hold: nothing to compare"}
        if why and not math.isfinite(value):
            row = {**row, "verdict": stats.NOT_RUN, "note": why}
        rows[t.id] = row
    return list(rows.values())


def _comparisons(seeds: pd.DataFrame, scale: Scale) -> pd.DataFrame:
    """Every comparison claim of the sections in ``seeds``, pilot and confirmatory apart under the scale's plan
    (:func:`armlib.reproduction.verdict_rules.staged_claims`), each experiment with all its seeds (:func:`armlib.reproduction.stats.unify_experiments`)."""
    present = set(seeds.table.unique())
    return verdict_rules.staged_claims(stats.unify_experiments(seeds),
                                       {k: claims_for(k, scale) for k in SECTION_KEYS if k in present},
                                       confirmatory_plan(scale), followup=followup_plan(scale))


def _scale_of(folder: Path) -> Scale:
    """The scale the meta files record (its noise levels name the noise-sweep claims); quick when none does."""
    recorded = (read_json(p).get("scale") for p in sorted(folder.glob("meta_*.json")))
    return SCALES[next((s for s in recorded if s in SCALES), "quick")]


def read(out_dir: str | Path = "reports") -> pd.DataFrame | None:
    """``results/claims.csv`` as :func:`write` left it; None when there is none."""
    return read_csv(resolve(out_dir) / "results" / CLAIMS_FILE)
