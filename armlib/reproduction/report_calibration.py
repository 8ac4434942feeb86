"""The report's Calibration section: why the scale's T is what it is, from ``armlib calibrate``'s files under
``<out_dir>/calibration/`` (:func:`armlib.reproduction.calibration_files.read_calibration` reads them;
``templates/calibration.j2`` shows what :func:`calibration_section` prepares)."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from armlib.arm import MOVED_THRESHOLD
from armlib.reproduction import report_cells as cells
from armlib.reproduction.calibration_files import (ARM_FILE, CALIBRATION_DIR, CURVE_FILE, SUMMARY_FILE, UNRESOLVED_IOU,
                                                   Calibration, cost_column)

CALIBRATION_FIGURE = "calibration_learning_curve"   # plots.calibration_learning_curve saves figures/<this>.png
# (tests/test_calibration_report.py fails if the two names part); no section key is a prefix of it



def _moved_flag(value) -> bool | None:
    """A ``moved`` cell of arm_learns.csv (pandas reads True/False as bool); None where it holds neither."""
    text = str(value).strip().lower()
    return True if text in ("true", "1", "1.0") else False if text in ("false", "0", "0.0") else None


def _candidates_table(cal: Calibration) -> dict:
    summary, chosen = cal.summary, cal.summary["chosen_T"]
    # one calibration seed: its own value; over the classes the cost is measured on, so the columns give the cost
    mean = cal.curves.groupby(["T", "annotation"])[cost_column(cal.curves)].mean()
    rows = []
    for t, c in sorted(summary["candidates"].items(), key=lambda kv: int(kv[0])):
        rows.append({"T": int(t), "fine": cells.num(mean.get((int(t), "fine"))),
                     "coarse": cells.num(mean.get((int(t), "coarse"))), "cost": cells.pct(c["coarse_cost"]),
                     "moved_coarse": cells.moved(c["arm_moved"]),
                     "moved_fine": cells.moved(c.get("arm_moved_fine", "not checked (older rule)")),   # or "not run"
                     "chosen": chosen is not None and int(t) == chosen})
    return {"rows": rows,
            "measured": "mIoU over all classes" if cost_column(cal.curves) == "mIoU_all_classes" else "mIoU"}


def _arms_table(arms: pd.DataFrame) -> dict:
    if "annotation" not in arms:   # written before the rule checked fine labels: coarse-label rows only
        arms = arms.assign(annotation="coarse")
    rows = [{"T": int(r["T"]), "labels": str(r["annotation"]), "seed": int(r["seed"]), "base": cells.num(r["base mIoU"]),
             "arm": cells.num(r["ARM mIoU"]),
             "init": ", ".join(cells.num(r[c], 3) for c in ("W(-1) init", "W(0) init", "W(+1) init")),
             "end": ", ".join(cells.num(r[c], 3) for c in ("W(-1)", "W(0)", "W(+1)")),
             "shape_change": cells.num(r["shape change"], 3), "moved": _moved_flag(r["moved"]),
             "moved_at": cells.num(r.get("moved at"), 0), "pull": cells.num(r.get("shape pull at init"), 4),
             "suppression": cells.num(r["suppression"], 3)}
            for r in arms.sort_values(["T", "annotation", "seed"]).to_dict("records")]
    return {"rows": rows, "threshold": f"{MOVED_THRESHOLD:g}"}


def _power(cal: Calibration) -> dict:
    """Seeds for the report from the paired SD of ARM − base at the chosen T, on coarse (and fine) labels."""
    summary, chosen = cal.summary, cal.summary["chosen_T"]
    target = summary["power_target"]
    coarse = cal.arms if "annotation" not in cal.arms else cal.arms[cal.arms["annotation"] == "coarse"]
    n = int((coarse["T"] == chosen).sum()) if len(coarse) else 0
    fine = None
    if summary.get("paired_sd_fine") is not None:
        fine_mde = summary.get("mde_fine_at", {}).get(str(n))
        fine = {"sd": cells.num(summary["paired_sd_fine"]), "mde": None if fine_mde is None else cells.num(fine_mde)}
    needed = target["seeds_needed"]
    mde = sorted(summary["mde_at"].items(), key=lambda kv: int(kv[0]))
    return {"chosen": chosen, "n": n, "sd": cells.num(summary["paired_sd"]), "fine": fine, "effect": cells.num(target["effect"]),
            "alpha": f"{target['alpha']:g}", "power": f"{100 * target['power']:g}",
            "needed": (None if needed is None or math.isnan(needed)
                       else {"seeds": math.ceil(needed), "exact": f"{needed:.2f}"}),
            "mde": ", ".join(f"n = {k}: {cells.num(v)}" for k, v in mde)}


def calibration_section(cal: Calibration | None, out_dir: Path) -> dict:
    """The Calibration section: the rule, the chosen T (or why none), each candidate, the power sizing, the learning
    curve (drawn here: figures/calibration_learning_curve.png) and whether ARM learned at each T."""
    files = {"folder": CALIBRATION_DIR, "summary": SUMMARY_FILE, "curve": CURVE_FILE, "arm": ARM_FILE}
    if cal is None:
        return {"absent": {"folder_exists": (out_dir / CALIBRATION_DIR).is_dir()}, "files": files}
    from armlib.reproduction import plots   # matplotlib only when there is a figure to draw

    summary, chosen = cal.summary, cal.summary["chosen_T"]
    # The figure follows the page's pattern: plots saves figures/<key>.png and _figures inlines every PNG as
    # base64, so the page stays self-contained and the PNG sits beside the notebooks' figures.
    # the figure draws the quantity the cost is measured on (every class), as the table does
    fig = plots.calibration_learning_curve(cal.curves.assign(mIoU=cal.curves[cost_column(cal.curves)]), chosen,
                                           out_dir)
    plots.plt.close(fig)   # render may run many times in one process (tests, reproduce): no open figures pile up
    history = summary.get("rule_history")
    return {"absent": None, "files": files, "chosen": chosen,
            "seeds": ", ".join(map(str, sorted({int(s) for f in (cal.curves, cal.arms) if len(f) for s in f["seed"]}))),
            "rule": str(summary["rule"]), "history": str(history) if history else None,
            "missing": [str(x) for x in summary.get("missing_runs", [])], "candidates": _candidates_table(cal),
            "unresolved_iou": f"{UNRESOLVED_IOU:g}", "unresolved": [str(x) for x in summary["unresolved_classes"]],
            "power": _power(cal) if chosen is not None else None,
            "figures": cells.figures(out_dir / "figures", CALIBRATION_FIGURE),
            "arms": _arms_table(cal.arms) if len(cal.arms) else None}
