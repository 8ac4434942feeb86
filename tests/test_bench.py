"""Smoke test of benchmarks/bench_step.py at a tiny setting (tiny armlib model, smp ResNet18, 32×64), and of
its JSON/markdown plumbing. The real numbers live in BENCHMARKS.md; here only the machinery is checked."""
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_step", ROOT / "benchmarks" / "bench_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TINY = ["--device", "cpu", "--model", "deeplabv3plus_tiny", "--smp-encoder", "resnet18", "--batch", "2",
        "--height", "32", "--width", "64", "--steps", "2", "--warmup", "1", "--loss-steps", "2",
        "--matmul-size", "64", "--output-strides", "16", "8",
        "--threads", "1"]  # one thread: OpenMP barriers crawl when other jobs share the cores


@pytest.fixture(scope="module")
def tiny_run(bench, tmp_path_factory):
    pytest.importorskip("segmentation_models_pytorch")   # the "bench" extra (part of "dev")
    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("bench")
    md = out / "BENCHMARKS.md"
    md.write_text(f"# Benchmarks\n\nHand-written prose.\n\n{bench.BEGIN}\nstale\n{bench.END}\n\nMore prose.\n")
    try:
        result, path = bench.run([*TINY, "--results-dir", str(out / "results"), "--markdown", str(md)])
    finally:
        torch.set_num_threads(threads)                                  # leave the session as it was
    return result, path, md


def test_tiny_run_times_every_variant_at_both_strides(tiny_run):
    result, path, _ = tiny_run
    assert json.loads(path.read_text()) == result                       # what was returned is what was written
    assert not list(path.parent.glob("*.tmp"))                           # the atomic write left nothing behind
    assert path.name.startswith("cpu-") and "-reduced-" in path.name
    assert path.name.endswith(f"{result['date']}.json")
    assert set(result["steps"]) == {"os16", "os8"}
    for entries in result["steps"].values():
        assert set(entries) == {"ours_ce", "ours_arm_ref", "ours_arm_fused", "smp_ce", "ours_backbone",
                                "smp_backbone"}
        for e in entries.values():
            assert e["n"] == 2 and len(e["times_ms"]) == 2 and 0 < e["median_ms"] < 60_000
            assert e["peak_gib"] is None                                 # CPU: no allocator statistics
            assert e["flops"] > 0 and e["matmul_fraction"] > 0
        # same model for the three armlib variants → same FLOPs; smp is a different network
        assert len({entries[n]["flops"] for n in ("ours_ce", "ours_arm_ref", "ours_arm_fused")}) == 1
    assert result["steps"]["os8"]["smp_ce"]["flops"] > result["steps"]["os16"]["smp_ce"]["flops"]
    assert set(result["loss_path"]) >= {"ce", "arm_ref", "arm_fused"}
    lp = result["loss_path"]
    # device-independent memory claim: the fused path keeps less for backward than the reference
    assert lp["arm_fused"]["saved_bytes_per_pixel"] < lp["arm_ref"]["saved_bytes_per_pixel"]
    ov = result["arm_overhead"]
    assert ov["output_stride"] == 16
    assert math.isfinite(ov["ref"]["step_pct"]) and math.isfinite(ov["fused"]["loss_path_pct"])
    r = result["ratios"]["os16"]
    assert set(r) == {"ours_ce/smp_ce", "ours_backbone/smp_backbone", "ours_arm_ref/ours_ce",
                      "ours_arm_fused/ours_ce"}
    assert r["ours_ce/smp_ce"] == pytest.approx(
        result["steps"]["os16"]["ours_ce"]["median_ms"] / result["steps"]["os16"]["smp_ce"]["median_ms"])


def test_forward_flops_by_part_agree_with_the_whole_step_count(tiny_run):
    """Two independent FLOP measurements: the forward split by part, and forward + backward of the encoder
    alone. Backward costs 2× forward (input and weight gradients) except the first conv's input gradient,
    so the second lies between 2× and 3× the first."""
    result, _, _ = tiny_run
    for os_ in (16, 8):
        ours, theirs = (result["flops_forward_by_part"][f"{m}_os{os_}"] for m in ("ours", "smp"))
        assert set(ours) == {"backbone", "decode_head", "aux_head"}
        assert set(theirs) == {"encoder", "decoder", "segmentation_head"}
        steps = result["steps"][f"os{os_}"]
        for forward, name in ((ours["backbone"], "ours_backbone"), (theirs["encoder"], "smp_backbone")):
            assert 2 * forward < steps[name]["flops"] <= 3 * forward
        assert 2 * sum(ours.values()) < steps["ours_ce"]["flops"] <= 3 * sum(ours.values())


def test_markdown_block_is_regenerated_and_prose_kept(tiny_run, bench):
    result, path, md = tiny_run
    text = md.read_text()
    assert text.startswith("# Benchmarks\n\nHand-written prose.") and text.rstrip().endswith("More prose.")
    assert "stale" not in text and text.count(bench.BEGIN) == 1 and text.count(bench.END) == 1
    assert "(CPU, reduced size)" in text and "**ARM overhead:" in text and "| smp_ce |" in text
    # a second result file makes a second section, newest first; the markers are appended when missing
    other = dict(result, timestamp="1999-01-01T00:00:00", date="1999-01-01")
    bench.write_json(other, path.parent / "old.json")
    fresh = md.parent / "fresh.md"
    bench.update_markdown(fresh, path.parent)
    fresh_text = fresh.read_text()
    assert fresh_text.count("### ") == 2 and fresh_text.index(result["date"]) < fresh_text.index("1999-01-01")
    assert bench.BEGIN in fresh_text


def test_device_slug(bench):
    assert bench.device_slug({"type": "cuda", "name": "NVIDIA H100 80GB HBM3"}, False) == "nvidia-h100-80gb-hbm3"
    assert bench.device_slug({"type": "cpu", "name": "AMD EPYC", "threads": 2}, True) == "cpu-amd-epyc-2t-reduced"


@pytest.mark.parametrize("groups, transposed", [(1, False), (4, False), (8, False), (1, True), (4, True)])
def test_conv_backward_flops_count_each_gradient_as_one_forward(bench, groups, transposed):
    """Independent count: a direct loop over the multiplications of the forward conv (each one appears once
    in the input gradient and once in the weight gradient), and the corrected counter over a real backward."""
    n, c_in, c_out, k, h, w = 2, 8, 16, 3, 5, 7
    conv = (torch.nn.ConvTranspose2d(c_in, c_out, k, groups=groups) if transposed
            else torch.nn.Conv2d(c_in, c_out, k, padding=1, groups=groups))
    x = torch.randn(n, c_in, h, w, requires_grad=True)
    out = conv(x)
    # multiplications of the forward pass, by brute force: every (sample, output channel, position, input
    # channel of its group, kernel tap); for the transposed conv every input position scatters a kernel.
    positions = h * w if transposed else out.shape[2] * out.shape[3]
    mults = sum(1 for _ in range(n) for _ in range(c_out) for _ in range(positions)
                for _ in range(c_in // groups) for _ in range(k * k))
    with bench.flop_counter() as counter:
        conv(x).sum().backward()
    counts = counter.get_flop_counts()["Global"]
    assert counts[torch.ops.aten.convolution] == 2 * mults
    assert counts[torch.ops.aten.convolution_backward] == 2 * 2 * mults
