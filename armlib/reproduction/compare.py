"""`armlib compare REFERENCE_DIR MY_DIR`: does a rerun agree with a committed reference, claim by claim?

Both folders are report folders (``armlib reproduce --out-dir``). Their claims are evaluated afresh from the
result files (:func:`armlib.reproduction.verdicts.evaluate`, nothing written), so the comparison rests on the raw results. A
comparison claim *agrees* when the verdicts match and each mean Δ lies inside the other's 95 % interval (two
runs of one experiment on different machines differ within seed noise, not more); a threshold claim agrees when
its verdict matches. A claim one folder has not run (absent, or "not run" there while the other has a verdict) is
*missing*, never *different*: a partial rerun (``reproduce --only``) is not a disagreement. Everything else is
listed as differing, with both numbers.
"""
from __future__ import annotations

import argparse
import math
import os
from typing import TYPE_CHECKING

from armlib.commands import path_arg
from armlib.errors import check_report_dir

if TYPE_CHECKING:
    import pandas as pd


def _inside(x: float, low: float, high: float) -> bool | None:
    if not all(isinstance(v, float) and math.isfinite(v) for v in (x, low, high)):
        return None
    return low <= x <= high


def compare_reports(reference: str | os.PathLike, mine: str | os.PathLike) -> pd.DataFrame:
    """One row per claim present in either folder: id, both verdicts and Δ, ``status`` ("agrees", "differs" or
    "missing"), ``agrees`` (bool: status == "agrees") and ``why``."""
    import pandas as pd

    from armlib.reproduction.verdicts import evaluate   # here: they import pandas and torch, and `armlib compare --help` must not

    ref = evaluate(check_report_dir(reference, "REFERENCE")).set_index("id")
    new = evaluate(check_report_dir(mine, "MINE")).set_index("id")
    rows = []
    for cid in list(dict.fromkeys([*ref.index, *new.index])):
        ran_ref = cid in ref.index and ref.loc[cid].verdict != "not run"
        ran_new = cid in new.index and new.loc[cid].verdict != "not run"
        if ran_ref != ran_new:
            rows.append({"id": cid, "text": (ref if cid in ref.index else new).loc[cid].text, "status": "missing",
                         "agrees": False, "why": "not run in the " + ("rerun" if ran_ref else "reference")})
            continue
        if cid not in ref.index or cid not in new.index:   # "not run" on one side, absent on the other
            rows.append({"id": cid, "status": "agrees", "agrees": True, "why": "run in neither"})
            continue
        a, b = ref.loc[cid], new.loc[cid]
        row = {"id": cid, "text": a.text, "verdict_reference": a.verdict, "verdict_mine": b.verdict,
               "delta_reference": a.delta, "delta_mine": b.delta}
        if a.verdict != b.verdict:
            row.update(agrees=False, why="verdicts differ")
        elif a.test == "threshold" or a.verdict == "not run":
            row.update(agrees=True, why="same verdict")
        else:
            checks = [_inside(float(b.delta), float(a.ci_low), float(a.ci_high)),
                      _inside(float(a.delta), float(b.ci_low), float(b.ci_high))]
            if False in checks:
                row.update(agrees=False, why="a Δ lies outside the other's 95 % CI")
            elif None in checks:
                row.update(agrees=True, why="same verdict (no interval: fewer than two seeds)")
            else:
                row.update(agrees=True, why="same verdict, each Δ inside the other's 95 % CI")
        row["status"] = "agrees" if row["agrees"] else "differs"
        rows.append(row)
    return pd.DataFrame(rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("reference", metavar="REFERENCE", type=path_arg,
                        help="report folder to compare with, e.g. reports/quick")
    parser.add_argument("mine", metavar="MINE", type=path_arg,
                        help="report folder of your rerun, e.g. reports (after armlib reproduce)")


def run(args: argparse.Namespace) -> int:
    """Prints the claims that differ, then those missing on one side, then a one-line summary; exit status 0
    (agreement is a finding, not an error), 2 on a folder without results."""
    table = compare_reports(args.reference, args.mine)
    differ, missing = table[table.status == "differs"], table[table.status == "missing"]
    if len(differ):
        print(differ.drop(columns=["status", "agrees"]).to_string(index=False, na_rep="—",
                                                                  float_format=lambda x: f"{x:+.2f}"))
    if len(missing):
        print(f"missing (run in one folder only): {', '.join(missing.id)}")
    print(f"{int(table.agrees.sum())} of {len(table)} claims agree with {args.reference}; {len(differ)} differ; "
          f"{len(missing)} missing (not run in one of the two folders)")
    return 0
