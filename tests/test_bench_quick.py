"""Smoke test of benchmarks/bench_quick.py at the smoke scale: its plumbing and its built-in identity checks.
The real numbers live in BENCHMARKS.md; timings are never asserted here."""
import importlib.util
import json
import math
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_quick", ROOT / "benchmarks" / "bench_quick.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_smoke_run_writes_json_and_its_markdown_block(tmp_path):
    bench = load_bench()
    md = tmp_path / "BENCHMARKS.md"
    md.write_text(f"# Benchmarks\n\nProse before.\n\n{bench.BEGIN}\nstale\n{bench.END}\n\nProse after.\n")
    threads = torch.get_num_threads()
    result, path = bench.run(["--config", str(ROOT / "configs" / "smoke.yaml"), "--rounds", "2", "--warmup", "1",
                              "--matmul-size", "64", "--results-dir", str(tmp_path / "results"),
                              "--markdown", str(md), f"data_root={tmp_path / 'data'}",
                              "cpu_float64=false"])   # the quick scale's float32 step, at smoke size
    assert torch.get_num_threads() == threads                      # the session's threads are restored
    assert json.loads(path.read_text()) == result and path.name.startswith("quick-cpu-")
    assert result["before_after_identical"]                          # the replaced paths compute the same numbers
    assert all(math.isfinite(v) and v > 0 for v in result["ratios"].values())
    assert set(result["lever_rel_l2"]) == set(bench.LEVERS)
    text = md.read_text()
    assert "stale" not in text and "Prose before." in text and "Prose after." in text
    assert "| whole step |" in text and "bit-identical parameters" in text
