"""What ``armlib calibrate`` leaves in ``<out_dir>/calibration/`` and how it is read: file names, the coarse cost
measured from the learning curve, and a checked reader.

:mod:`armlib.reproduction.calibration` trains the runs and writes these files; the report reads them through
:func:`read_calibration`, so rendering a calibrated scale imports nothing that trains.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from armlib.errors import UsageError
from armlib.paths import resolve

CURVE_FILE, ARM_FILE, SUMMARY_FILE = "learning_curve.csv", "arm_learns.csv", "calibration.json"
CALIBRATION_DIR = "calibration"   # reports/<scale>/<this>/ holds the three files; the report reads <out_dir>/<this>/
# A class is unresolved when its IoU stays below this (points) in every learning-curve run, fine labels included:
# 0.2 for person after 3200 fine-label steps is a few stray pixels, not a class the model has learnt.
UNRESOLVED_IOU = 1.0


def cost_column(curves: pd.DataFrame) -> str:
    """The learning-curve column the calibration measures: ``mIoU_all_classes`` where the file has it for every
    run, else ``mIoU`` (files written before that column existed, when mIoU covered every class)."""
    return ("mIoU_all_classes" if "mIoU_all_classes" in curves and curves["mIoU_all_classes"].notna().all()
            else "mIoU")


def coarse_cost(curves: pd.DataFrame, t: int) -> float:
    """(fine − coarse) / fine mIoU of the base model at T (a share, 0.13 = 13 %).

    Over every class (``mIoU_all_classes`` where the file has it): the calibration decides which classes are
    unresolved, so a rerun after the scale's config lists them must still measure the same quantity.
    """
    at = curves[curves["T"] == t].set_index("annotation")[cost_column(curves)]
    return float((at["fine"] - at["coarse"]) / at["fine"])


CURVE_COLUMNS = ("annotation", "T", "seed", "mIoU")
ARM_COLUMNS = ("T", "seed", "base mIoU", "ARM mIoU", "shape change", "moved", "suppression",
               "W(-1) init", "W(0) init", "W(+1) init", "W(-1)", "W(0)", "W(+1)")
_REWRITE = "rerun `armlib calibrate` to rewrite the folder"


@dataclass(frozen=True)
class Calibration:
    """The three files of ``<out_dir>/calibration/``, checked: ``summary`` is ``calibration.json``, ``curves``
    ``learning_curve.csv`` and ``arms`` ``arm_learns.csv`` (no rows when ARM was trained at no T)."""
    folder: Path
    summary: dict
    curves: pd.DataFrame
    arms: pd.DataFrame


def _key(mapping, key: str, path: Path, where: str = ""):
    if not isinstance(mapping, dict) or key not in mapping:
        raise UsageError(f"{path}: missing key {where}{key!r}; expected the keys `armlib calibrate` writes "
                         f"({_REWRITE})")
    return mapping[key]


def _number(value, path: Path, where: str, null: bool = True) -> float:
    """A JSON number (with ``null``, null too: an SD from one seed is NaN or null); UsageError naming ``where``
    otherwise."""
    if value is None and null:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{path}: {where} must be a number, got {value!r}")
    return float(value)


def _calibration_csv(path: Path, columns, rows_optional: bool = False) -> pd.DataFrame:
    """A calibration CSV with ``columns`` (not checked on a file without rows when ``rows_optional``)."""
    if not path.exists():
        raise UsageError(f"{path} is missing but {SUMMARY_FILE} is there: the folder is incomplete ({_REWRITE})")
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        frame = pd.DataFrame()
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not a readable CSV ({' '.join(str(exc).split())})") from exc
    if rows_optional and not len(frame):
        return frame
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise UsageError(f"{path}: missing column(s) {', '.join(map(repr, missing))}; expected the columns "
                         f"`armlib calibrate` writes ({_REWRITE})")
    for c in ("T", "seed", "mIoU", "base mIoU", "ARM mIoU"):
        if c in frame.columns and len(frame) and not pd.api.types.is_numeric_dtype(frame[c]):
            raise UsageError(f"{path}: column {c!r} must hold numbers, got {frame[c].dtype} values")
    return frame


def read_calibration(out_dir: str | os.PathLike) -> Calibration | None:
    """``<out_dir>/calibration/``'s files, checked before anything is rendered; None when there is no
    ``calibration.json`` (the scale was not calibrated).

    Checks what the report relies on: the keys of ``calibration.json`` (the power figures only when a T was
    chosen), the columns of both CSVs (``arm_learns.csv`` may have no rows: ARM is trained only at a T whose
    coarse cost meets the criterion), and that the coarse cost recorded per T is the one the learning curve gives
    (:func:`armlib.reproduction.calibration.coarse_cost`), so the table and the figure cannot come from two calibrations.

    Raises:
        UsageError: one line naming the file and the key or column: malformed JSON, a missing key or column, a
            CSV missing while ``calibration.json`` is there, or a recorded coarse cost the learning curve
            contradicts.
    """
    folder = resolve(out_dir) / CALIBRATION_DIR
    path = folder / SUMMARY_FILE
    if not path.exists():
        return None
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
                         f"{_REWRITE}") from exc
    for key in ("rule", "candidates", "chosen_T", "unresolved_classes"):
        _key(summary, key, path)
    candidates, chosen = summary["candidates"], summary["chosen_T"]
    if not isinstance(candidates, dict) or not candidates:
        raise UsageError(f"{path}: 'candidates' must map each candidate T to its coarse_cost and arm_moved, "
                         f"got {candidates!r}")
    for t, c in candidates.items():
        if not str(t).isdigit():
            raise UsageError(f"{path}: candidate {t!r} is not a number of steps T")
        _number(_key(c, "coarse_cost", path, f"candidates.{t}."), path, f"candidates.{t}.coarse_cost")
        # arm_moved_fine is absent from files written before the rule checked fine labels
        for key in ("arm_moved", "arm_moved_fine") if "arm_moved_fine" in c else ("arm_moved",):
            if not isinstance(_key(c, key, path, f"candidates.{t}."), str):
                raise UsageError(f"{path}: candidates.{t}.{key} must be \"k/n\" or \"not run\", got {c[key]!r}")
    if chosen is not None and (isinstance(chosen, bool) or not isinstance(chosen, int)):
        raise UsageError(f"{path}: 'chosen_T' must be a number of steps or null, got {chosen!r}")
    if not isinstance(summary.get("missing_runs", []), list):   # absent from files written before it existed
        raise UsageError(f"{path}: 'missing_runs' must be a list of runs, got {summary['missing_runs']!r}")
    if not isinstance(summary["unresolved_classes"], list):
        raise UsageError(f"{path}: 'unresolved_classes' must be a list of class names, "
                         f"got {summary['unresolved_classes']!r}")
    if chosen is not None:
        _number(_key(summary, "paired_sd", path), path, "paired_sd")
        if "paired_sd_fine" in summary:   # absent from files written before the rule checked fine labels
            _number(summary["paired_sd_fine"], path, "paired_sd_fine")
        target = _key(summary, "power_target", path)
        for key in ("effect", "alpha", "power", "seeds_needed"):
            _number(_key(target, key, path, "power_target."), path, f"power_target.{key}", null=key == "seeds_needed")
        mde = _key(summary, "mde_at", path)
        if not isinstance(mde, dict):
            raise UsageError(f"{path}: 'mde_at' must map a number of seeds n to the MDE, got {mde!r}")
        for n, value in mde.items():
            _number(value, path, f"mde_at.{n}")
        fine_mde = summary.get("mde_fine_at", {})   # absent from files written before the fine-label check
        if not isinstance(fine_mde, dict):
            raise UsageError(f"{path}: 'mde_fine_at' must map a number of seeds n to the MDE, got {fine_mde!r}")
        for n, value in fine_mde.items():
            _number(value, path, f"mde_fine_at.{n}")
    curves = _calibration_csv(folder / CURVE_FILE, CURVE_COLUMNS)
    arms = _calibration_csv(folder / ARM_FILE, ARM_COLUMNS, rows_optional=True)
    for t, c in candidates.items():
        try:
            measured = coarse_cost(curves, int(t))
        except (KeyError, TypeError, ValueError):   # no fine or no coarse run at T, or several of one
            raise UsageError(f"{folder / CURVE_FILE}: no single fine and coarse run at T = {t}, which "
                             f"{SUMMARY_FILE} lists as a candidate ({_REWRITE})") from None
        recorded = float(c["coarse_cost"]) if c["coarse_cost"] is not None else math.nan
        if not (math.isclose(measured, recorded, rel_tol=1e-9, abs_tol=1e-12)
                or (math.isnan(measured) and math.isnan(recorded))):
            raise UsageError(f"{path}: candidates.{t}.coarse_cost is {recorded:.6g} but {CURVE_FILE} gives "
                             f"{measured:.6g}; the files come from two calibrations ({_REWRITE})")
    return Calibration(folder, summary, curves, arms)
