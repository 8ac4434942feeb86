"""Render ``<out_dir>/index.html``: one self-contained page (figures inlined), readable offline.

Reads only files under ``<out_dir>``: the notebooks' result files (:mod:`armlib.reproduction.results`: per-seed results,
summaries, meta files, ``figures/<section>*.png``) and the verdicts of every claim, ``results/claims.csv``, which
:func:`armlib.reproduction.verdicts.write` evaluates once from them (``armlib report`` and ``armlib reproduce`` run it first).
When ``armlib calibrate`` wrote ``<out_dir>/calibration/``, a Calibration section says why the scale's T is what
it is (:func:`armlib.reproduction.calibration_files.read_calibration`). It computes no verdict and imports nothing that trains
(an import-linter contract in pyproject.toml). No number is typed into the report by hand.
"""
from __future__ import annotations

import base64
import html
import json
import math
import os
import platform
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from armlib.reproduction import stats, verdicts
from armlib.arm import MOVED_THRESHOLD
from armlib.reproduction.calibration_files import (ARM_FILE, CALIBRATION_DIR, CURVE_FILE, SUMMARY_FILE, UNRESOLVED_IOU, Calibration,
                                      cost_column, read_calibration)
from armlib.errors import UsageError, check_report_dir, check_writable
from armlib.reproduction.paper import load_paper_results
from armlib.paths import atomic_write_text, resolve
from armlib.reproduction.results import folder_state, read_csv, read_json, read_seed_results, with_pilot

CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em;max-width:100%}
th,td{border:1px solid #ccc;padding:.25em .5em;overflow-wrap:break-word}th{overflow-wrap:anywhere}
th{background:#f2f2f2}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#070;font-weight:bold}.bad{color:#b00;font-weight:bold}.muted{color:#777}
img{max-width:100%;border:1px solid #eee;margin:.4em 0}nav li{margin:.1em 0}.claim{font-style:italic}
ul.verdicts li,ol.verdicts li{margin:.25em 0}
@media (max-width:800px){table{font-size:.75em}th,td{padding:.15em .25em}body{padding:0 .4em}}
"""



VERDICT_CLASS = {"reproduced": "ok", "holds": "ok", "contradicted": "bad", "fails": "bad"}


def _verdict(verdict) -> str:
    if not isinstance(verdict, str):
        return '<span class="muted">n/a</span>'
    return f'<span class="{VERDICT_CLASS.get(verdict, "muted")}">{html.escape(verdict)}</span>'


def _num(x, digits: int = 2, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _p(x) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}"


def _ranges(seeds) -> str:
    """Seeds as ranges: 0, 5–18."""
    seeds = sorted({int(x) for x in seeds})
    out, i = [], 0
    while i < len(seeds):
        j = i
        while j + 1 < len(seeds) and seeds[j + 1] == seeds[j] + 1:
            j += 1
        out.append(str(seeds[i]) if i == j else f"{seeds[i]}–{seeds[j]}")
        i = j + 1
    return ", ".join(out)


def _seed_cell(seeds, planned: set) -> str:
    """A row's seeds, the pilot's and the plan's confirmatory ones apart."""
    pilot = [x for x in seeds if x not in planned]
    confirm = [x for x in seeds if x in planned]
    parts = ([f"{_ranges(pilot)} (pilot)" if planned else _ranges(pilot)] if pilot else []) + (
        [f"{_ranges(confirm)} (confirmatory)"] if confirm else [])
    return "; ".join(parts)


# The paper's role → what stood in for it at a scale on synthetic data (rows and captions name what ran).
_DATA_ROLES = {"Cityscapes Coarse": "synthetic scenes, coarse labels",
               "Cityscapes Fine": "synthetic scenes, fine labels", "Cityscapes test server": "synthetic val set"}


def _what_ran(text: str, scale) -> str:
    """The paper's label of a row or caption with what ran at ``scale`` and the paper's role beside it:
    "Coarse, ResNet101, ARM" → "Coarse, deeplabv3plus_tiny [paper: ResNet101], ARM" on the quick scale."""
    if scale is None or scale.dataset != "synth":
        return text
    names = {"ResNet101": scale.models.get("r101"), "DeepLabV3+": scale.models.get("r101"),
             "ResNet50": scale.models.get("r50"), "OCR": scale.models.get("ocr")}
    roles = {**_DATA_ROLES, **{k: v or "not run" for k, v in names.items()}}
    pattern = re.compile("|".join(re.escape(k) for k in sorted(roles, key=len, reverse=True)))
    return pattern.sub(lambda m: f"{roles[m.group(0)]} [paper: {m.group(0)}]", text)


def _summary_table(df: pd.DataFrame, seeds: pd.DataFrame, planned: set, scale) -> str:
    """mIoU per row (the scale's: unresolved classes left out), beside the paper's, with the row's seeds; the
    failed and ARM-moved columns only where some row has one."""
    df = df[df.metric.isin(("mIoU", "fine", "coarse", "ade20k"))]
    failed = bool(df.n_diverged.fillna(0).astype(int).any())
    moved = any(isinstance(v, str) and bool(v) for v in df.get("arm_moved", []))
    several = df.metric.nunique() > 1   # Table 6: one TTA mIoU per annotation; elsewhere mIoU alone, said once
    unit = "" if several else " mIoU"
    head = ["row: what ran [the paper's role]"] + ["metric"] * several + [
        f"paper{unit}", f"ours{unit}: mean ± SD over finished seeds", "seeds"]
    head += ["failed"] * failed + ["ARM moved (seeds)"] * moved
    rows = ["<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for r in df.itertuples():
        paper = "NaN (diverged)" if pd.isna(r.paper) and r.table == "table2" else _num(r.paper)
        note = getattr(r, "note", "")
        ours = (f"<span class=muted>{html.escape(str(note))}</span>" if isinstance(note, str) and note
                else f"{_num(r.mean)} ± {_num(r.std)}" if r.n > 1 else f"{_num(r.mean)} (one seed)")
        mine = seeds[(seeds.table == r.table) & (seeds.row == r.row) & (seeds.metric == r.metric)].seed
        metric = "mIoU" if r.metric == "mIoU" else f"TTA mIoU, {r.metric}"
        cells = [html.escape(_what_ran(str(r.label), scale))] + [metric] * several + [
            paper, ours, _seed_cell(mine, planned)]
        cells += [str(int(r.n_diverged) or "")] * failed + [_moved_cell(getattr(r, "arm_moved", ""))] * moved
        rows.append("<tr>" + "".join(f"<td{' class=num' if i > several else ''}>{c}</td>" for i, c in enumerate(cells))
                    + "</tr>")
    return "<table>" + "".join(rows) + "</table>"


def _text(x) -> str:
    return x if isinstance(x, str) else ""


def _moved_cell(value) -> str:
    """"k/n"; red when ARM stayed at its initialisation in some seed (the row is then partly the base model)."""
    if not isinstance(value, str) or not value:
        return ""
    k, n = value.split("/")
    return value if k == n else f'<span class=bad>{value}: ARM did not move in {int(n) - int(k)} seed(s)</span>'


def _tested(c: dict) -> bool:
    return c["test"] != "threshold" and c["verdict"] != "not run" and not pd.isna(c["n"]) and c["n"] >= 2


def _stage(c: dict) -> str:
    """The claim's family with its stage: "primary, confirmatory", "primary, pilot (exploratory)", …"""
    stage = _text(c.get("stage"))
    if c["family"] != "primary":
        return "secondary (exploratory)"
    return {"confirmatory": "primary, confirmatory", "pilot": "primary, pilot (exploratory)"}.get(stage, "primary")


def _paper_delta(c: dict) -> str:
    """The paper's Δ; relative to its base only where that base is a working model (not a collapsed one)."""
    status = _text(c.get("paper_status"))
    if pd.isna(c["paper_delta"]):
        return {"diverged": "diverged (NaN)"}.get(status, "— (not in the paper)")
    rel = (f" ({_num(c['paper_relative_pct'], 1, True)} %)" if c["paper_base"] >= stats.WORKING_BASE else "")
    return f"{_num(c['paper_delta'], signed=True)}{rel}"


def _p_cell(c: dict) -> str:
    if c["test"] == "equivalence":
        p = f"TOST ±{c['margin']:g}: {_p(c['p_tost'])}"
    else:
        p = f"{_p(c['p'])} (raw)"
    if c["family"] == "primary" and not pd.isna(c.get("p_adjusted")):
        p += f"<br>{_p(c['p_adjusted'])} ({html.escape(_text(c.get('procedure')) or 'holm')})"
    return p


def _claims_table(df: pd.DataFrame, scale=None) -> str:
    """The section's claims: the tested ones (two seeds or more) with their statistics, then "one seed: no test"
    and "not run" apart, then the thresholds."""
    records = df.to_dict("records")
    tested = [c for c in records if _tested(c)]
    one_seed = [c for c in records if c["test"] != "threshold" and c["verdict"] != "not run" and not _tested(c)]
    planned = [c for c in records if c["verdict"] == "not run" and _text(c.get("stage")) == "confirmatory"]
    not_run = [c for c in records if c["verdict"] == "not run" and c not in planned]
    thresholds = [c for c in records if c["test"] == "threshold"]
    out = []
    if tested:
        head = ("claim: what ran", "family", "paper Δ (rel. to its base)", "ours Δ [95 % CI], n seeds", "p",
                "MDE at 80 % power; seeds for the paper's Δ at our base", "verdict: why")
        rows = ["<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
        for c in tested:
            ours = (f"{_num(c['delta'], signed=True)}<br>[{_num(c['ci_low'], signed=True)}, "
                    f"{_num(c['ci_high'], signed=True)}]<br>n {int(c['n'])}")
            if not pd.isna(c.get("ci_bonf_low")):
                ours += (f"<br><span class=muted>Bonferroni α/{int(c['family_size'])}:<br>"
                         f"[{_num(c['ci_bonf_low'], signed=True)}, {_num(c['ci_bonf_high'], signed=True)}]</span>")
            if c["paper_base"] >= stats.WORKING_BASE and not pd.isna(c.get("ours_relative_pct")):
                ours += f"<br><span class=muted>{_num(c['ours_relative_pct'], 1, True)} % of our base</span>"
            needed = "—" if pd.isna(c.get("n_needed")) else f"{math.ceil(c['n_needed'])}"
            shared = (f"<br><span class=muted>same runs in {html.escape(str(c['tables']))}</span>"
                      if isinstance(c.get("tables"), str) and " " in c["tables"] else "")
            rows.append(f"<tr><td class=claim>{html.escape(_what_ran(str(c['text']), scale))}{shared}</td>"
                        f"<td>{_stage(c)}</td><td class=num>{_paper_delta(c)}</td><td class=num>{ours}</td>"
                        f"<td class=num>{_p_cell(c)}</td><td class=num>{_num(c['mde'])}; {needed}</td>"
                        f"<td>{_verdict(c['verdict'])}: <span class=muted>{html.escape(_text(c['note']))}</span>"
                        "</td></tr>")
        out.append("<table>" + "".join(rows) + "</table>")
    if one_seed:
        rows = ["<tr><th>claim: what ran</th><th>family</th><th>paper Δ</th><th>ours Δ at the one paired seed</th>"
                "</tr>"]
        for c in one_seed:
            rows.append(f"<tr><td class=claim>{html.escape(_what_ran(str(c['text']), scale))}</td><td>{_stage(c)}</td>"
                        f"<td class=num>{_paper_delta(c)}</td><td class=num>{_num(c['delta'], signed=True)}</td></tr>")
        out.append("<p><b>One seed: no test</b> (a paired test needs two seeds to estimate the spread; these "
                   "differences are single observations, not verdicts):</p><table>" + "".join(rows) + "</table>")
    if planned:
        out.append("<p><b>Confirmatory, not run yet:</b> " + "; ".join(
            f"{html.escape(_what_ran(str(c['text']), scale))} ({html.escape(_text(c['note']).split(';')[0])})"
            for c in planned) + ".</p>")
    if not_run:
        out.append("<p class=muted>Not run at this scale: " + "; ".join(
            html.escape(_what_ran(str(c["text"]), scale)) for c in not_run) + ".</p>")
    if thresholds:
        why = any(_text(c.get("note")) for c in thresholds)   # no column that is empty in every row
        rows = ["<tr><th>claim</th><th>criterion</th><th>measured</th><th>verdict</th>" + "<th>why</th>" * why
                + "</tr>"]
        for c in thresholds:
            rows.append(f"<tr><td class=claim>{html.escape(str(c['text']))}</td>"
                        f"<td>{html.escape(str(c['threshold']))}</td>"
                        f"<td class=num>{html.escape(str(c['metric']))} = {_num(c['value'], 3)}</td>"
                        f"<td>{_verdict(c['verdict'])}</td>"
                        + f"<td class=muted>{html.escape(_text(c['note']))}</td>" * why + "</tr>")
        out.append("<table>" + "".join(rows) + "</table>")
    return "".join(out)


def _section_finding(claims: pd.DataFrame) -> str:
    """The section's verdicts as this page computed them, tested comparisons apart from untested ones."""
    records = stats.distinct_verdicts(claims).to_dict("records")
    tested = [c for c in records if _tested(c)]
    counts = pd.Series([c["verdict"] for c in tested], dtype=object).value_counts()
    parts = [f"{len(tested)} tested comparison{'s' * (len(tested) != 1)}"
             + (" (" + ", ".join(f"{counts[v]} {v}" for v in stats.VERDICTS if v in counts) + ")" if tested else "")]
    one = sum(c["test"] != "threshold" and c["verdict"] != "not run" and not _tested(c) for c in records)
    waiting = sum(c["verdict"] == "not run" and _text(c.get("stage")) == "confirmatory" for c in records)
    absent = sum(c["verdict"] == "not run" and _text(c.get("stage")) != "confirmatory" for c in records)
    parts += [f"{one} with one seed (no test)"] * bool(one) + [f"{waiting} confirmatory not run yet"] * bool(waiting)
    parts += [f"{absent} not run at this scale"] * bool(absent)
    return "; ".join(parts) + "."


def _figures(folder: Path, key: str) -> str:
    out = []
    for png in sorted(folder.glob(f"{key}*.png")):
        data = base64.b64encode(png.read_bytes()).decode()
        out.append(f'<img alt="{html.escape(png.stem)}" src="data:image/png;base64,{data}">')
    return "".join(out)


# --- Calibration: armlib calibrate's files under <out_dir>/calibration/ (armlib.reproduction.calibration_files reads them) ---

CALIBRATION_FIGURE = "calibration_learning_curve"   # plots.calibration_learning_curve saves figures/<this>.png
# (tests/test_calibration_report.py fails if the two names part); no section key is a prefix of it
def _pct(share) -> str:
    return "—" if share is None or (isinstance(share, float) and math.isnan(share)) else f"{100 * share:.1f} %"


def _moved_word(value) -> str:
    """A ``moved`` cell of arm_learns.csv (pandas reads True/False as bool) → yes, or no in red."""
    text = str(value).strip().lower()
    if text in ("true", "1", "1.0"):
        return "yes"
    if text in ("false", "0", "0.0"):
        return "<span class=bad>no</span>"
    return '<span class="muted">—</span>'


def _measured(cal: Calibration) -> str:
    return "mIoU over all classes" if cost_column(cal.curves) == "mIoU_all_classes" else "mIoU"


def _candidates_table(cal: Calibration) -> str:
    summary, chosen = cal.summary, cal.summary["chosen_T"]
    # one calibration seed: its own value; over the classes the cost is measured on, so the columns give the cost
    mean = cal.curves.groupby(["T", "annotation"])[cost_column(cal.curves)].mean()
    measured = _measured(cal)
    rows = [f"<tr><th>T (SGD steps)</th><th>base {measured}, fine labels</th><th>base {measured}, coarse labels</th>"
            "<th>coarse cost (fine − coarse, % of fine)</th><th>ARM moved, coarse labels (calibration seeds)</th>"
            "<th>ARM moved, fine labels</th><th></th></tr>"]
    for t, c in sorted(summary["candidates"].items(), key=lambda kv: int(kv[0])):
        moved = [_moved_cell(m) if re.fullmatch(r"\d+/\d+", m) else f"<span class=muted>{html.escape(m)}</span>"
                 for m in (c["arm_moved"], c.get("arm_moved_fine", "not checked (older rule)"))]   # or "not run"
        mark = "<b>chosen</b>" if chosen is not None and int(t) == chosen else ""
        rows.append(f"<tr><td class=num>{int(t)}</td><td class=num>{_num(mean.get((int(t), 'fine')))}</td>"
                    f"<td class=num>{_num(mean.get((int(t), 'coarse')))}</td>"
                    f"<td class=num>{_pct(c['coarse_cost'])}</td><td class=num>{moved[0]}</td>"
                    f"<td class=num>{moved[1]}</td><td>{mark}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _arms_table(arms: pd.DataFrame) -> str:
    rows = ["<tr><th>T</th><th>labels</th><th>seed</th><th>base mIoU</th><th>ARM mIoU</th>"
            "<th>W(−1), W(0), W(+1) at init</th><th>W(−1), W(0), W(+1) at the end</th><th>shape change</th>"
            f"<th>moved (shape change ≥ {MOVED_THRESHOLD:g})</th><th>moved at step</th>"
            "<th>pull on its shape at init (armlib.arm.shape_pull)</th><th>suppression</th></tr>"]
    if "annotation" not in arms:   # written before the rule checked fine labels: coarse-label rows only
        arms = arms.assign(annotation="coarse")
    for r in arms.sort_values(["T", "annotation", "seed"]).to_dict("records"):
        init = ", ".join(_num(r[c], 3) for c in ("W(-1) init", "W(0) init", "W(+1) init"))
        end = ", ".join(_num(r[c], 3) for c in ("W(-1)", "W(0)", "W(+1)"))
        rows.append(f"<tr><td class=num>{int(r['T'])}</td><td>{html.escape(str(r['annotation']))}</td>"
                    f"<td class=num>{int(r['seed'])}</td>"
                    f"<td class=num>{_num(r['base mIoU'])}</td><td class=num>{_num(r['ARM mIoU'])}</td>"
                    f"<td class=num>{init}</td><td class=num>{end}</td><td class=num>{_num(r['shape change'], 3)}</td>"
                    f"<td>{_moved_word(r['moved'])}</td><td class=num>{_num(r.get('moved at'), 0)}</td>"
                    f"<td class=num>{_num(r.get('shape pull at init'), 4)}</td>"
                    f"<td class=num>{_num(r['suppression'], 3)}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _power(cal: Calibration) -> str:
    summary, chosen = cal.summary, cal.summary["chosen_T"]
    target = summary["power_target"]
    coarse = cal.arms if "annotation" not in cal.arms else cal.arms[cal.arms["annotation"] == "coarse"]
    n = int((coarse["T"] == chosen).sum()) if len(coarse) else 0
    fine_sd = ""
    if summary.get("paired_sd_fine") is not None:
        fine_mde = summary.get("mde_fine_at", {}).get(str(n))
        fine_sd = (f" (on fine labels: {_num(summary['paired_sd_fine'])}"
                   + (f", so {n} seeds detect {_num(fine_mde)} there" if fine_mde is not None else "") + ")")
    needed = target["seeds_needed"]
    needed = ("— (no spread to size it by)" if needed is None or math.isnan(needed)
              else f"{math.ceil(needed)} ({needed:.2f} rounded up)")
    mde = ", ".join(f"n = {k}: {_num(v)}" for k, v in sorted(summary["mde_at"].items(), key=lambda kv: int(kv[0])))
    return (f"<p><b>Seeds for the report</b>, from ARM − base on coarse labels at T = {chosen}, paired by seed over "
            f"{n} calibration seeds (only their spread is used; the mean gain chooses nothing): paired SD "
            f"{_num(summary['paired_sd'])} mIoU pts{fine_sd}. Seeds a two-sided paired t-test needs to detect "
            f"{_num(target['effect'])} mIoU pts at α = {target['alpha']:g} with {100 * target['power']:g} % power: "
            f"<b>{needed}</b>. Minimal detectable effect (mIoU pts, same α and power) at n seeds: {mde}.</p>")


def _calibration_section(cal: Calibration | None, out_dir: Path) -> str:
    head = "<h2 id=calibration>Calibration: how this scale's T was chosen</h2>"
    if cal is None:
        why = (f"{CALIBRATION_DIR}/ holds no {SUMMARY_FILE}" if (out_dir / CALIBRATION_DIR).is_dir()
               else f"no {CALIBRATION_DIR}/ folder")
        return head + f"<p class=muted>This scale was not calibrated ({why}).</p>"
    from armlib.reproduction import plots   # matplotlib only when there is a figure to draw

    summary, chosen = cal.summary, cal.summary["chosen_T"]
    seeds = sorted({int(s) for frame in (cal.curves, cal.arms) if len(frame) for s in frame["seed"]})
    history = summary.get("rule_history")
    intro = (f"<p><code>armlib calibrate</code> {'chose' if chosen is not None else 'checks candidates for'} T on "
             f"calibration seeds {', '.join(map(str, seeds))} "
             "(apart from the reporting seeds, so the scale is not tuned on its own test data) from the base "
             "model's learning curve and from whether ARM's learned weighting curve moves, never from ARM's gain. "
             f"Rule, fixed before any of these runs: <i>{html.escape(str(summary['rule']))}</i>."
             + (f" {html.escape(str(history))}" if history else "") + "</p>")
    parts = [head, intro]
    missing = summary.get("missing_runs", [])
    parts.append(f"<p><b>Chosen T = {chosen}</b></p>" if chosen is not None else
                 "<p class=bad>No T chosen: the calibration is incomplete (below), so this scale's T is not backed "
                 "by it.</p>" if missing else
                 "<p class=bad>No candidate T met the criteria: this scale's T is not backed by the calibration.</p>")
    if missing:
        parts.append(f"<p class=bad>Incomplete: {len(missing)} run(s) the rule needed have no record (the calibration "
                     "was cut off; <code>armlib calibrate --from-records</code> wrote these files from the records "
                     "there were), so no T from the first undecided one up was decided: "
                     f"{html.escape(', '.join(map(str, missing)))}.</p>")
    parts.append(_candidates_table(cal))
    parts.append("<p class=muted>ARM is trained at a T only when the base model's coarse cost there meets the "
                 "criterion, on fine labels only when it moved in every coarse-label seed there, and at no T after "
                 "the chosen one or after one left undecided (\"not run\"); \"cut off\": started, not finished."
                 "</p>")
    unresolved = summary["unresolved_classes"]
    parts.append(f"<p><b>Unresolved classes</b> (IoU below {UNRESOLVED_IOU:g} in every learning-curve run, fine labels "
                 "included): " + (html.escape(", ".join(map(str, unresolved))) if unresolved else "none")
                 + ". Each would add a constant 0 to every mean: a scale lists such classes in its config's "
                 "<code>unresolved_classes</code>, which leaves them out of mIoU; their IoU is still recorded and "
                 "<code>mIoU_all_classes</code> averages every class.</p>")
    if chosen is not None:
        parts.append(_power(cal))
    # The figure follows the page's pattern: plots saves figures/<key>.png and _figures inlines every PNG as
    # base64, so the page stays self-contained and the PNG sits beside the notebooks' figures.
    # the figure draws the quantity the cost is measured on (every class), as the table does
    fig = plots.calibration_learning_curve(cal.curves.assign(mIoU=cal.curves[cost_column(cal.curves)]), chosen,
                                           out_dir)
    plots.plt.close(fig)   # render may run many times in one process (tests, reproduce): no open figures pile up
    parts.append(_figures(out_dir / "figures", CALIBRATION_FIGURE))
    parts.append("<h3>Did ARM learn? Its curve per calibration seed</h3>")
    parts.append(_arms_table(cal.arms) + "<p class=muted>Base and ARM mIoU here leave out the unresolved classes "
                 "above, as the report's mIoU does (the table above averages every class).</p>" if len(cal.arms) else
                 "<p class=muted>ARM was trained at no candidate T (no coarse cost met the criterion).</p>")
    parts.append(f"<p class=muted>From {CALIBRATION_DIR}/{SUMMARY_FILE}, {CURVE_FILE} and {ARM_FILE}.</p>")
    return "\n".join(parts)


def _model_roles(scales: set[str]) -> str:
    """E.g. "ResNet101 → deeplabv3plus_tiny": the rows keep the paper's labels, this says what stood in."""
    from armlib.reproduction.sections import SCALES

    names = {"r50": "ResNet50", "r101": "ResNet101 / DeepLabV3+", "ocr": "OCR"}
    parts = [f"{names[k]} → {v or 'not run at this scale'}" for s in sorted(scales) if s in SCALES
             for k, v in SCALES[s].models.items()]
    return "; ".join(parts) or "—"


def _claims(out_dir: Path) -> pd.DataFrame:
    claims = verdicts.read(out_dir)
    if claims is None and any((out_dir / "results").glob("*_seeds.csv")):
        raise UsageError(f"{out_dir / 'results'} has per-seed results but no {verdicts.CLAIMS_FILE}: run `armlib "
                         "report` (it evaluates the claims first) or armlib.reproduction.verdicts.write")
    return claims if claims is not None else stats.threshold_claims_frame([])


def reference_summary(out_dir: str | os.PathLike) -> str:
    """"N runs, X min of training and Y min in all on HARDWARE": the figures a README quotes for a committed
    reference, from its own meta files (``tests/test_report.py`` checks the README quotes them verbatim)."""
    results = resolve(out_dir) / "results"
    metas = [read_json(p) for p in sorted(results.glob("meta_*.json"))]
    training = next((m for m in metas if m.get("key") == "training"), {})
    total = sum(m.get("wall_time_s", 0.0) for m in metas)
    return (f"{training.get('runs', 0)} runs, {training.get('wall_time_s', 0.0) / 60:.1f} min of training and "
            f"{total / 60:.1f} min in all on {training.get('hardware', 'an unrecorded machine')}")


def _short(c: dict, scale) -> str:
    return html.escape(_what_ran(str(c["text"]), scale))


def _result(c: dict) -> str:
    """"Δ +1.49 [+0.02, +2.96], n 5, p 0.19 (holm); paper +1.50 at our base"."""
    primary = c["family"] == "primary" and not pd.isna(c.get("p_adjusted"))
    p = c["p_adjusted"] if primary else c["p_tost"] if c["test"] == "equivalence" else c["p"]
    which = (_text(c.get("procedure")) or "holm") if primary else "TOST" if c["test"] == "equivalence" else "raw"
    paper = "" if pd.isna(c.get("paper_effect_at_our_base")) else (
        f"; paper {_num(c['paper_effect_at_our_base'], signed=True)} at our base")
    return (f"Δ {_num(c['delta'], signed=True)} [{_num(c['ci_low'], signed=True)}, {_num(c['ci_high'], signed=True)}],"
            f" n {int(c['n'])}, p {_p(p)} ({which}){paper}")


def _verdict_list(claims: pd.DataFrame, plan: dict | None, scale) -> str:
    """The verdicts a reviewer reads in one minute: the confirmatory plan's comparisons in its order, the pilot's
    primary ones, the tested secondary ones, then counts of what could not be tested and of the thresholds."""
    from armlib.reproduction.sections import plan_hash

    if not len(claims):
        return "<p>No claim could be checked.</p>"
    distinct = stats.distinct_verdicts(claims).to_dict("records")
    out = []
    if plan is not None:
        confirm = {c["id"].removesuffix("@confirmatory"): c for c in claims.to_dict("records")
                   if _text(c.get("stage")) == "confirmatory"}
        items = []
        for comparison in plan["comparisons"]:
            c = confirm.get(comparison["claim"])
            if c is None:
                continue
            seeds = comparison["seeds"]
            funded = (f"{len(seeds)} seeds planned ({_ranges(seeds)}), power {comparison['power']:.2f}" if seeds
                      else "no seed funded")
            if not comparison["funded"]:
                funded += f"; needs {comparison['n_needed']}"
            result = (f"{_verdict(c['verdict'])} {_result(c)}" if _tested(c) else
                      "<b>not run yet</b>" if seeds else "<b>not funded</b>")
            items.append(f"<li>{_short(c, scale)} — {result} <span class=muted>({funded})</span></li>")
        out.append(f"<h3>Confirmatory: plan {plan_hash(plan)}, a {html.escape(plan['procedure'])} in the paper's "
                   f"order at α = {plan['alpha']:g} each</h3><ol class=verdicts>" + "".join(items) + "</ol>")
    pilot = [c for c in distinct if c["family"] == "primary" and _text(c.get("stage")) != "confirmatory"]
    if plan is not None:   # in the plan's order, each named by the claim the plan names it by
        named = {c["id"]: c for c in claims.to_dict("records") if _text(c.get("stage")) == "pilot"}
        pilot = [named[k["claim"]] for k in plan["comparisons"] if k["claim"] in named]
    label = "Pilot, primary (exploratory, Holm-adjusted)" if plan is not None else "Primary (Holm-adjusted)"
    out.append(f"<h3>{label}</h3><ul class=verdicts>" + "".join(
        f"<li>{_short(c, scale)} — {_verdict(c['verdict'])} "
        + (_result(c) if _tested(c) else html.escape(_text(c["note"]))) + "</li>" for c in pilot) + "</ul>")
    secondary = [c for c in distinct if c["family"] == "secondary"]
    tested = [c for c in secondary if _tested(c)]
    if tested:
        out.append("<h3>Secondary, tested (exploratory, raw p)</h3><ul class=verdicts>" + "".join(
            f"<li>{_short(c, scale)} — {_verdict(c['verdict'])} {_result(c)}</li>" for c in tested) + "</ul>")
    one = sum(c["verdict"] != "not run" and not _tested(c) for c in secondary)
    none = sum(c["verdict"] == "not run" for c in secondary)
    thresholds = [c for c in distinct if c["family"] == "threshold"]
    fails = [html.escape(str(c["text"])) + ("" if pd.isna(c.get("seed")) else f" (seed {int(c['seed'])})")
             for c in thresholds if c["verdict"] == "fails"]
    out.append(f"<p>Not tested: {one} secondary comparisons ran one seed (<b>one seed: no test</b>), {none} were "
               f"not run at this scale. Thresholds: {len(thresholds) - len(fails)} of {len(thresholds)} hold"
               + ("; fail: " + "; ".join(fails) if fails else "") + ".</p>")
    return "".join(out)


FOREST_FIGURE = "forest_verdicts"   # figures/<this>.png; no section key is a prefix of it


def _forest(claims: pd.DataFrame, out_dir: Path, plan: dict | None) -> str:
    """The forest plot of every tested comparison (primary first: confirmatory, then the pilot), inlined."""
    from armlib.reproduction import plots

    distinct = [c for c in stats.distinct_verdicts(claims).to_dict("records") if _tested(c)] if len(claims) else []
    if not distinct:
        return "<p class=muted>No comparison ran with two seeds or more: nothing to plot.</p>"
    if plan is not None:   # a planned comparison is named by the plan's claim and keeps the plan's place
        order = {c["claim"]: i for i, c in enumerate(plan["comparisons"])}
        named = {(_text(c.get("stage")), c["comparison"]): c for c in claims.to_dict("records")
                 if c["id"].removesuffix("@confirmatory") in order}
        distinct = [named.get((_text(c.get("stage")), c["comparison"]), c) for c in distinct]
    else:
        order = {}
    distinct.sort(key=lambda c: (c["family"] != "primary", _text(c.get("stage")) != "confirmatory",
                                 order.get(c["id"].removesuffix("@confirmatory"), len(order))))

    def label(c):
        tag = ({"confirmatory": "C"}.get(_text(c.get("stage")), "P") if c["family"] == "primary" else "S")
        text = str(c["text"])
        return f"[{tag}] {text if len(text) <= 100 else text[:99] + '…'}"

    columns = ("delta", "ci_low", "ci_high", "ci_bonf_low", "ci_bonf_high", "paper_effect_at_our_base", "margin")
    rows = pd.DataFrame({"label": [label(c) for c in distinct], "verdict": [c["verdict"] for c in distinct],
                         **{k: [float(c.get(k) if c.get(k) is not None else math.nan) for c in distinct]
                            for k in columns}})
    fig = plots.forest(rows.rename(columns={"paper_effect_at_our_base": "paper"}), out_dir, FOREST_FIGURE)
    plots.plt.close(fig)
    return (_figures(out_dir / "figures", FOREST_FIGURE) + "<p class=muted>[C] primary, confirmatory; [P] primary, "
            "pilot (exploratory); [S] secondary (exploratory). Green: reproduced, red: contradicted, grey: "
            "inconclusive; blue band: an equivalence claim's ±margin. Δ is a − b of the claim as the paper states it "
            "(for “worse than” claims the paper expects it below 0).</p>")


def _row_seeds(seeds: pd.DataFrame, planned: set) -> str:
    """Each row's seeds, the pilot's and the confirmatory ones apart, rows grouped by their seeds."""
    if not len(seeds):
        return "—"
    groups: dict[str, list[str]] = {}
    for (table, row), g in seeds.groupby(["table", "row"], sort=False):
        groups.setdefault(_seed_cell(sorted(set(g.seed)), planned), []).append(f"{table}: {row}")
    ordered = sorted(groups.items(), key=lambda kv: len(kv[1]))
    parts = [f"<b>{html.escape(cell)}</b>: {html.escape(', '.join(rows))}" for cell, rows in ordered[:-1]]
    cell, rows = ordered[-1]
    parts.append(f"<b>{html.escape(cell)}</b>: " + (html.escape(", ".join(rows)) if len(ordered) == 1 else
                                                    f"every other row ({len(rows)})"))
    return "<br>".join(parts)


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
    from armlib.reproduction.sections import SCALES, SECTIONS, confirmatory_plan

    out_dir = resolve(out_dir)
    results, figures = out_dir / "results", out_dir / "figures"
    calibration = read_calibration(out_dir)   # first: a malformed calibration file stops before anything is written
    metas = {p.stem.removeprefix("meta_"): read_json(p) for p in sorted(results.glob("meta_*.json"))}
    claims = _claims(out_dir)
    scale = SCALES.get(next((m.get("scale") for m in metas.values() if m.get("scale") in SCALES), ""))
    plan = confirmatory_plan(scale) if scale is not None else None
    planned = {x for c in plan["comparisons"] for x in c["seeds"]} if plan else set()
    seeds = stats.unify_experiments(with_pilot(read_seed_results(out_dir), out_dir))
    shown = seeds[seeds.metric.isin(("mIoU", "fine", "coarse", "ade20k"))] if len(seeds) else seeds
    paper = load_paper_results()
    body = [_calibration_section(calibration, out_dir)]
    toc = ['<li><a href="#calibration">Calibration</a></li>']
    for section in SECTIONS:
        key = section.key
        table = read_csv(results / f"{key}.csv")
        mine = claims[claims.table == key] if len(claims) else claims
        figs = _figures(figures, key)
        toc.append(f'<li><a href="#{key}">{html.escape(_what_ran(section.heading, scale))}</a></li>')
        parts = [f'<h2 id="{key}">{html.escape(_what_ran(section.heading, scale))}</h2>']
        title = paper.get(key, {}).get("title")
        if title:
            parts.append(f"<p class=muted>{html.escape(_what_ran(title, scale))}</p>")
        parts.append(f"<p class=claim>Paper: {html.escape(section.paper_claim)}</p>")
        if section.criteria:
            parts.append(f"<p class=muted>Criteria: {html.escape(section.criteria)}</p>")
        if table is None and not len(mine) and not figs:
            parts.append("<p class=muted>Not run at this scale (no result files).</p>")
        if len(mine):
            parts.append(_claims_table(mine, scale))
        if table is not None and {"mean", "paper", "n_diverged"} <= set(table.columns):
            # the rows not run at this scale, with the reason, as the notebook wrote them
            not_run = table[table.note.apply(lambda x: isinstance(x, str) and bool(x))]
            summary = pd.concat([stats.summarize(shown[shown.table == key], str(scale.name if scale else "")),
                                 not_run], ignore_index=True)
            parts.append(_summary_table(summary, shown, planned, scale))
            if key == "table6" and metas.get(key, {}).get("tta_mIoU") != "reported classes":
                parts.append("<p class=bad>These TTA values average every class, the unresolved ones included "
                             "(written before Table 6 used the scale's mIoU): not comparable with the other tables "
                             "until the next <code>make report</code>.</p>")
        elif table is not None:
            parts.append(table.to_html(index=False, float_format=lambda x: f"{x:.3f}", na_rep="—", classes="data"))
        found = _section_finding(mine) if len(mine) and (mine.test != "threshold").any() else (
            metas.get(key, {}).get("finding"))
        if found:
            parts.append(f"<p><b>What we found:</b> {html.escape(found)}</p>")
        parts.append(figs)
        body.append("\n".join(parts))

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
    most = int(shown.groupby(["table", "row"]).seed.nunique().max()) if len(shown) else 0
    one_seed = stats.one_seed_note(most) if most else None
    partial = folder_state(out_dir)
    front = ("<h1>ARM reproduction report</h1>"
             "<p>Liu et al., <i>ARM: A Confidence-Based Adversarial Reweighting Module for Coarse Semantic "
             "Segmentation</i>, reproduced at the <b>" + html.escape(facts["scale"]) + "</b> scale on "
             + html.escape(facts["data"]) + ". Each comparison pairs two rows' runs by seed and tests the mean "
             "paired Δ (mIoU points): <b>reproduced</b> when significant in the paper's direction, "
             "<b>contradicted</b> when significant against it, <b>inconclusive</b> otherwise; README, “How a "
             "verdict is made”. Every number is read from the result files.</p>"
             + (f"<p class=bad>Not one whole reproduction: {html.escape(partial)}. Verdicts and claims below cover "
                f"only what ran.</p>" if partial else "")
             + (f"<p class=bad>{html.escape(one_seed)}</p>" if one_seed else "")
             # The verdicts come before the figure: at 1280×900 the forest plot alone filled the first screen and
             # the central claim's verdict sat below it.
             + "<h2>Verdicts, each distinct comparison once</h2>" + _verdict_list(claims, plan, scale)
             + "<h2>Every tested comparison</h2>" + _forest(claims, out_dir, plan)
             + "<h2>Setup</h2><table>"
             + f"<tr><th>seeds per row</th><td>{_row_seeds(shown, planned)}</td></tr>"
             + "".join(f"<tr><th>{k}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts.items())
             + "</table><nav><h2>Contents</h2><ol>" + "".join(toc) + "</ol></nav>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><meta name=viewport "
            f"content='width=device-width, initial-scale=1'><title>ARM reproduction report</title>"
            f"<style>{CSS}</style></head><body>{front}{''.join(body)}</body></html>")
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
