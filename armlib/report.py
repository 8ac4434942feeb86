"""Render ``<out_dir>/index.html``: one self-contained page (figures inlined), readable offline.

Reads only files the notebooks wrote under ``<out_dir>``: ``results/<section>.csv``,
``results/claims_<section>.csv``, ``results/meta_<section>.json`` and ``figures/<section>*.png``.
No number is typed into the report by hand.
"""
from __future__ import annotations

import base64
import html
import json
import math
import platform
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from armlib.errors import check_report_dir
from armlib.paths import atomic_write_text, resolve
from armlib.results import load_paper_results

# (section key, heading, what the paper claims there) in reading order; the Hölder section follows
# Fig. 5 because it trains ARM on the loss curve Fig. 5 measured.
SECTIONS = [
    ("data", "Fig. 1 — fine vs coarse annotations",
     "Coarse polygons label objects roughly, leave boundaries unlabelled and sometimes overshoot."),
    ("variance_maps", "Fig. 4 — where low-variance pixels lie",
     "Almost all low-variance pixels lie on the boundaries between semantic regions."),
    ("loss_vs_variance", "Fig. 5 — mean loss per variance bin",
     "The average loss falls as the normalised variance (confidence) rises (Eq. 8)."),
    ("holder", "Eq. 10–13 — the Hölder toy and ARM's convergence",
     "Under ‖W‖_p = 1, p > 1, the adversarial weight converges to ‖L‖_q^{−1/(p−1)} L^{1/(p−1)}; p = 1 is sparse."),
    ("confidence_quadrants", "Fig. 2 — loss vs confidence as a sample divider",
     "Among high-loss pixels, confidence separates mislabelled (confident) from valuable (unsure) ones."),
    ("table1", "Table 1 — detaching and suppressing vs focusing", ""),
    ("table2", "Table 2 — normalisation and input type", ""),
    ("table3", "Table 3 — backbones and heads", ""),
    ("table4", "Table 4 — loss functions", ""),
    ("table5", "Table 5 — ARM vs OHEM", ""),
    ("table6", "Table 6 — with test-time augmentation", ""),
    ("learned_curve", "ARM's learned W(v) vs the Hölder prediction (not in the paper)",
     "Sec. 3.4 predicts ARM's curve from the measured loss; we check it on the trained model."),
    ("noise_sweep", "ARM's gain as label noise grows (not in the paper)",
     "The paper motivates ARM by label noise; we vary the coarse-label noise of the synthetic data."),
]

CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .5em}
th{background:#f2f2f2}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#070;font-weight:bold}.bad{color:#b00;font-weight:bold}.muted{color:#777}
img{max-width:100%;border:1px solid #eee;margin:.4em 0}nav li{margin:.1em 0}.claim{font-style:italic}
"""


def _fmt(x, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if isinstance(x, float) and math.isinf(x):
        return "diverged" if x < 0 else "∞"
    return f"{x:.{digits}f}" if isinstance(x, (int, float)) else html.escape(str(x))


def _verdict(holds, within_noise=False) -> str:
    if holds is None or (isinstance(holds, float) and math.isnan(holds)):
        return '<span class="muted">n/a</span>'
    mark = '<span class="ok">✓</span>' if bool(holds) else '<span class="bad">✗</span>'
    return mark + (' <span class="muted">(within seed noise)</span>' if within_noise else "")


def _read_csv(path: Path) -> pd.DataFrame | None:
    if not path.exists() or path.stat().st_size == 0:
        return None
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return None


def _bool(x) -> bool | None:
    if isinstance(x, str):
        return {"true": True, "false": False}.get(x.lower())
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return bool(x)


def _results_table(df: pd.DataFrame) -> str:
    rows = ["<tr><th>row</th><th>metric</th><th>paper</th><th>ours (mean ± std, n seeds)</th></tr>"]
    for r in df.itertuples():
        ours = f"{_fmt(r.ours_mean)} ± {_fmt(r.ours_std)} (n={int(r.n_seeds)})"
        rows.append(f"<tr><td>{html.escape(str(r.label))}</td><td>{html.escape(str(r.metric))}</td>"
                    f"<td class=num>{_fmt(r.paper)}</td><td class=num>{ours}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _claims_table(df: pd.DataFrame) -> str:
    rows = ["<tr><th>claim</th><th>paper</th><th>ours</th><th>holds</th></tr>"]
    for r in df.itertuples():
        try:   # a number, or a statement for figure claims ("falls (Fig. 5)")
            paper = _fmt(float(r.paper))
        except (TypeError, ValueError):
            paper = html.escape(str(r.paper))
        se = "" if pd.isna(r.ours_se) else f" ± {_fmt(r.ours_se)} (se, n={int(r.n)})"
        rows.append(f"<tr><td class=claim>{html.escape(r.text)}</td><td class=num>{paper}</td>"
                    f"<td class=num>{_fmt(r.ours)}{se}</td><td>{_verdict(_bool(r.holds), _bool(r.within_noise))}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _figures(folder: Path, key: str) -> str:
    out = []
    for png in sorted(folder.glob(f"{key}*.png")):
        data = base64.b64encode(png.read_bytes()).decode()
        out.append(f'<img alt="{html.escape(png.stem)}" src="data:image/png;base64,{data}">')
    return "".join(out)


def _model_roles(scales: set[str]) -> str:
    """E.g. "ResNet101 → deeplabv3plus_tiny": the rows keep the paper's labels, this says what stood in."""
    from armlib.experiments import SCALES

    names = {"r50": "ResNet50", "r101": "ResNet101 / DeepLabV3+", "ocr": "OCR"}
    parts = [f"{names[k]} → {v or 'not run'}" for s in sorted(scales) if s in SCALES
             for k, v in SCALES[s].models.items()]
    return "; ".join(parts) or "—"


def render(out_dir: str | Path = "reports") -> Path:
    """Build ``<out_dir>/index.html`` from the result files; return its path."""
    out_dir = resolve(out_dir)
    results, figures = out_dir / "results", out_dir / "figures"
    metas = {p.stem.removeprefix("meta_"): json.loads(p.read_text()) for p in sorted(results.glob("meta_*.json"))}
    all_claims, body, toc = [], [], []
    paper = load_paper_results()
    for key, heading, claim_text in SECTIONS:
        table = _read_csv(results / f"{key}.csv")
        claims = _read_csv(results / f"claims_{key}.csv")
        figs = _figures(figures, key)
        toc.append(f'<li><a href="#{key}">{html.escape(heading)}</a></li>')
        parts = [f'<h2 id="{key}">{html.escape(heading)}</h2>']
        title = paper.get(key, {}).get("title")
        if title:
            parts.append(f"<p class=muted>{html.escape(title)}</p>")
        if claim_text:
            parts.append(f"<p class=claim>Paper: {html.escape(claim_text)}</p>")
        if table is None and claims is None and not figs:
            parts.append("<p class=muted>Not run at this scale (no result files).</p>")
        if claims is not None:
            parts.append(_claims_table(claims))
            all_claims += [(key, r) for r in claims.itertuples()]
        if table is not None and {"ours_mean", "paper"} <= set(table.columns):
            parts.append(_results_table(table))
        elif table is not None:
            parts.append(table.to_html(index=False, float_format=lambda x: f"{x:.3f}", classes="data"))
        if key in metas and metas[key].get("finding"):
            parts.append(f"<p><b>What we found:</b> {html.escape(metas[key]['finding'])}</p>")
        parts.append(figs)
        body.append("\n".join(parts))

    n_hold = sum(bool(_bool(r.holds)) for _, r in all_claims)
    checklist = "".join(
        f"<tr><td><a href='#{k}'>{k}</a></td><td class=claim>{html.escape(r.text)}</td>"
        f"<td>{_verdict(_bool(r.holds), _bool(r.within_noise))}</td></tr>" for k, r in all_claims)
    wall = sum(m.get("wall_time_s", 0.0) for m in metas.values())
    any_meta = next(iter(metas.values()), {})
    facts = {
        "scale": ", ".join(sorted({str(m.get("scale")) for m in metas.values()})) or "—",
        "data": ", ".join(sorted({str(m.get("data")) for m in metas.values() if m.get("data")})) or "—",
        "models (the paper's role → what ran)": _model_roles({str(m.get("scale")) for m in metas.values()}),
        "hardware": any_meta.get("hardware", platform.processor() or platform.machine()),
        "versions": any_meta.get("versions", ""),
        "git revision": ", ".join(sorted({str(m.get("git_revision")) for m in metas.values()})) or "—",
        "training": metas.get("training", {}).get("finding", "—"),
        "wall time (training span + notebooks)": f"{wall / 60:.1f} min",
        "rendered": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    front = ("<h1>ARM reproduction report</h1>"
             "<p>Liu et al., <i>ARM: A Confidence-Based Adversarial Reweighting Module for Coarse Semantic "
             "Segmentation</i>. Every number below is read from result files written by the notebooks; the "
             "paper's values come from <code>armlib/paper_results.json</code>. A claim holds (✓) when our mean "
             "difference over seeds has the paper's sign; \"within seed noise\" marks a difference smaller than "
             "twice its standard error.</p>"
             "<table>" + "".join(f"<tr><th>{k}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts.items())
             + "</table>"
             f"<h2>Claims checklist: {n_hold} of {len(all_claims)} hold at this scale</h2>"
             f"<table><tr><th>section</th><th>claim</th><th>verdict</th></tr>{checklist}</table>"
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
