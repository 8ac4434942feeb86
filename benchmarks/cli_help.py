"""How fast `armlib --help` and every `armlib <command> --help` answer: a fresh interpreter each time, as a user's
shell starts one. Medians of --repeat runs, side by side with `python -c pass` (the interpreter's own start) and
`python -c "import torch"` (what a --help that imported torch would cost at least).

    python benchmarks/cli_help.py [--repeat 5]     # prints a table, writes benchmarks/results/cli_help.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from armlib.cli import COMMANDS  # noqa: E402  (light: no torch)


def seconds(argv: list[str], repeat: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([sys.executable, *argv], capture_output=True, env=env, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cli_help.json")
    args = parser.parse_args(argv)
    cases = {"python -c pass": ["-c", "pass"], "python -c 'import torch'": ["-c", "import torch"],
             "armlib --help": ["-m", "armlib", "--help"],
             **{f"armlib {name} --help": ["-m", "armlib", name, "--help"] for name in COMMANDS}}
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "repeat": args.repeat, "median_s": {name: round(seconds(a, args.repeat), 3) for name, a in cases.items()}}
    for name, value in result["median_s"].items():
        print(f"{value:7.3f} s  {name}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
