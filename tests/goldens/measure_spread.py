"""Measure how far the smoke results move when the CPU computes differently, and record it in spread.json.

Runs the smoke reproduction once per variant (``KEY=VALUE`` environment settings such as another oneDNN
instruction set or PyTorch's scalar kernels, and ``threads=N`` for N torch threads in every training run and
notebook), compares each variant's result files with ``tests/goldens/smoke/`` (tests/test_goldens.py's
``largest_relative_difference``) and writes ``tests/goldens/spread.json``: per variant its largest relative
difference, ``inf`` where any text, NaN or row differed, and apart the values of the cells checked by a bound
(``BOUNDED``). ``--left-out`` variants are run the same way and recorded apart: they were not looked at when the
design was argued, and show that it holds beyond what was measured.
Rerun it after ``make goldens``:

    .venv/bin/python tests/goldens/measure_spread.py --variant ONEDNN_MAX_CPU_ISA=AVX2 \\
        --variant ATEN_CPU_CAPABILITY=default --variant threads=2 \\
        --left-out ONEDNN_MAX_CPU_ISA=SSE41,ATEN_CPU_CAPABILITY=default,threads=3,MKL_CBWR=COMPATIBLE

The tolerance itself is not derived from these numbers (tests/test_goldens.py says why); the test only checks that
every spread recorded here lies at least 100× below it, and every bounded value 10× below its bound.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GOLDENS = ROOT / "tests" / "goldens"
sys.path.insert(0, str(ROOT / "tests"))

from test_goldens import BOUNDED, largest_relative_difference  # noqa: E402

# A reproduction whose training runs and notebooks use ``threads`` torch threads (the smoke scale fixes 1).
REPRODUCE_WITH_THREADS = """
import dataclasses, sys
from armlib.reproduction import sections
from armlib.cli import main
threads = int(sys.argv[1])
sections.SCALES["smoke"] = dataclasses.replace(sections.SCALES["smoke"], threads=threads)
sys.exit(main(sys.argv[2:]))
"""


def run_variant(settings: list[str], workdir: Path) -> Path:
    """The smoke reproduction under ``settings`` (``KEY=VALUE`` environment, ``threads=N``): its results folder."""
    env, threads = dict(os.environ), 1
    for setting in settings:
        key, _, value = setting.partition("=")
        if key == "threads":
            threads = int(value)
        else:
            env[key] = value
    env["OMP_NUM_THREADS"] = str(threads)   # the notebooks' own forward passes (the kernels' threads)
    out = workdir / "out"
    args = ["reproduce", "--scale", "smoke", "--device", "cpu", "--out-dir", str(out),
            "--runs-dir", str(workdir / "runs")]
    subprocess.run([sys.executable, "-c", REPRODUCE_WITH_THREADS, str(threads), *args], env=env, cwd=ROOT,
                   check=True)
    return out / "results"


def bounded_values(results: Path) -> dict[str, float]:
    """The value of each :data:`BOUNDED` cell in ``results`` (not in the spread: they are checked by a bound)."""
    import pandas as pd

    values = {}
    for file, claim, column in BOUNDED:
        frame = pd.read_csv(results / file)
        values[f"{file} {claim} {column}"] = float(frame.loc[frame["id"] == claim, column].iloc[0])
    return values


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                        help="settings of one measured run (repeatable); the default environment always runs too")
    parser.add_argument("--left-out", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                        help="settings of a run recorded apart, as a check the measurement did not see")
    args = parser.parse_args(argv)
    found: dict[str, dict] = {"variants": {}, "left_out": {}, "bounded": {}}
    tmp = Path(tempfile.mkdtemp(prefix="measure_spread_"))   # kept when a reproduction fails, to read its logs
    jobs = [("variants", "default")] + [("variants", v) for v in args.variant] + \
           [("left_out", v) for v in args.left_out]
    for i, (kind, variant) in enumerate(jobs):
        settings = [] if variant == "default" else variant.split(",")
        results = run_variant(settings, tmp / f"v{i}")
        spread = largest_relative_difference(GOLDENS / "smoke", results)
        found[kind][variant] = spread
        found["bounded"][variant] = bounded_values(results)
        print(f"{kind} {variant}: largest relative difference {spread:.3g}", flush=True)
    shutil.rmtree(tmp)
    from armlib.runs import cpu_name

    data = {"machine": f"{platform.machine()}, {cpu_name()}", **found}
    (GOLDENS / "spread.json").write_text(json.dumps(data, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
