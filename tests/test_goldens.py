"""The smoke result files the notebooks write, compared with the committed goldens at a measured tolerance.

Training on CPU is deterministic on one machine but not across them: oneDNN picks other kernels on AVX-512 than
on AVX2, the rounding differs and SGD amplifies it. So nbval compares only the cells that are the same on every
machine, and this file compares the numbers of ``tests/goldens/smoke/*.csv`` with the files a fresh run wrote
(``ARMLIB_GOLDEN_RESULTS``, set by ``make goldens-check``). Each numeric column has its own tolerance, 3× the
largest difference measured between runs of the goldens under other instruction sets and thread counts
(``tests/goldens/measure_spread.py`` → ``tests/goldens/tolerances.json``); text columns (rows, claim ids,
statuses, verdicts of comparisons) must match exactly.
"""
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

GOLDENS = Path(__file__).parent / "goldens"
SMOKE = GOLDENS / "smoke"
# Text that carries training numbers, or verdicts decided by them against a threshold: compared through the
# numbers they derive from, never as text.
DERIVED_TEXT = {"note", "verdict", "finding"}
RELATIVE_FLOOR = 1e-6   # printing and parsing a float64 through CSV; far below any training difference


def tolerances() -> dict:
    return json.loads((GOLDENS / "tolerances.json").read_text())["tolerance"]


def nan_mismatch() -> dict:
    return json.loads((GOLDENS / "tolerances.json").read_text()).get("nan_mismatch", {})


def compare(golden_dir: Path, results_dir: Path, tol: dict, undefined: dict | None = None) -> list[str]:
    """Every difference between the golden result files and ``results_dir``'s beyond tolerance, one line each.

    ``undefined`` ({file: columns}) lists where a number on one CPU may be NaN on another (measured: a loss bin
    empty under one instruction set); everywhere else NaN must meet NaN."""
    undefined = undefined or {}
    problems = []
    for golden_path in sorted(golden_dir.glob("*.csv")):
        path = results_dir / golden_path.name
        if not path.exists():
            problems.append(f"{golden_path.name}: not written")
            continue
        golden, ours = pd.read_csv(golden_path), pd.read_csv(path)
        if list(golden.columns) != list(ours.columns) or len(golden) != len(ours):
            problems.append(f"{golden_path.name}: shape or columns differ ({golden.shape} vs {ours.shape})")
            continue
        for column in golden.columns:
            g, o = golden[column], ours[column]
            if pd.api.types.is_numeric_dtype(g) and pd.api.types.is_numeric_dtype(o):
                g, o = g.to_numpy(float), o.to_numpy(float)
                allowed = tol.get(golden_path.name, {}).get(column, 0.0) + RELATIVE_FLOOR * (np.abs(g) + 1)
                one_nan = np.isnan(g) != np.isnan(o)
                excused = one_nan & (column in undefined.get(golden_path.name, ()))
                bad = ~((np.isnan(g) & np.isnan(o)) | (np.abs(g - o) <= allowed) | excused)
                for i in np.flatnonzero(bad):
                    problems.append(f"{golden_path.name} row {i} {column}: golden {g[i]!r}, ours {o[i]!r} "
                                    f"(tolerance {allowed[i]:.3g})")
            elif column not in DERIVED_TEXT:
                bad = ~((g.isna() & o.isna()) | (g.astype(str) == o.astype(str)))
                for i in np.flatnonzero(bad.to_numpy()):
                    problems.append(f"{golden_path.name} row {i} {column}: golden {g.iloc[i]!r}, ours {o.iloc[i]!r}")
    return problems


@pytest.mark.skipif("ARMLIB_GOLDEN_RESULTS" not in os.environ,
                    reason="needs a fresh smoke run's results (make goldens-check sets ARMLIB_GOLDEN_RESULTS)")
def test_smoke_results_match_the_goldens_within_the_measured_tolerance():
    from armlib import verdicts
    from armlib.paths import resolve

    verdicts.write(os.environ["ARMLIB_GOLDEN_RESULTS"])   # as reproduce does after the notebooks
    problems = compare(SMOKE, resolve(os.environ["ARMLIB_GOLDEN_RESULTS"]) / "results", tolerances(), nan_mismatch())
    assert not problems, "\n".join(problems[:40])


@pytest.mark.skipif("ARMLIB_GOLDEN_RESULTS" not in os.environ,
                    reason="needs a fresh smoke run's results (make goldens-check sets ARMLIB_GOLDEN_RESULTS)")
@pytest.mark.parametrize("table", ["table1", "table2", "table3", "table4", "table5", "noise_sweep"])
def test_every_seeds_file_recomputes_byte_equal_from_the_run_records(table, tmp_path):
    """A per-seed file is a function of its runs' records alone (nothing a notebook held in memory): read back
    from runs/nbval without training (Table 6 adds a TTA evaluation of each run, so it is left to its golden)."""
    from armlib import experiments, results, stats
    from armlib.paths import resolve
    from armlib.sections import get_scale

    runs = experiments.plan(table, get_scale("smoke"), resolve("runs/nbval"), None, resolve("data"))
    metrics = {"noise_sweep": ["mIoU"]}   # as report_sections/noise_sweep.py selects; the tables keep all three
    per_seed = stats.seed_results(experiments.collect(runs), table, *[metrics[table]] if table in metrics else [])
    results.write_section(tmp_path, table, per_seed=per_seed)
    written = resolve(os.environ["ARMLIB_GOLDEN_RESULTS"]) / "results" / f"{table}_seeds.csv"
    assert (tmp_path / "results" / f"{table}_seeds.csv").read_bytes() == written.read_bytes()


def test_every_golden_file_has_its_measured_tolerances():
    tol = tolerances()
    for path in sorted(SMOKE.glob("*.csv")):
        frame = pd.read_csv(path)
        # an all-empty text column (e.g. paper_status where the paper has every row) reads as NaN floats
        numeric = [c for c, t in frame.dtypes.items() if pd.api.types.is_numeric_dtype(t) and frame[c].notna().any()]
        assert set(numeric) <= set(tol.get(path.name, {})), path.name


def test_a_value_perturbed_beyond_its_tolerance_fails(tmp_path):
    """The comparison can fail: move one training-derived number by twice its tolerance, one text cell, one row."""
    tol = tolerances()
    for path in SMOKE.glob("*.csv"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    assert compare(SMOKE, tmp_path, tol) == []
    name = "table1_seeds.csv"
    frame = pd.read_csv(SMOKE / name)
    row = frame.index[frame.metric == "mIoU"][0]
    step = 2 * tol[name]["value"] + 1e-3
    frame.loc[row, "value"] += step
    frame.to_csv(tmp_path / name, index=False)
    assert any("value" in p for p in compare(SMOKE, tmp_path, tol))
    frame.loc[row, "value"] -= step - 0.5 * tol[name]["value"]   # within tolerance again
    frame.to_csv(tmp_path / name, index=False)
    assert compare(SMOKE, tmp_path, tol) == []
    frame.loc[row, "row"] = "renamed"
    frame.to_csv(tmp_path / name, index=False)
    assert any(" row " in p and "renamed" in p for p in compare(SMOKE, tmp_path, tol))
    frame.drop(index=row).to_csv(tmp_path / name, index=False)
    assert any("shape" in p for p in compare(SMOKE, tmp_path, tol))
    # a number that became NaN fails, unless that column was measured to do so
    frame = pd.read_csv(SMOKE / name)
    frame.loc[row, "value"] = float("nan")
    frame.to_csv(tmp_path / name, index=False)
    assert any("value" in p for p in compare(SMOKE, tmp_path, tol))
    assert compare(SMOKE, tmp_path, tol, {name: ["value"]}) == []


def test_tolerances_are_at_most_three_times_the_measured_spread():
    data = json.loads((GOLDENS / "tolerances.json").read_text())
    for name, columns in data["tolerance"].items():
        for column, value in columns.items():
            assert value <= 3 * data["spread"][name][column] + 1e-12, (name, column)
    assert not math.isnan(sum(v for c in data["spread"].values() for v in c.values()))
