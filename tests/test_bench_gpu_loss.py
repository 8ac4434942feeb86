"""benchmarks/bench_gpu_loss.py end to end on the CPU at a tiny size (smp ResNet18, 64×128): every variant timed in
interleaved rounds, paired ratios, the loss path, the profile packed when the target is missed, the JSON and the
markdown block. Its numbers mean nothing here; only the machinery is checked (no timing asserts)."""
import importlib.util
import json
import tarfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_gpu_loss", ROOT / "benchmarks" / "bench_gpu_loss.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_run(bench, tmp_path_factory):
    pytest.importorskip("segmentation_models_pytorch")   # the "bench" extra (part of "dev")
    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("gpu_loss")
    md = out / "BENCHMARKS.md"
    md.write_text(f"# Benchmarks\n\nProse.\n\n{bench.BEGIN}\nstale\n{bench.END}\n\nMore prose.\n")
    # A target no step can meet (ARM 1000 % faster than CE), so the profile path runs too.
    argv = ["--device", "cpu", "--tiny", "--no-compile", "--threads", "1", "--target-pct", "-1000",
            "--results-dir", str(out / "results"), "--trace-dir", str(out / "trace"), "--markdown", str(md)]
    try:
        result, path = bench.run(argv)
    finally:
        torch.set_num_threads(threads)
    return result, path, md, out


def test_every_variant_timed_in_paired_rounds(tiny_run, bench):
    result, path, _, _ = tiny_run
    assert json.loads(path.read_text()) == result and result["schema"] == bench.SCHEMA
    assert path.parent.name == "results" and not list(path.parent.glob("*.tmp"))
    assert set(result["variants"]) == {"ce", "arm_ref", "arm_fused", "trainer_base", "trainer_arm"}
    rounds = bench.TINY["rounds"]
    for name, e in result["variants"].items():
        assert e["n"] == rounds and len(e["times_ms"]) == rounds
        assert e["peak_gib"] is None                                  # CPU: no allocator statistics
        if name not in ("ce", "trainer_base"):
            base = result["variants"]["trainer_base" if name == "trainer_arm" else "ce"]
            ratios = [t / b for t, b in zip(e["times_ms"], base["times_ms"])]
            assert e["ratio_q1"] <= e["ratio_median"] <= e["ratio_q3"]
            assert min(ratios) - 1e-3 <= e["ratio_median"] <= max(ratios) + 1e-3   # times_ms are rounded
            assert e["overhead_pct"] == pytest.approx(100 * (e["ratio_median"] - 1))
            assert e["extra_peak_gib"] is None
            assert e.get("met", False) is False                        # the trainer row has no target of its own
    assert set(result["loss_path"]) >= {"ce", "arm_ref", "arm_fused"}
    assert result["loss_path"]["ce"]["n"] == bench.TINY["loss_steps"]


def test_missed_target_packs_a_profile_of_the_fused_path_and_ce(tiny_run, bench):
    result, _, _, out = tiny_run
    assert result["met"] is False
    assert result["profile"] == {"file": bench.TRACE_NAME, "variants": ["ce", "arm_fused"]}
    with tarfile.open(out / "trace" / bench.TRACE_NAME) as tar:
        names = set(tar.getnames())
        assert names == {"ce.trace.json", "ce.ops.txt", "arm_fused.trace.json", "arm_fused.ops.txt"}
        trace = json.load(tar.extractfile("arm_fused.trace.json"))
    assert trace["traceEvents"]                                       # a Chrome trace with events in it
    assert not list((out / "trace").glob(".*"))                       # no loose temporary files


def test_tiny_runs_stay_out_of_the_markdown(tiny_run, bench):
    _, _, md, _ = tiny_run
    text = md.read_text()
    assert text.startswith("# Benchmarks\n\nProse.") and text.rstrip().endswith("More prose.")
    assert "stale" not in text and "No GPU record yet" in text


def test_render_shows_a_gpu_record(tiny_run, bench, tmp_path):
    result, _, _, _ = tiny_run
    gpu = json.loads(json.dumps(result))
    gpu["settings"]["tiny"] = False
    gpu["device"].update(type="cuda", name="NVIDIA H200", cuda="13.0", cudnn=91000)
    (tmp_path / "nvidia-h200-2026-12-03.json").write_text(json.dumps(gpu))
    md = tmp_path / "B.md"
    bench.run(["--render", "--results-dir", str(tmp_path), "--markdown", str(md)])
    text = md.read_text()
    assert "### NVIDIA H200" in text and "| arm_fused |" in text and "missed" in text
    assert "Trainer step (armlib.train.train_one_step on configs/gpu.yaml" in text and "| trainer_" not in text


def test_skipped_with_one_line_without_cuda(bench, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.run([]) == (None, None)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("bench_gpu_loss: skipped: no CUDA device")
