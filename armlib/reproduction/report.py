"""Render ``<out_dir>/index.html``: one self-contained page (figures inlined), readable offline.

Reads only files under ``<out_dir>``: the notebooks' result files (:mod:`armlib.reproduction.results`: per-seed results,
summaries, meta files, ``figures/<section>*.png``) and the verdicts of every claim, ``results/claims.csv``, which
:func:`armlib.reproduction.verdicts.write` evaluates once from them (``armlib report`` and ``armlib reproduce`` run it first).
When ``armlib calibrate`` wrote ``<out_dir>/calibration/``, a Calibration section says why the scale's T is what
it is (:func:`armlib.reproduction.calibration_files.read_calibration`). It computes no verdict and imports nothing that trains
(an import-linter contract in pyproject.toml). No number is typed into the report by hand.

The page's markup, CSS and prose are the Jinja2 templates in ``armlib/reproduction/templates/`` (``report.html.j2``
and the macros it imports); this module prepares the values they show, as text in plain dicts and lists (cells
formatted by :mod:`armlib.reproduction.report_cells`; the Calibration section by
:mod:`armlib.reproduction.report_calibration`). The templates escape every value (autoescape).
"""
from __future__ import annotations

import math
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined

from armlib.errors import UsageError, check_report_dir, check_writable
from armlib.paths import atomic_write_text, resolve
from armlib.reproduction import report_cells as cells
from armlib.reproduction import stats, verdict_rules, verdicts
from armlib.reproduction.calibration_files import read_calibration
from armlib.reproduction.paper import load_paper_results
from armlib.reproduction.report_calibration import CALIBRATION_FIGURE, calibration_section  # noqa: F401 (tests read it here)
from armlib.reproduction.results import folder_state, read_csv, read_json, read_seed_results, with_pilot

# StrictUndefined: a value the template names and this module forgot fails the render instead of showing blank
TEMPLATES = Environment(loader=PackageLoader("armlib.reproduction", "templates"), autoescape=True,
                        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
PAGE = "report.html.j2"
FOREST_FIGURE = "forest_verdicts"   # figures/<this>.png; no section key is a prefix of it


# --- a section's tables: its claims (results/claims.csv) and its rows' mIoU (results/<key>.csv, <key>_seeds.csv) ---

def _summary_table(df: pd.DataFrame, seeds: pd.DataFrame, planned: set, scale) -> dict:
    """mIoU per row (the scale's: unresolved classes left out), beside the paper's, with the row's seeds; the
    failed and ARM-moved columns only where some row has one."""
    df = df[df.metric.isin(("mIoU", "fine", "coarse", "ade20k"))]
    rows = []
    for r in df.itertuples():
        note = getattr(r, "note", "")
        mine = seeds[(seeds.table == r.table) & (seeds.row == r.row) & (seeds.metric == r.metric)].seed
        rows.append({"label": cells.what_ran(str(r.label), scale),
                     "metric": "mIoU" if r.metric == "mIoU" else f"TTA mIoU, {r.metric}",
                     "paper": "NaN (diverged)" if pd.isna(r.paper) and r.table == "table2" else cells.num(r.paper),
                     "note": note if isinstance(note, str) and note else None,   # a row not run, and why
                     "ours": (None if isinstance(note, str) and note else f"{cells.num(r.mean)} ± {cells.num(r.std)}" if r.n > 1
                              else f"{cells.num(r.mean)} (one seed)"),
                     "seeds": cells.seed_cell(mine, planned), "failed": str(int(r.n_diverged) or ""),
                     "moved": cells.moved(getattr(r, "arm_moved", ""))})
    several = df.metric.nunique() > 1   # Table 6: one TTA mIoU per annotation; elsewhere mIoU alone, said once
    return {"rows": rows, "failed": bool(df.n_diverged.fillna(0).astype(int).any()),
            "moved": any(isinstance(v, str) and bool(v) for v in df.get("arm_moved", [])), "several": several}


def _data_table(table: pd.DataFrame) -> dict:
    """A notebook's own table, its cells as ``DataFrame.to_html(float_format="{:.3f}", na_rep="—")`` wrote them."""
    def cell(x) -> str:
        return "—" if pd.isna(x) else f"{x:.3f}" if isinstance(x, float) else str(x)

    return {"columns": [str(c) for c in table.columns],
            "rows": [[cell(x) for x in row] for row in table.astype(object).itertuples(index=False)]}


def _tested(c: dict) -> bool:
    return c["test"] != "threshold" and c["verdict"] != "not run" and not pd.isna(c["n"]) and c["n"] >= 2


PLANNED_STAGES = (verdict_rules.CONFIRMATORY, verdict_rules.FOLLOWUP)   # stages decided on a plan's own seeds


def _planned_stage(c: dict) -> bool:
    return cells.text(c.get("stage")) in PLANNED_STAGES


def _adjusted(c: dict) -> bool:
    """Whether the claim's verdict reads its family's adjusted p: the primary family's, and the follow-up's
    secondary family (Benjamini-Hochberg), once computed."""
    decided_family = c["family"] == "primary" or cells.text(c.get("stage")) == verdict_rules.FOLLOWUP
    return decided_family and not pd.isna(c.get("p_adjusted"))


def _stage(c: dict) -> str:
    """The claim's family with its stage: "primary, confirmatory", "primary, pilot (exploratory)",
    "secondary, follow-up", …"""
    stage = cells.text(c.get("stage"))
    if stage == verdict_rules.FOLLOWUP:
        return f"{c['family']}, follow-up"
    if c["family"] != "primary":
        return "secondary (exploratory)"
    return {"confirmatory": "primary, confirmatory", "pilot": "primary, pilot (exploratory)"}.get(stage, "primary")


def _paper_delta(c: dict) -> str:
    """The paper's Δ; relative to its base only where that base is a working model (not a collapsed one)."""
    status = cells.text(c.get("paper_status"))
    if pd.isna(c["paper_delta"]):
        return {"diverged": "diverged (NaN)"}.get(status, "— (not in the paper)")
    rel = (f" ({cells.num(c['paper_relative_pct'], 1, True)} %)" if c["paper_base"] >= verdict_rules.WORKING_BASE else "")
    return f"{cells.num(c['paper_delta'], signed=True)}{rel}"


def _tested_row(c: dict, scale) -> dict:
    """A tested claim's statistics: Δ with its 95 % and Bonferroni intervals, raw and adjusted p, MDE, verdict."""
    bonferroni = None if pd.isna(c.get("ci_bonf_low")) else {
        "size": int(c["family_size"]), "low": cells.num(c["ci_bonf_low"], signed=True),
        "high": cells.num(c["ci_bonf_high"], signed=True)}
    relative = (cells.num(c["ours_relative_pct"], 1, True)
                if c["paper_base"] >= verdict_rules.WORKING_BASE and not pd.isna(c.get("ours_relative_pct")) else None)
    adjusted = ({"p": cells.p(c["p_adjusted"]), "procedure": cells.text(c.get("procedure")) or "holm"}
                if _adjusted(c) else None)
    return {"text": cells.what_ran(str(c["text"]), scale), "stage": _stage(c), "paper_delta": _paper_delta(c),
            "shared": c["tables"] if isinstance(c.get("tables"), str) and " " in c["tables"] else None,
            "delta": cells.num(c["delta"], signed=True), "ci_low": cells.num(c["ci_low"], signed=True),
            "ci_high": cells.num(c["ci_high"], signed=True), "n": int(c["n"]), "bonferroni": bonferroni,
            "relative": relative, "adjusted": adjusted,
            "p": f"TOST ±{c['margin']:g}: {cells.p(c['p_tost'])}" if c["test"] == "equivalence" else f"{cells.p(c['p'])} (raw)",
            "mde": cells.num(c["mde"]), "needed": "—" if pd.isna(c.get("n_needed")) else f"{math.ceil(c['n_needed'])}",
            "verdict": cells.word(c["verdict"]), "note": cells.text(c["note"])}


def _claims_tables(df: pd.DataFrame, scale=None) -> dict:
    """The section's claims: the tested ones (two seeds or more), "one seed: no test" and "not run" apart (the
    planned ones not run yet apart from those not run at this scale), then the thresholds."""
    records = df.to_dict("records")
    planned = [c for c in records if c["verdict"] == "not run" and _planned_stage(c)]
    thresholds = [c for c in records if c["test"] == "threshold"]
    return {
        "tested": [_tested_row(c, scale) for c in records if _tested(c)],
        "one_seed": [{"text": cells.what_ran(str(c["text"]), scale), "stage": _stage(c), "paper_delta": _paper_delta(c),
                      "delta": cells.num(c["delta"], signed=True)}
                     for c in records if c["test"] != "threshold" and c["verdict"] != "not run" and not _tested(c)],
        "planned": [{"text": cells.what_ran(str(c["text"]), scale), "stage": _stage(c), "why": _why_not_run(c)}
                    for c in planned],
        "not_run": [cells.what_ran(str(c["text"]), scale) for c in records
                    if c["verdict"] == "not run" and c not in planned],
        "thresholds": [{"text": str(c["text"]), "criterion": str(c["threshold"]), "metric": str(c["metric"]),
                        "value": cells.num(c["value"], 3), "verdict": cells.word(c["verdict"]), "note": cells.text(c["note"])}
                       for c in thresholds],
        "why": any(cells.text(c.get("note")) for c in thresholds)}


def _why_not_run(c: dict) -> str:
    """A planned comparison's reason for having no verdict: the first plan's notes start with it, the follow-up's
    end with it ("pending: …", "not funded: …")."""
    parts = cells.text(c["note"]).split("; ")
    return parts[-1] if cells.text(c.get("stage")) == verdict_rules.FOLLOWUP else parts[0]


def _section_finding(claims: pd.DataFrame) -> str:
    """The section's verdicts as this page computed them, tested comparisons apart from untested ones."""
    records = verdict_rules.distinct_verdicts(claims).to_dict("records")
    tested = [c for c in records if _tested(c)]
    counts = pd.Series([c["verdict"] for c in tested], dtype=object).value_counts()
    parts = [f"{len(tested)} tested comparison{'s' * (len(tested) != 1)}"
             + (" (" + ", ".join(f"{counts[v]} {v}" for v in stats.VERDICTS if v in counts) + ")" if tested else "")]
    one = sum(c["test"] != "threshold" and c["verdict"] != "not run" and not _tested(c) for c in records)
    waiting = sum(c["verdict"] == "not run" and _planned_stage(c) for c in records)
    absent = sum(c["verdict"] == "not run" and not _planned_stage(c) for c in records)
    parts += [f"{one} with one seed (no test)"] * bool(one) + [f"{waiting} planned, not run yet"] * bool(waiting)
    parts += [f"{absent} not run at this scale"] * bool(absent)
    return "; ".join(parts) + "."


def _section(section, out_dir: Path, claims: pd.DataFrame, shown: pd.DataFrame, planned: set, scale, meta: dict,
             title: str | None) -> dict:
    """One section: the paper's claim, the section's claims and its summary (or the notebook's own table), what
    we found and its figures; "not run at this scale" where it has no result file at all."""
    key = section.key
    table = read_csv(out_dir / "results" / f"{key}.csv")
    mine = claims[claims.table == key] if len(claims) else claims
    figures = cells.figures(out_dir / "figures", key)
    summary = data = None
    if table is not None and {"mean", "paper", "n_diverged"} <= set(table.columns):
        # the rows not run at this scale, with the reason, as the notebook wrote them
        not_run = table[table.note.apply(lambda x: isinstance(x, str) and bool(x))]
        rows = stats.summarize(shown[shown.table == key], str(scale.name if scale else ""))
        summary = _summary_table(pd.concat([rows, not_run], ignore_index=True), shown, planned, scale)
    elif table is not None:
        data = _data_table(table)
    found = _section_finding(mine) if len(mine) and (mine.test != "threshold").any() else meta.get("finding")
    return {"key": key, "heading": cells.what_ran(section.heading, scale),
            "title": cells.what_ran(title, scale) if title else None, "claim": section.paper_claim,
            "criteria": section.criteria or None, "empty": table is None and not len(mine) and not figures,
            "claims": _claims_tables(mine, scale) if len(mine) else None, "summary": summary, "data": data,
            "stale_tta": key == "table6" and meta.get("tta_mIoU") != "reported classes",
            "finding": found or None, "figures": figures}


# --- the first screen: the verdicts, the forest plot of every tested comparison, the setup ---

def _result(c: dict) -> str:
    """"Δ +1.49 [+0.02, +2.96], n 5, p 0.19 (holm); paper +1.50 at our base"."""
    adjusted = _adjusted(c)
    p = c["p_adjusted"] if adjusted else c["p_tost"] if c["test"] == "equivalence" else c["p"]
    which = (cells.text(c.get("procedure")) or "holm") if adjusted else "TOST" if c["test"] == "equivalence" else "raw"
    paper = "" if pd.isna(c.get("paper_effect_at_our_base")) else (
        f"; paper {cells.num(c['paper_effect_at_our_base'], signed=True)} at our base")
    return (f"Δ {cells.num(c['delta'], signed=True)} [{cells.num(c['ci_low'], signed=True)}, {cells.num(c['ci_high'], signed=True)}],"
            f" n {int(c['n'])}, p {cells.p(p)} ({which}){paper}")


def _planned(claims: pd.DataFrame, plan: dict, scale) -> dict:
    """The confirmatory plan's comparisons in its order, each with its verdict or why it has none, and its funding."""
    from armlib.reproduction.sections import plan_hash

    confirm = {c["id"].removesuffix("@confirmatory"): c for c in claims.to_dict("records")
               if cells.text(c.get("stage")) == "confirmatory"}
    items = []
    for comparison in plan["comparisons"]:
        c = confirm.get(comparison["claim"])
        if c is None:
            continue
        seeds = comparison["seeds"]
        funded = (f"{len(seeds)} seeds planned ({cells.ranges(seeds)}), power {comparison['power']:.2f}" if seeds
                  else "no seed funded")
        if not comparison["funded"]:
            funded += f"; needs {comparison['n_needed']}"
        items.append({"text": cells.what_ran(str(c["text"]), scale), "verdict": cells.word(c["verdict"]), "funded": funded,
                      "result": _result(c) if _tested(c) else None,
                      "pending": None if _tested(c) else "not run yet" if seeds else "not funded"})
    return {"hash": plan_hash(plan), "procedure": plan["procedure"], "alpha": f"{plan['alpha']:g}",
            "comparisons": items}


def _followup(claims: pd.DataFrame, plan: dict, scale) -> dict:
    """The follow-up plan's comparisons, primary first, in its order: each with its verdict at its final n, or
    why it has none yet ("pending": a planned seed has not run; "not funded" with the seeds it needs)."""
    from armlib.reproduction.sections import plan_hash

    decided = {c["id"].removesuffix("@" + verdict_rules.FOLLOWUP): c for c in claims.to_dict("records")
               if cells.text(c.get("stage")) == verdict_rules.FOLLOWUP}
    families = {"primary": [], "secondary": []}
    for comparison in plan["comparisons"]:
        c = decided.get(comparison["claim"])
        if c is None:
            continue
        seeds, free = comparison["seeds"], comparison["free_seeds"]
        if comparison["funded"]:
            funded = (f"{len(seeds)} new seeds ({cells.ranges(seeds)})" if seeds else "no new seed")
            funded += f" + {len(free)} free" if free else ""
            funded += "" if comparison["power"] is None else f", power {comparison['power']:.2f}"
        else:
            funded = cells.text(comparison["note"])
        pending = None if _tested(c) else "pending" if comparison["funded"] else "not funded"
        families["primary" if comparison["family"] == "primary" else "secondary"].append(
            {"text": cells.what_ran(str(c["text"]), scale), "verdict": cells.word(c["verdict"]), "funded": funded,
             "result": _result(c) if _tested(c) else None, "pending": pending})
    return {"hash": plan_hash(plan), "alpha": f"{plan['alpha']:g}", "q": f"{plan['secondary']['q']:g}",
            "n_max": plan["n_max"], **families}


def _verdict_list(claims: pd.DataFrame, plan: dict | None, scale, followup: dict | None = None) -> dict | None:
    """The verdicts a reviewer reads in one minute: the confirmatory plan's comparisons in its order, the
    follow-up plan's (primary, then secondary), the pilot's primary ones, the tested secondary ones of the pilot,
    then counts of what could not be tested and of the thresholds; None when no claim could be checked."""
    if not len(claims):
        return None
    distinct = verdict_rules.distinct_verdicts(claims).to_dict("records")
    pilot = [c for c in distinct if c["family"] == "primary" and cells.text(c.get("stage")) != "confirmatory"]
    if plan is not None:   # in the plan's order, each named by the claim the plan names it by
        named = {c["id"]: c for c in claims.to_dict("records") if cells.text(c.get("stage")) == "pilot"}
        pilot = [named[k["claim"]] for k in plan["comparisons"] if k["claim"] in named]
    secondary = [c for c in distinct if c["family"] == "secondary" and not _planned_stage(c)]
    thresholds = [c for c in distinct if c["family"] == "threshold"]
    return {"plan": _planned(claims, plan, scale) if plan is not None else None,
            "followup": _followup(claims, followup, scale) if followup is not None else None,
            "pilot": [{"text": cells.what_ran(str(c["text"]), scale), "verdict": cells.word(c["verdict"]),
                       "result": _result(c) if _tested(c) else cells.text(c["note"])} for c in pilot],
            "secondary": [{"text": cells.what_ran(str(c["text"]), scale), "verdict": cells.word(c["verdict"]),
                           "result": _result(c)} for c in secondary if _tested(c)],
            "one_seed": sum(c["verdict"] != "not run" and not _tested(c) for c in secondary),
            "not_run": sum(c["verdict"] == "not run" for c in secondary), "thresholds": len(thresholds),
            "fails": [str(c["text"]) + ("" if pd.isna(c.get("seed")) else f" (seed {int(c['seed'])})")
                      for c in thresholds if c["verdict"] == "fails"]}


STAGE_TAGS = {verdict_rules.CONFIRMATORY: "C", verdict_rules.FOLLOWUP: "F"}   # the forest's labels; else P / S


def _forest(claims: pd.DataFrame, out_dir: Path, plans: list[dict]) -> list[cells.Figure] | None:
    """The forest plot of every tested comparison, each at its final n: primary first (confirmatory, follow-up,
    then the pilot), then secondary (follow-up, then exploratory), each plan's in its order; a comparison a plan
    decided appears once, at the plan's seeds, not again as the pilot's. Drawn into figures/forest_verdicts.png;
    None when no comparison ran with two seeds or more."""
    from armlib.reproduction import plots

    distinct = ([c for c in verdict_rules.distinct_verdicts(claims).to_dict("records") if _tested(c)]
                if len(claims) else [])
    if not distinct:
        return None
    order: dict[str, int] = {}
    for plan in plans:   # a planned comparison is named by the plan's claim and keeps the plan's place
        order.update({c["claim"]: len(order) + i for i, c in enumerate(plan["comparisons"])})
    base_id = lambda c: str(c["id"]).split("@")[0]   # noqa: E731
    named = {(cells.text(c.get("stage")), c["comparison"]): c for c in claims.to_dict("records")
             if _planned_stage(c) and base_id(c) in order}
    distinct = [named.get((cells.text(c.get("stage")), c["comparison"]), c) for c in distinct]
    decided = {c["comparison"] for c in distinct if _planned_stage(c)}
    distinct = [c for c in distinct if _planned_stage(c) or c["comparison"] not in decided]
    stage_rank = {verdict_rules.CONFIRMATORY: 0, verdict_rules.FOLLOWUP: 1}
    distinct.sort(key=lambda c: (c["family"] != "primary", stage_rank.get(cells.text(c.get("stage")), 2),
                                 order.get(base_id(c), len(order))))

    def label(c):
        tag = STAGE_TAGS.get(cells.text(c.get("stage")), "P" if c["family"] == "primary" else "S")
        text = str(c["text"])
        return f"[{tag}] {text if len(text) <= 100 else text[:99] + '…'}"

    columns = ("delta", "ci_low", "ci_high", "ci_bonf_low", "ci_bonf_high", "paper_effect_at_our_base", "margin")
    rows = pd.DataFrame({"label": [label(c) for c in distinct], "verdict": [c["verdict"] for c in distinct],
                         **{k: [float(c.get(k) if c.get(k) is not None else math.nan) for c in distinct]
                            for k in columns}})
    fig = plots.forest(rows.rename(columns={"paper_effect_at_our_base": "paper"}), out_dir, FOREST_FIGURE)
    plots.plt.close(fig)
    return cells.figures(out_dir / "figures", FOREST_FIGURE)


def _row_seeds(seeds: pd.DataFrame, planned: set) -> list[dict]:
    """Each row's seeds, the pilot's and the confirmatory ones apart, rows grouped by their seeds, the largest
    group last (the page calls it "every other row" when there are others); empty without seeds."""
    if not len(seeds):
        return []
    groups: dict[str, list[str]] = {}
    for (table, row), g in seeds.groupby(["table", "row"], sort=False):
        groups.setdefault(cells.seed_cell(sorted(set(g.seed)), planned), []).append(f"{table}: {row}")
    ordered = sorted(groups.items(), key=lambda kv: len(kv[1]))
    return [{"seeds": cell, "rows": rows, "every_other": len(ordered) > 1 and i == len(ordered) - 1}
            for i, (cell, rows) in enumerate(ordered)]


def _model_roles(scales: set[str]) -> str:
    """E.g. "ResNet101 → deeplabv3plus_tiny": the rows keep the paper's labels, this says what stood in."""
    from armlib.reproduction.sections import SCALES

    names = {"r50": "ResNet50", "r101": "ResNet101 / DeepLabV3+", "ocr": "OCR"}
    parts = [f"{names[k]} → {v or 'not run at this scale'}" for s in sorted(scales) if s in SCALES
             for k, v in SCALES[s].models.items()]
    return "; ".join(parts) or "—"


def _facts(metas: dict[str, dict]) -> dict[str, str]:
    """The setup table's rows, from the sections' meta files: scale, data, models, hardware, versions, revision."""
    wall = sum(m.get("wall_time_s", 0.0) for m in metas.values())
    any_meta = next(iter(metas.values()), {})
    versions = any_meta.get("versions", "")
    if isinstance(versions, dict):
        versions = ", ".join(f"{k} {v}" for k, v in versions.items())
    facts = {
        "scale": ", ".join(sorted({str(m.get("scale")) for m in metas.values()})) or "—",
        "data": ", ".join(sorted({str(m.get("data")) for m in metas.values() if m.get("data")})) or "—",
        "setup (base config of the scale)": "; ".join(sorted({", ".join(f"{k} {v}" for k, v in m["setup"].items())
                                                              for m in metas.values() if m.get("setup")})) or "—",
        "models (the paper's role → what ran)": _model_roles({str(m.get("scale")) for m in metas.values()}),
        "hardware": any_meta.get("hardware", platform.processor() or platform.machine()),
        "versions (every package that computes a number)": versions,
        "git revision": ", ".join(sorted({str(m.get("git_revision")) for m in metas.values()})) or "—",
        "training": metas.get("training", {}).get("finding", "—"),
        "wall time (training span + notebooks)": f"{wall / 60:.1f} min",
        "rendered": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    return {k: str(v) for k, v in facts.items()}


def _claims(out_dir: Path) -> pd.DataFrame:
    claims = verdicts.read(out_dir)
    if claims is None and any((out_dir / "results").glob("*_seeds.csv")):
        raise UsageError(f"{out_dir / 'results'} has per-seed results but no {verdicts.CLAIMS_FILE}: run `armlib "
                         "report` (it evaluates the claims first) or armlib.reproduction.verdicts.write")
    return claims if claims is not None else verdict_rules.threshold_claims_frame([])


def render(out_dir: str | os.PathLike = "reports") -> Path:
    """Build ``<out_dir>/index.html`` from the result files and ``results/claims.csv``; return its path.

    On top, before any table: a forest plot of every tested comparison and the verdicts as a list; then the setup
    with each row's seeds (pilot and confirmatory apart), the calibration and the sections. Every table shows the
    scale's mIoU, each experiment with all its seeds wherever it appears (:func:`armlib.reproduction.stats.unify_experiments`).
    With ``<out_dir>/calibration/calibration.json`` (``armlib calibrate``) the page has a Calibration section and
    ``figures/calibration_learning_curve.png`` is drawn; without it the section says the scale was not calibrated.

    Raises:
        UsageError: a calibration file is malformed (:func:`read_calibration`), or there are per-seed results
            but no ``results/claims.csv`` (run :func:`armlib.reproduction.verdicts.write` first); nothing is written then.
    """
    from armlib.reproduction.sections import SCALES, SECTIONS, confirmatory_plan, followup_plan

    out_dir = resolve(out_dir)
    calibration = read_calibration(out_dir)   # first: a malformed calibration file stops before anything is written
    metas = {p.stem.removeprefix("meta_"): read_json(p) for p in sorted((out_dir / "results").glob("meta_*.json"))}
    claims = _claims(out_dir)
    scale = SCALES.get(next((m.get("scale") for m in metas.values() if m.get("scale") in SCALES), ""))
    plan = confirmatory_plan(scale) if scale is not None else None
    followup = followup_plan(scale) if scale is not None else None
    planned = {x for p in (plan, followup) if p for c in p["comparisons"] for x in c["seeds"]}
    seeds = stats.unify_experiments(with_pilot(read_seed_results(out_dir), out_dir))
    shown = seeds[seeds.metric.isin(("mIoU", "fine", "coarse", "ade20k"))] if len(seeds) else seeds
    paper = load_paper_results()
    calibrated = calibration_section(calibration, out_dir)   # draws its figure before the sections read theirs
    sections = [_section(s, out_dir, claims, shown, planned, scale, metas.get(s.key, {}),
                         paper.get(s.key, {}).get("title")) for s in SECTIONS]
    most = int(shown.groupby(["table", "row"]).seed.nunique().max()) if len(shown) else 0
    page = TEMPLATES.get_template(PAGE).render(
        facts=_facts(metas), partial=folder_state(out_dir),
        one_seed=verdict_rules.one_seed_note(most) if most else None, verdicts=_verdict_list(claims, plan, scale, followup),
        forest=_forest(claims, out_dir, [p for p in (plan, followup) if p]), row_seeds=_row_seeds(shown, planned), calibration=calibrated,
        sections=sections)
    index = out_dir / "index.html"
    atomic_write_text(index, page)
    return index


def run(args) -> int:
    """``armlib report``: evaluate every claim (:func:`armlib.reproduction.verdicts.write`), then render the page."""
    folder = check_report_dir(args.out_dir)  # a typo in --out-dir rendered an empty report silently
    check_writable(folder, "--out-dir")   # before anything is computed, not at the last write
    verdicts.write(args.out_dir)
    print(render(args.out_dir))
    partial = folder_state(args.out_dir)
    if partial:   # rendered all the same (a `reproduce --only` report), but said where the user looks
        print(f"armlib report: note: {args.out_dir} is not one whole reproduction: {partial}", file=sys.stderr)
    return 0


def reference_summary(out_dir: str | os.PathLike) -> str:
    """"N runs, X min of training and Y min in all on HARDWARE": the figures a README quotes for a committed
    reference, from its own meta files (``tests/test_report.py`` checks the README quotes them verbatim)."""
    results = resolve(out_dir) / "results"
    metas = [read_json(p) for p in sorted(results.glob("meta_*.json"))]
    training = next((m for m in metas if m.get("key") == "training"), {})
    total = sum(m.get("wall_time_s", 0.0) for m in metas)
    return (f"{training.get('runs', 0)} runs, {training.get('wall_time_s', 0.0) / 60:.1f} min of training and "
            f"{total / 60:.1f} min in all on {training.get('hardware', 'an unrecorded machine')}")
