"""Measure how much the smoke results move between CPUs, and write the goldens' tolerances from it.

Runs the smoke reproduction once per variant (``KEY=VALUE`` environment settings: another oneDNN instruction
set, another thread count), compares each run's result files with ``tests/goldens/smoke/`` column by column, and
writes ``tests/goldens/tolerances.json``: the largest difference seen per (file, column) ("spread") and the
tolerance, ``FACTOR`` × that spread. Rerun it after ``make goldens``:

    .venv/bin/python tests/goldens/measure_spread.py --variant ONEDNN_MAX_CPU_ISA=AVX2 --variant OMP_NUM_THREADS=2

Runs on one CPU cannot see how another vendor's CPU rounds (goldens made on an AMD EPYC were off by up to 1.6
mIoU on an Intel Xeon, far outside the spread of either machine's own variants). ``--results-from MACHINE=DIR``
adds the result files of the same smoke reproduction made on another machine (e.g. the previous goldens, taken
from git with ``git archive REV tests/goldens/smoke``) as one more variant, compared on the columns both have.

A column whose values came out identical in every variant gets a tolerance of 0 (compared to the last printed
digit): the spread measured here is the only evidence this file rests on. Columns where a value was a number on
one CPU and undefined (NaN) on another are listed under "nan_mismatch"; only there may the two disagree so.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
GOLDENS = ROOT / "tests" / "goldens"
FACTOR = 3.0


def spread(golden_dir: Path, results_dir: Path, common_columns: bool = False
           ) -> tuple[dict[str, dict[str, float]], dict[str, set[str]]]:
    """(max |golden − ours| per numeric column of every golden CSV over the rows where both are numbers,
    {file: columns where one side is NaN and the other a number}: e.g. a loss bin that holds pixels on one CPU
    and none on another, whose mean is then undefined). ``common_columns``: results of an older layout (another
    machine's committed goldens) are compared on the columns both files have; the rows must still match."""
    out, undefined = {}, {}
    for path in sorted(golden_dir.glob("*.csv")):
        golden, ours = pd.read_csv(path), pd.read_csv(results_dir / path.name)
        if common_columns:
            shared = [c for c in golden.columns if c in ours.columns]
            golden, ours = golden[shared], ours[shared]
        if golden.shape != ours.shape or list(golden.columns) != list(ours.columns):
            raise SystemExit(f"{path.name}: shape {golden.shape} vs {ours.shape}, columns {list(golden.columns)} vs "
                             f"{list(ours.columns)}: not a tolerance question")
        out[path.name] = {}
        for column in golden.columns:
            if pd.api.types.is_numeric_dtype(golden[column]) and pd.api.types.is_numeric_dtype(ours[column]):
                g, o = golden[column].to_numpy(float), ours[column].to_numpy(float)
                both = ~np.isnan(g) & ~np.isnan(o)
                out[path.name][column] = float(np.max(np.abs(g - o)[both])) if both.any() else 0.0
                if np.any(np.isnan(g) != np.isnan(o)):
                    undefined.setdefault(path.name, set()).add(column)
    return out, undefined


def run_variant(env_settings: list[str], workdir: Path) -> Path:
    env = dict(os.environ, **dict(s.split("=", 1) for s in env_settings))
    out = workdir / "out"
    subprocess.run([sys.executable, "-m", "armlib", "reproduce", "--scale", "smoke", "--device", "cpu",
                    "--out-dir", str(out), "--runs-dir", str(workdir / "runs")], env=env, cwd=ROOT, check=True)
    return out / "results"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                        help="environment of one run (repeatable); the default environment always runs too")
    parser.add_argument("--results-from", action="append", default=[], metavar="MACHINE=DIR",
                        help="result files of the smoke reproduction made on another machine (repeatable)")
    args = parser.parse_args(argv)
    variants = [[]] + [v.split(",") for v in args.variant]
    others = []
    for item in args.results_from:
        machine, sep, folder = item.partition("=")
        if not sep or not Path(folder).is_dir():
            parser.error(f"--results-from {item!r}: expected MACHINE=DIR with DIR a folder of result CSVs")
        others.append((machine, Path(folder)))
    measured: dict[str, dict[str, float]] = {}
    undefined: dict[str, set[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = [(variant, lambda i=i, variant=variant: run_variant(variant, Path(tmp) / f"v{i}"), False)
                for i, variant in enumerate(variants)]
        runs += [([f"results from {machine}"], lambda folder=folder: folder, True) for machine, folder in others]
        for variant, results, older_layout in runs:
            found, nan_columns = spread(GOLDENS / "smoke", results(), common_columns=older_layout)
            for name, columns in found.items():
                for column, value in columns.items():
                    measured.setdefault(name, {})[column] = max(measured.get(name, {}).get(column, 0.0), value)
            for name, columns in nan_columns.items():
                undefined.setdefault(name, set()).update(columns)
            largest = max(v for c in found.values() for v in c.values())
            print(f"variant {variant or ['default']}: largest difference {largest:.3g}; defined on one side only: "
                  f"{ {n: sorted(c) for n, c in nan_columns.items()} or 'nothing'}")
    data = {"machine": f"{platform.machine()}, {_cpu()}",
            "variants": [v or ["default"] for v in variants] + [[f"results from {m}"] for m, _ in others],
            "factor": FACTOR, "spread": measured,
            "tolerance": {n: {c: FACTOR * v for c, v in cols.items()} for n, cols in measured.items()},
            "nan_mismatch": {n: sorted(c) for n, c in undefined.items()}}
    (GOLDENS / "tolerances.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return 0


def _cpu() -> str:
    from armlib.runs import cpu_name

    return cpu_name()


if __name__ == "__main__":
    sys.exit(main())
