"""What every notebook calls around its section: start the clock, show frames and claims, finish with the meta file.

A section's own work (runs → result files, and its figure) is its module in :mod:`armlib.reproduction.report_sections`;
this module holds what all notebooks share: :func:`start`, :func:`show`, :func:`show_claims`,
:func:`structure`, :func:`finish` (``results/meta_<key>.json``), and :func:`write_training_meta`.
"""
from __future__ import annotations

import json
import time

import pandas as pd

from armlib.reproduction import experiments, stats, verdict_rules, verdicts
from armlib.reproduction.parameters import check_notebook, parse_seeds
from armlib.paths import atomic_write_text, git_revision, resolve
from armlib.runs import hardware, read_record, versions
from armlib.reproduction.sections import get_scale, get_section

# -- bookkeeping ---------------------------------------------------------------------------------------

def start(key: str, parameters: dict) -> float:
    """Check the section and the notebook's parameters (its ``globals()``, :func:`armlib.reproduction.parameters.check_notebook`:
    a misspelt name or a wrong type is refused, naming it), and start the notebook's clock."""
    get_section(key)
    get_scale(check_notebook(parameters)["scale"])
    return time.perf_counter()


def finish(key: str, claims: pd.DataFrame, started: float, scale: str, seeds=None, data_root="data",
           device="auto", out_dir="reports", runs_dir="runs", jobs=None) -> str:
    """Write ``results/meta_<key>.json`` (provenance + finding) and return the finding sentence."""
    text = verdicts.finding(claims)
    sc = get_scale(scale)
    seeds = parse_seeds(seeds)
    meta = {"key": key, "scale": scale, "seeds": list(sc.seeds if seeds is None else seeds),
            "primary_seeds": list(sc.primary_seeds or sc.seeds) if seeds is None else list(seeds),
            "data": _data_description(scale, data_root), "setup": setup(scale),
            "wall_time_s": time.perf_counter() - started,
            "git_revision": git_revision(), "hardware": hardware(), "versions": versions(), "finding": text}
    if key == "table6":   # the report tells a reference written before its TTA mIoU left unresolved classes out
        meta["tta_mIoU"] = "reported classes"
    atomic_write_text(resolve(out_dir) / "results" / f"meta_{key}.json", json.dumps(meta, indent=1))
    return text


def setup(scale: str) -> dict:
    """What a reader needs to weigh the numbers: steps, crop, batch, data-set size and model of the scale's
    base config (rows change the method, never these)."""
    from armlib.config import load_config

    cfg = load_config(get_scale(scale).config_for({}))
    out = {"iterations": cfg.iterations, "crop": list(cfg.crop_size), "batch_size": cfg.batch_size,
           "model": cfg.model, "lr": cfg.base_lr}
    if cfg.dataset == "synth":
        out.update(train_images=cfg.synth_n_train, val_images=cfg.synth_n_val, coarse_noise=cfg.synth_noise)
    return out


def _data_description(scale: str, data_root) -> str:
    sc = get_scale(scale)
    return "synthetic street scenes (armlib synth)" if sc.dataset == "synth" else f"real {sc.dataset} at {data_root}"


def show(df: pd.DataFrame, digits: int = 2) -> str:
    """A data frame as fixed-width text, rounded, for notebooks.

    A :func:`armlib.reproduction.stats.summarize` frame becomes one line per row: "mean ± std (paper)" per metric, the
    seeds and the diverged seeds.
    """
    if not len(df):
        return "(empty)"
    if {"mean", "std", "paper", "metric", "label", "n_diverged"} <= set(df.columns):
        cell = (df["mean"].map(lambda x: "—" if pd.isna(x) else f"{x:.{digits}f}") + " ± " + df["std"].map(
            lambda x: "—" if pd.isna(x) else f"{x:.{digits}f}") + " (" + df.paper.map(
            lambda x: "NaN" if pd.isna(x) else f"{x:.{digits}f}") + ")")
        wide = df.assign(cell=cell).pivot_table(index="label", columns="metric", values="cell", aggfunc="first",
                                                sort=False)
        wide.columns.name = None
        g = df.groupby("label", sort=False)
        out = wide.assign(seeds=g["n"].max(), diverged=g["n_diverged"].max())
        if "arm_moved" in df and df["arm_moved"].fillna("").astype(str).str.len().any():
            out = out.assign(**{"ARM moved": g["arm_moved"].first().fillna("")})
        return out.reset_index().to_string(index=False)
    # + 0.0 turns the −0.0 that rounding leaves into 0.0
    floats = df.select_dtypes("float").columns
    return df.assign(**{c: df[c].round(digits) + 0.0 for c in floats}).to_string(index=False, na_rep="—")


def show_claims(claims: pd.DataFrame) -> str:
    """One line per claim: verdict, text, our Δ with its 95 % CI and p (the family-adjusted one for primaries), the
    paper's Δ; a confirmatory claim (:func:`armlib.reproduction.verdict_rules.staged_claims`) says so."""
    if claims is None or not len(claims):
        return "(no claim can be checked at this scale)"
    lines = []
    for c in claims.to_dict("records"):
        if c["test"] == "threshold":
            lines.append(f"[{c['verdict']}] {c['text']}: {c['metric']} = {c['value']:.4g} ({c['threshold']})")
            continue
        if c["verdict"] == stats.NOT_RUN:
            stage = " (confirmatory: planned, not run yet)" if c.get("stage") == verdict_rules.CONFIRMATORY else ""
            lines.append(f"[not run] {c['text']}{stage}")
            continue
        p = c["p_adjusted"] if c["family"] == "primary" else (c["p_tost"] if c["test"] == "equivalence" else c["p"])
        pname = (f"p ({c['procedure']})" if c["family"] == "primary" else
                 "p_tost" if c["test"] == "equivalence" else "p")
        paper = (c.get("paper_status") or "diverged") if pd.isna(c["paper_delta"]) else f"{c['paper_delta']:+.2f}"
        ci = "" if pd.isna(c["ci_low"]) else f" [{c['ci_low']:+.2f}, {c['ci_high']:+.2f}]"
        test = "" if pd.isna(p) else f", {pname}={p:.3g}"
        family = c["family"] + (f", {c['stage']}" if isinstance(c.get("stage"), str) and c["stage"] else "")
        lines.append(f"[{c['verdict']}] ({family}) {c['text']}: Δ{c['metric']} ours {c['delta']:+.2f}{ci}, "
                     f"n={int(c['n'])}{test}; paper {paper} — {c['note']}")
    return "\n".join(lines)


def structure(summary: pd.DataFrame, claims: pd.DataFrame) -> str:
    """What a notebook produced, without training numbers: rows × metrics with their seed counts, and the claim
    ids. Identical on every machine, so nbval compares it exactly (the numbers are compared at a measured
    tolerance by ``tests/test_goldens.py``)."""
    lines = []
    if summary is not None and {"row", "metric", "n"} <= set(summary.columns):
        for (row, n), g in summary.groupby(["row", "n"], sort=False):
            lines.append(f"{row}: {', '.join(g.metric)} (n={n})")
    if claims is not None and len(claims):
        lines.append("claims: " + ", ".join(claims.id))
    return "\n".join(lines) or "(empty)"


# -- the training runs ----------------------------------------------------------------------------------

def write_training_meta(runs: list[experiments.Run], scale: str, out_dir="reports") -> dict:
    """``results/meta_training.json`` from the run records themselves: how many runs, their summed wall time,
    and the elapsed span from the first run's start to the last run's end (record mtimes), so the report's
    wall time includes training even when it happened in an earlier, interrupted invocation."""
    ends, walls = [], []
    for r in runs:
        record = read_record(r.out)
        ends.append(r.record_path.stat().st_mtime)
        walls.append(float(record.get("wall_time_s", 0.0)))
    span = max(ends) - min(e - w for e, w in zip(ends, walls)) if ends else 0.0
    meta = {"key": "training", "scale": scale, "runs": len(runs), "run_wall_time_sum_s": sum(walls),
            "wall_time_s": span, "git_revision": git_revision(), "hardware": hardware(), "versions": versions(),
            "finding": f"{len(runs)} training runs; {span / 60:.1f} min from the first start to the last end "
                       f"({sum(walls) / 60:.1f} min summed over runs, {get_scale(scale).jobs} at once)."}
    atomic_write_text(resolve(out_dir) / "results" / "meta_training.json", json.dumps(meta, indent=1))
    return meta
