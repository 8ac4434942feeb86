"""The paper's printed numbers (``armlib/paper_results.json``), read-only.

Values are as printed; where the paper printed NaN or "-" the value is NaN. The file's ``_notes`` list the
paper's inconsistencies we found (e.g. a printed improvement that disagrees with its own rows).
"""
from __future__ import annotations

import json
import math
from functools import cache
from importlib import resources

METRICS = ("aAcc", "mAcc", "mIoU")


@cache
def _tables() -> dict:
    return json.loads(resources.files("armlib.reproduction").joinpath("paper_results.json").read_text())["tables"]


def load_paper_results() -> dict:
    """{table: {"title", "dataset", "rows": {row: {"label", metric: value|None}}}} (a fresh copy)."""
    return json.loads(json.dumps(_tables()))


def paper_value(table: str, row: str, metric: str) -> float:
    """The paper's number (NaN where it printed NaN or '-'). Raises KeyError for a row the paper lacks."""
    tables = _tables()
    if table not in tables or row not in tables[table]["rows"]:
        raise KeyError(f"no row {row!r} in the paper's {table!r}")
    value = tables[table]["rows"][row].get(metric)
    return math.nan if value is None else float(value)


def paper_label(table: str, row: str) -> str:
    """The paper's label of a row (the row key itself for rows the paper lacks)."""
    return _tables().get(table, {}).get("rows", {}).get(row, {}).get("label", row)


def table_metrics(table: str) -> tuple[str, ...]:
    """The metric columns of a table: aAcc/mAcc/mIoU, or Table 6's fine/coarse/ade20k (TTA mIoU)."""
    return tuple(_tables().get(table, {}).get("metrics", METRICS))
