"""From run records to the report's tables: the paper's numbers beside ours, and a verdict per claim.

A *claim* is a direction the paper asserts between two rows of a table, e.g. "ARM beats the base model
on Cityscapes Coarse" = sign(mIoU[ce_arm] − mIoU[ce]) > 0. Its verdict compares the sign of our mean
difference over seeds with the paper's; ``within_noise`` flags a difference smaller than twice its
standard error (paired over seeds), where the direction is not established either way.

Files written (under ``<out_dir>/results/``), read by :mod:`armlib.report`:
``<table>.csv`` (table, row, label, metric, paper, ours_mean, ours_std, n_seeds, scale, claim_holds) and
``claims_<table>.csv`` (id, table, text, metric, paper, ours, ours_se, n, holds, within_noise).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import pandas as pd

from armlib.paths import atomic_write_text

METRICS = ("aAcc", "mAcc", "mIoU")


@cache
def _paper() -> dict:
    return json.loads(resources.files("armlib").joinpath("paper_results.json").read_text())["tables"]


def load_paper_results() -> dict:
    """{table: {"title", "dataset", "rows": {row: {"label", metric: value|None}}}} (a fresh copy)."""
    return json.loads(json.dumps(_paper()))


def paper_value(table: str, row: str, metric: str) -> float:
    """The paper's number (NaN where it printed NaN or '-')."""
    tables = _paper()
    if table not in tables or row not in tables[table]["rows"]:
        raise KeyError(f"no row {row!r} in the paper's {table!r}")
    value = tables[table]["rows"][row].get(metric)
    return math.nan if value is None else float(value)


@dataclass(frozen=True)
class Claim:
    """The paper asserts sign(metric[a] − metric[b]) == sign."""

    id: str
    table: str
    text: str
    a: str
    b: str
    sign: int = +1
    metric: str = "mIoU"


CLAIMS: tuple[Claim, ...] = (
    Claim("t1_detach", "table1", "Without detaching, Linear ARM collapses below the base model",
          "linear_nodetach", "base", -1),
    Claim("t1_linear", "table1", "Linear ARM (detached, suppressing) beats the base model", "linear_detach", "base"),
    Claim("t1_focus", "table1", "Focusing on confident pixels is worse than suppressing them",
          "linear_focusing", "linear_detach", -1),
    Claim("t1_focus_base", "table1", "Focusing is worse than the base model", "linear_focusing", "base", -1),
    Claim("t2_arm", "table2", "ARM (L2 norm, var input) beats the base model", "norm_l2", "base"),
    Claim("t2_l1", "table2", "L1 normalisation fails (paper: NaN), below L2", "norm_l1", "norm_l2", -1),
    Claim("t2_l3", "table2", "L2 normalisation beats L3", "norm_l2", "norm_l3"),
    Claim("t2_std", "table2", "ARM with std input beats the base model", "input_std", "base"),
    Claim("t2_logvar", "table2", "ARM with log var input beats the base model", "input_logvar", "base"),
    Claim("t2_entropy", "table2", "Entropy input fails (paper: NaN), below var", "input_entropy", "input_var", -1),
    *(Claim(f"t3_{d}_{m}", "table3", f"ARM beats the base model: {d}, {label}", f"{d}_{m}_arm", f"{d}_{m}_base")
      for d in ("coarse", "fine")
      for m, label in (("r50", "ResNet50"), ("r101", "ResNet101"), ("dlv3p", "DeepLabV3+"), ("ocr", "OCR"))),
    Claim("t3_coarse_r50_vs_r101", "table3", "Coarse: ResNet50 + ARM beats plain ResNet101",
          "coarse_r50_arm", "coarse_r101_base"),
    Claim("t3_fine_r50_vs_r101", "table3", "Fine: ResNet50 + ARM beats plain ResNet101",
          "fine_r50_arm", "fine_r101_base"),
    Claim("t4_kl_arm", "table4", "ARM improves the KL loss", "kl_arm", "kl"),
    Claim("t4_ce_arm", "table4", "ARM improves CE", "ce_arm", "ce"),
    Claim("t4_gce_arm", "table4", "ARM improves GCE", "gce_arm", "gce"),
    Claim("t4_kl_ce", "table4", "KL is worse than CE (Sec. 3.1)", "kl", "ce", -1),
    Claim("t4_gce_ce", "table4", "GCE beats CE", "gce", "ce"),
    Claim("t5_fine_ohem", "table5", "OHEM helps on fine labels", "fine_ohem", "fine_base"),
    Claim("t5_coarse_ohem", "table5", "OHEM does not help on coarse labels", "coarse_ohem", "coarse_base", -1),
    Claim("t5_fine_arm", "table5", "ARM helps on fine labels", "fine_arm", "fine_base"),
    Claim("t5_coarse_arm", "table5", "ARM helps on coarse labels", "coarse_arm", "coarse_base"),
    Claim("t5_coarse_arm_ohem", "table5", "ARM beats OHEM on coarse labels", "coarse_arm", "coarse_ohem"),
    Claim("t5_ade_ohem", "table5", "OHEM helps on ADE20K", "ade_ohem", "ade_base"),
    Claim("t5_ade_arm", "table5", "ARM helps on ADE20K", "ade_arm", "ade_base"),
    *(Claim(f"t6_{m}_{d}", "table6", f"{label} {verb} the base model with TTA, {d} labels", m, "base", sign, d)
      for d in ("fine", "coarse", "ade20k")
      for m, label in (("ohem", "OHEM"), ("linear_arm", "Linear ARM"), ("arm", "ARM"))
      for sign, verb in [(-1 if (m, d) == ("ohem", "coarse") else 1,
                          "does not beat" if (m, d) == ("ohem", "coarse") else "beats")]),
)


def claims_for(table: str) -> list[Claim]:
    return [c for c in CLAIMS if c.table == table]


def summarize(records: pd.DataFrame, table: str, scale: str) -> pd.DataFrame:
    """Mean ± std over seeds per row and metric, beside the paper's value.

    Args:
        records: one row per run with columns row, seed and the metrics (``metric`` names of the table:
            aAcc/mAcc/mIoU, or fine/coarse/ade20k for Table 6).
    """
    paper = _paper()[table]
    metrics = paper.get("metrics", list(METRICS))
    holds = {}
    for claim in evaluate_claims(records, table):
        holds.setdefault(claim["a"], []).append(claim["holds"])
    out = []
    for row, group in records.groupby("row", sort=False):
        for metric in metrics:
            if metric not in group or group[metric].isna().all():
                continue
            values = group[metric].astype(float)
            out.append({
                "table": table, "row": row, "label": paper["rows"].get(row, {}).get("label", row),
                "metric": metric, "paper": paper_value(table, row, metric) if row in paper["rows"] else math.nan,
                "ours_mean": values.mean(), "ours_std": values.std(ddof=1) if len(values) > 1 else math.nan,
                "n_seeds": int(values.notna().sum()), "scale": scale,
                "claim_holds": all(holds[row]) if row in holds else None,
            })
    return pd.DataFrame(out)


def evaluate_claims(records: pd.DataFrame, table: str) -> list[dict]:
    """Verdict of each of the table's claims whose two rows we ran (skipped otherwise)."""
    out = []
    for c in claims_for(table):
        if c.metric not in records:
            continue
        a = records[records.row == c.a].set_index("seed")[c.metric]
        b = records[records.row == c.b].set_index("seed")[c.metric]
        if a.empty or b.empty:
            continue
        paired = (a - b).dropna()   # same seeds: paired differences cancel the seed's shared luck
        diff = paired if len(paired) else pd.Series([a.mean() - b.mean()])
        # A diverged run (NaN) counts as the worst possible result, as the paper's NaN entries do.
        ours = (a.fillna(-math.inf).mean() - b.fillna(-math.inf).mean()) if (a.isna().any() or b.isna().any()) \
            else diff.mean()
        se = diff.std(ddof=1) / math.sqrt(len(diff)) if len(diff) > 1 else math.nan
        holds = bool(ours * c.sign > 0)
        out.append({
            "id": c.id, "table": table, "text": c.text, "metric": c.metric, "a": c.a, "b": c.b,
            "paper": _paper_difference(c), "ours": ours, "ours_se": se, "n": len(diff), "holds": holds,
            "within_noise": bool(math.isfinite(ours) and math.isfinite(se) and abs(ours) < 2 * se),
        })
    return out


def _paper_difference(c: Claim) -> float:
    a, b = paper_value(c.table, c.a, c.metric), paper_value(c.table, c.b, c.metric)
    if math.isnan(a) and not math.isnan(b):  # the paper's NaN (diverged) rows
        return -math.inf
    return a - b


def figure_claim(id: str, table: str, text: str, paper: str, ours: float, holds: bool,
                 metric: str = "", se: float = math.nan, n: int = 1) -> dict:
    """A claim about a figure (measured quantity vs the paper's statement), in the claims schema."""
    return {"id": id, "table": table, "text": text, "metric": metric, "a": "", "b": "", "paper": paper,
            "ours": ours, "ours_se": se, "n": n, "holds": bool(holds), "within_noise": False}


def write_table(summary: pd.DataFrame, claims: list[dict], out_dir: str | Path, table: str) -> Path:
    """Write ``results/<table>.csv`` and ``results/claims_<table>.csv`` atomically; return the folder."""
    folder = Path(out_dir) / "results"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / f"{table}.csv", summary.to_csv(index=False))
    atomic_write_text(folder / f"claims_{table}.csv", pd.DataFrame(claims).to_csv(index=False))
    return folder
