"""Render ``<out_dir>/index.html``: one self-contained page (figures inlined), readable offline.

Reads only files the notebooks wrote under ``<out_dir>`` (:mod:`armlib.results`): the per-seed results, the
summaries, the threshold claims, the meta files and ``figures/<section>*.png``; recomputes every comparison claim
from the per-seed files (:func:`final_claims`). No number is typed into the report by hand.
"""
from __future__ import annotations

import base64
import html
import json
import math
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from armlib import stats
from armlib.errors import check_report_dir
from armlib.paper import load_paper_results
from armlib.paths import atomic_write_text, resolve
from armlib.results import read_csv, read_seed_results

CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .5em}
th{background:#f2f2f2}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#070;font-weight:bold}.bad{color:#b00;font-weight:bold}.muted{color:#777}
img{max-width:100%;border:1px solid #eee;margin:.4em 0}nav li{margin:.1em 0}.claim{font-style:italic}
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


def _summary_table(df: pd.DataFrame) -> str:
    rows = ["<tr><th>row</th><th>metric</th><th>paper</th><th>ours: mean ± std over finished seeds</th>"
            "<th>seeds</th><th>diverged</th><th>ARM moved (seeds)</th></tr>"]
    for r in df.itertuples():
        paper = "NaN (diverged)" if pd.isna(r.paper) and r.table == "table2" else _num(r.paper)
        note = getattr(r, "note", "")
        ours = (f"<span class=muted>{html.escape(str(note))}</span>" if isinstance(note, str) and note
                else f"{_num(r.mean)} ± {_num(r.std)}")
        rows.append(f"<tr><td>{html.escape(str(r.label))}</td><td>{html.escape(str(r.metric))} (%)</td>"
                    f"<td class=num>{paper}</td><td class=num>{ours}</td>"
                    f"<td class=num>{int(r.n)}</td><td class=num>{int(r.n_diverged) or ''}</td>"
                    f"<td class=num>{_moved_cell(getattr(r, 'arm_moved', ''))}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _text(x) -> str:
    return x if isinstance(x, str) else ""


def _moved_cell(value) -> str:
    """"k/n"; red when ARM stayed at its initialisation in some seed (the row is then partly the base model)."""
    if not isinstance(value, str) or not value:
        return ""
    k, n = value.split("/")
    return value if k == n else f'<span class=bad>{value}: ARM did not move in {int(n) - int(k)} seed(s)</span>'


def _claims_table(df: pd.DataFrame) -> str:
    rows = ["<tr><th>claim</th><th>family</th><th>paper Δ (rel. to its base)</th><th>ours Δ [95 % CI] "
            "(rel.)</th><th>n</th><th>p (test)</th><th>MDE at 80 % power, at the claim's α (primary: α/5)</th>"
            "<th>seeds for the paper's Δ at our base</th>"
            "<th>verdict</th><th>why</th></tr>"]
    for c in df.to_dict("records"):
        if c["test"] == "threshold":
            rows.append(f"<tr><td class=claim>{html.escape(str(c['text']))}</td><td>threshold</td>"
                        f"<td>{html.escape(str(c['threshold']))}</td>"
                        f"<td class=num>{html.escape(str(c['metric']))} = {_num(c['value'], 3)}</td><td></td><td></td>"
                        f"<td></td><td></td><td>{_verdict(c['verdict'])}</td><td class=muted>{html.escape(_text(c['note']))}"
                        "</td></tr>")
            continue
        unit = " mIoU pts" if c["metric"] in ("mIoU", "fine", "coarse", "ade20k") else ""
        status = c.get("paper_status") if isinstance(c.get("paper_status"), str) else ""
        paper = ({"diverged": "diverged (NaN)"}.get(status, "— (not in the paper)") if pd.isna(c["paper_delta"]) else
                 f"{_num(c['paper_delta'], signed=True)}{unit} ({_num(c['paper_relative_pct'], 1, True)} %)")
        if c["verdict"] == "not run":
            ours, n, p, mde, needed = "—", "", "", "", ""
        else:
            ours = (f"{_num(c['delta'], signed=True)}{unit} [{_num(c['ci_low'], signed=True)}, "
                    f"{_num(c['ci_high'], signed=True)}] ({_num(c['ours_relative_pct'], 1, True)} %)")
            n = str(int(c["n"])) if not pd.isna(c["n"]) else ""
            if c["family"] == "primary":
                p = f"{_p(c['p_holm'])} (Holm)"
            elif c["test"] == "equivalence":
                p = f"{_p(c['p_tost'])} (TOST ±{c['margin']:g})"
            else:
                p = f"{_p(c['p'])} (raw)"
            p += f"<br><span class=muted>sign-flip {_p(c['p_signflip'])}</span>"
            mde = _num(c["mde"])
            needed = "—" if pd.isna(c.get("n_needed")) else f"{math.ceil(c['n_needed'])}"
        shared = f"<br><span class=muted>same comparison in {html.escape(str(c['tables']))}</span>" \
            if isinstance(c.get("tables"), str) and " " in c["tables"] else ""
        rows.append(f"<tr><td class=claim>{html.escape(str(c['text']))}{shared}</td><td>{c['family']}</td>"
                    f"<td class=num>{paper}</td><td class=num>{ours}</td><td class=num>{n}</td>"
                    f"<td class=num>{p}</td><td class=num>{mde}</td><td class=num>{needed}</td><td>{_verdict(c['verdict'])}</td>"
                    f"<td class=muted>{html.escape(_text(c['note']))}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _figures(folder: Path, key: str) -> str:
    out = []
    for png in sorted(folder.glob(f"{key}*.png")):
        data = base64.b64encode(png.read_bytes()).decode()
        out.append(f'<img alt="{html.escape(png.stem)}" src="data:image/png;base64,{data}">')
    return "".join(out)


def _model_roles(scales: set[str]) -> str:
    """E.g. "ResNet101 → deeplabv3plus_tiny": the rows keep the paper's labels, this says what stood in."""
    from armlib.sections import SCALES

    names = {"r50": "ResNet50", "r101": "ResNet101 / DeepLabV3+", "ocr": "OCR"}
    parts = [f"{names[k]} → {v or 'not run at this scale'}" for s in sorted(scales) if s in SCALES
             for k, v in SCALES[s].models.items()]
    return "; ".join(parts) or "—"


def final_claims(out_dir: str | Path = "reports") -> pd.DataFrame:
    """Every claim of every section from the result files alone: comparisons recomputed from the per-seed files
    (Holm over the whole primary family), threshold claims as their notebooks wrote them. Written to
    ``results/claims.csv``; the report shows these."""
    from armlib.sections import SCALES, SECTION_KEYS, SECTIONS, claims_for

    out_dir = resolve(out_dir)
    folder = out_dir / "results"
    seeds = read_seed_results(out_dir)
    metas = {p.stem.removeprefix("meta_"): json.loads(p.read_text()) for p in sorted(folder.glob("meta_*.json"))}
    scale = SCALES.get(next((m.get("scale") for m in metas.values() if m.get("scale") in SCALES), "quick"))
    present = set(seeds.table.unique()) if len(seeds) else set()
    comparisons = stats.evaluate_claims(seeds, {k: claims_for(k, scale) for k in SECTION_KEYS if k in present}) if present else None
    frames = [comparisons] if comparisons is not None else []
    for s in SECTIONS:
        if s.key in present:
            continue
        thresholds = read_csv(folder / f"claims_{s.key}.csv")
        if thresholds is not None:
            frames.append(thresholds)
    claims = pd.concat(frames, ignore_index=True) if frames else stats.threshold_claims_frame([])
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "claims.csv", claims.to_csv(index=False))
    return claims


def reference_summary(out_dir: str | os.PathLike) -> str:
    """"N runs, X min of training and Y min in all on HARDWARE": the figures a README quotes for a committed
    reference, from its own meta files (``tests/test_report.py`` checks the README quotes them verbatim)."""
    results = resolve(out_dir) / "results"
    metas = [json.loads(p.read_text()) for p in sorted(results.glob("meta_*.json"))]
    training = next((m for m in metas if m.get("key") == "training"), {})
    total = sum(m.get("wall_time_s", 0.0) for m in metas)
    return (f"{training.get('runs', 0)} runs, {training.get('wall_time_s', 0.0) / 60:.1f} min of training and "
            f"{total / 60:.1f} min in all on {training.get('hardware', 'an unrecorded machine')}")


def _headline(claims: pd.DataFrame) -> str:
    if not len(claims):
        return "<p>No claim could be checked.</p>"
    distinct = stats.distinct_verdicts(claims)
    out = []
    for family, label in (("primary", "Primary claims (the paper's central ones; Holm-adjusted together)"),
                          ("secondary", "Secondary comparisons (raw p; exploratory)"),
                          ("threshold", "Measured thresholds (figures, the Hölder argument, ARM's learned curve)")):
        d = distinct[distinct.family == family]
        if not len(d):
            continue
        counts = d.verdict.value_counts()
        parts = ", ".join(f"{counts[v]} {v}" for v in stats.VERDICTS if v in counts)
        out.append(f"<li><b>{label}</b>: {len(d)} distinct — {parts}</li>")
    return "<ul>" + "".join(out) + "</ul>"


def render(out_dir: str | os.PathLike = "reports") -> Path:
    """Build ``<out_dir>/index.html`` (and ``results/claims.csv``) from the result files; return its path."""
    from armlib.sections import SECTIONS

    out_dir = resolve(out_dir)
    results, figures = out_dir / "results", out_dir / "figures"
    metas = {p.stem.removeprefix("meta_"): json.loads(p.read_text()) for p in sorted(results.glob("meta_*.json"))}
    claims = final_claims(out_dir)
    paper = load_paper_results()
    body, toc, checklist = [], [], []
    for section in SECTIONS:
        key = section.key
        table = read_csv(results / f"{key}.csv")
        mine = claims[claims.table == key] if len(claims) else claims
        figs = _figures(figures, key)
        toc.append(f'<li><a href="#{key}">{html.escape(section.heading)}</a></li>')
        parts = [f'<h2 id="{key}">{html.escape(section.heading)}</h2>']
        title = paper.get(key, {}).get("title")
        if title:
            parts.append(f"<p class=muted>{html.escape(title)}</p>")
        parts.append(f"<p class=claim>Paper: {html.escape(section.paper_claim)}</p>")
        if section.thresholds:
            parts.append(f"<p class=muted>Criteria: {html.escape(section.thresholds)}</p>")
        if table is None and not len(mine) and not figs:
            parts.append("<p class=muted>Not run at this scale (no result files).</p>")
        if len(mine):
            parts.append(_claims_table(mine))
            checklist += [(key, c) for c in mine.to_dict("records")]
        if table is not None and {"mean", "paper", "n_diverged"} <= set(table.columns):
            parts.append(_summary_table(table))
        elif table is not None:
            parts.append(table.to_html(index=False, float_format=lambda x: f"{x:.3f}", na_rep="—", classes="data"))
        if key in metas and metas[key].get("finding"):
            parts.append(f"<p><b>What we found:</b> {html.escape(metas[key]['finding'])}</p>")
        parts.append(figs)
        body.append("\n".join(parts))

    rows = "".join(
        f"<tr><td><a href='#{k}'>{k}</a></td><td class=claim>{html.escape(str(c['text']))}</td>"
        f"<td>{c['family']}</td><td>{_verdict(c['verdict'])}</td></tr>" for k, c in checklist)
    wall = sum(m.get("wall_time_s", 0.0) for m in metas.values())
    any_meta = next(iter(metas.values()), {})
    seeds = sorted({s for m in metas.values() for s in m.get("seeds", [])})
    versions = any_meta.get("versions", "")
    if isinstance(versions, dict):
        versions = ", ".join(f"{k} {v}" for k, v in versions.items())
    facts = {
        "scale": ", ".join(sorted({str(m.get("scale")) for m in metas.values()})) or "—",
        "seeds": ", ".join(map(str, seeds)) or "—",
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
    one_seed = stats.one_seed_note(len(seeds)) if seeds else None
    front = ("<h1>ARM reproduction report</h1>"
             "<p>Liu et al., <i>ARM: A Confidence-Based Adversarial Reweighting Module for Coarse Semantic "
             "Segmentation</i>. Every number below is read from result files written by the notebooks "
             "(<code>results/*_seeds.csv</code> hold every run's value per seed); the paper's values come from "
             "<code>armlib/paper_results.json</code>. A comparison pairs two rows' runs by seed (a seed fixes the "
             "initialisation, data order and augmentation of both) and tests the mean paired Δ with a two-sided "
             "paired t-test at α = 0.05: <b>reproduced</b> when significant in the paper's direction, "
             "<b>contradicted</b> when significant against it, <b>inconclusive</b> otherwise (then the 95 % CI, "
             "the minimal detectable effect at 80 % power and whether the paper's Δ lies in our CI say what the "
             "data could decide). The primary family is Holm-adjusted; \"no effect\" claims use TOST within a "
             "stated margin. A diverged seed stays in, marked, and counts against its method. The minimal detectable "
             "effect (MDE) of a primary claim is at Holm's strictest level, α/5; with n seeds the exact sign-flip p "
             "cannot go below 2/2ⁿ (0.25 at 3 seeds), so at 3 seeds only the t-test can decide. Training on one "
             "machine is deterministic: the spread between seeds is the only noise.</p>"
             + (f"<p class=bad>{html.escape(one_seed)}</p>" if one_seed else "")
             + "<table>" + "".join(f"<tr><th>{k}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts.items())
             + "</table><h2>Verdicts, each distinct comparison counted once</h2>" + _headline(claims)
             + f"<table><tr><th>section</th><th>claim</th><th>family</th><th>verdict</th></tr>{rows}</table>"
             "<nav><h2>Contents</h2><ol>" + "".join(toc) + "</ol></nav>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>ARM reproduction report</title>"
            f"<style>{CSS}</style></head><body>{front}{''.join(body)}</body></html>")
    index = out_dir / "index.html"
    atomic_write_text(index, page)
    return index


def add_arguments(parser) -> None:
    parser.add_argument("--out-dir", default="reports", help="folder holding results/ and figures/")


def run(args) -> int:
    check_report_dir(args.out_dir)  # a typo in --out-dir rendered an empty report silently
    print(render(args.out_dir))
    return 0
