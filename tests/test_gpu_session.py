"""The GPU session's scripts on the CPU (they run unchanged on the lent GPU machine): scripts/gpu_reference.py's
chunks at smoke scale (records packed, unpacked, resumed, not retrained; a chunk cut by its cap stops its runs and
packs what finished), its plan, calibration gate and list of sections that read checkpoints; scripts/gpu_session.sh's
order, files and refusals with stub pieces; the committed gpu records' keys and scripts/gpu_calibration.sh's call;
scripts/gpu_seeds.py's sizing. No timing asserts."""
import ast
import importlib.util
import inspect
import json
import math
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_reference.py"


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ref():
    return load(SCRIPT)


# -- which sections read checkpoints --------------------------------------------------------------------------

READERS = {"load_run", "evaluate_run", "iterate_predictions"}   # armlib.reproduction.analysis: the functions that load a checkpoint


def _called_names(fn) -> set[str]:
    tree = ast.parse(inspect.getsource(fn).lstrip())
    return {n.func.id if isinstance(n.func, ast.Name) else n.func.attr for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, (ast.Name, ast.Attribute))}


def _reaches_a_reader(fn, seen=None) -> bool:
    """Whether ``fn`` calls a checkpoint reader, directly or through functions of its own module,
    armlib.reproduction.report_sections._runs and armlib.reproduction.experiments (by name: the modules' own functions have distinct names)."""
    from armlib.reproduction import experiments
    from armlib.reproduction.report_sections import _runs

    seen = set() if seen is None else seen
    names = _called_names(fn)
    if names & READERS:
        return True
    for name in names - seen:
        seen.add(name)
        for module in (sys.modules[fn.__module__], _runs, experiments):
            inner = getattr(module, name, None)
            if inspect.isfunction(inner) and inner.__module__ == module.__name__ and _reaches_a_reader(inner, seen):
                return True
    return False


def test_checkpoint_sections_are_the_sections_whose_notebook_reloads_a_model(ref):
    """Checkpoints never come back from the GPU machine, so a section missing from CHECKPOINT_SECTIONS would find
    no checkpoint of a run trained in an earlier chunk. Its notebook's one <section>.measure call decides."""
    import importlib

    from armlib.reproduction import executors, reproduce
    from armlib.reproduction.report_sections import learned_curve, paper_tables

    assert not _reaches_a_reader(executors.run_table)        # so paper_tables.measure reads one for table6 only
    assert _reaches_a_reader(paper_tables._table6_records)
    reading = set()
    for key in reproduce.NOTEBOOKS:
        source = "".join("".join(c["source"]) for c in json.loads(reproduce.notebook_path(key).read_text())["cells"]
                         if c["cell_type"] == "code")
        (module, table), = set(re.findall(r"(\w+)\.measure\((?:'(\w+)')?", source))
        measure = importlib.import_module(f"armlib.reproduction.report_sections.{module}").measure
        if (table == "table6") if module == "paper_tables" else _reaches_a_reader(measure):
            reading.add(key)
    assert reading == set(ref.CHECKPOINT_SECTIONS)
    # Which runs' checkpoints: the figure sections' one need (the base model, first seed), the learned curve's
    # ARM rows of Table 2 (it reads no checkpoint of Table 2's base rows), Table 6 every run (cached per run).
    from armlib.reproduction.sections import get_section
    for key, table, rows, first_only in ref.CHECKPOINT_READS:
        if key == "learned_curve":
            assert f'r.row == "{rows[0]}"' in inspect.getsource(learned_curve.measure)
        else:
            (need,) = get_section(key).needs
            assert (need.table, need.rows, need.first_seed_only) == (table, rows, first_only), key
    assert {k for k, *_ in ref.CHECKPOINT_READS} | {ref.TTA_SECTION} == set(ref.CHECKPOINT_SECTIONS)
    assert 'cache = run.out / "tta.json"' in inspect.getsource(paper_tables.tta_metrics)   # what TTA_FILE names


def test_the_gpu_plan_trains_tables_first_then_table_6_then_the_runs_whose_checkpoints_figures_read(ref):
    from armlib.reproduction import experiments, reproduce
    from armlib.reproduction.sections import get_scale

    first, tta, last = ref.plan("gpu", list(reproduce.NOTEBOOKS), "runs", "data")
    every = experiments.plan_sections(reproduce.NOTEBOOKS, get_scale("gpu"), "runs", None, "data")
    assert sorted(str(r.out) for r in first + tta + last) == sorted(str(r.out) for r in every)   # each run once
    # The base model at seed 0 (Figs. 2, 4, 5, the Hölder fit) and ARM's Table 2 runs at the five primary seeds
    # (the learned curve); Table 6's base and ARM on coarse labels are among them, its other six runs are not.
    assert sorted((r.out.name.split("-")[0], r.seed) for r in last) == [
        ("deeplabv3plus_r101", 0)] + [("deeplabv3plus_r101_reweight", s) for s in range(5)]
    assert len(tta) == 6 and all(r.seed == 0 for r in tta)
    table6 = {str(r.out) for r in experiments.plan("table6", get_scale("gpu"), "runs", None, "data")}
    assert {str(r.out) for r in tta} == table6 - {str(r.out) for r in last}


def test_a_run_is_packed_when_what_its_section_needs_came_with_it(ref, tmp_path):
    from armlib.reproduction.experiments import Run

    def run(name, *files):
        r = Run(name, 0, {}, tmp_path / name)
        r.out.mkdir()
        for f in files:
            (r.out / f).write_text("{}")
        return r

    first = [run("a", "record.json"), run("b")]
    tta = [run("c", "record.json", "tta.json"), run("d", "record.json")]
    last = [run("e", "record.json", "checkpoint.pt")]
    assert [r.row for r in ref.finished(first, tta, last, sections_done=False)] == ["a", "c"]
    assert [r.row for r in ref.finished(first, tta, last, sections_done=True)] == ["a", "c", "e"]


# -- the calibration gate -------------------------------------------------------------------------------------

def test_the_gate_holds_while_the_committed_gpu_calibration_is_incomplete(ref):
    reason = ref.calibration_gate("gpu")
    assert reason is not None and "incomplete" in reason


@pytest.mark.parametrize("calibration, expected", [
    ({"chosen_T": 1500, "missing_runs": [], "unresolved_classes": []}, None),
    ({"chosen_T": 3000, "missing_runs": [], "unresolved_classes": []}, "chose T = 3000"),
    ({"chosen_T": 1500, "missing_runs": [], "unresolved_classes": ["traffic sign"]}, "unresolved_classes"),
    ({"chosen_T": None, "missing_runs": [], "unresolved_classes": []}, "incomplete"),
    ({"chosen_T": 1500, "missing_runs": ["arm_coarse@1500 seed 100"], "unresolved_classes": []}, "incomplete"),
    (None, "does not exist"),
])
def test_the_gate_opens_when_the_config_uses_the_chosen_t_and_unresolved_classes(ref, monkeypatch, tmp_path,
                                                                                calibration, expected):
    from armlib.config import load_config
    from armlib.reproduction.sections import get_scale

    cfg = load_config(get_scale("gpu").config_for({}))
    assert cfg.iterations == 1500 and cfg.unresolved_classes == ()   # what the cases above are written against
    monkeypatch.setattr(ref.calibration, "committed_dir", lambda scale: tmp_path)
    if calibration is not None:
        (tmp_path / "calibration.json").write_text(json.dumps(calibration))
    reason = ref.calibration_gate("gpu")
    assert reason is None if expected is None else expected in reason


# -- chunks at smoke scale ------------------------------------------------------------------------------------

ONLY = ["table1", "loss_vs_variance"]   # 3 runs whose records suffice, 1 (the base) whose checkpoint Fig. 5 reads


def chunk(tmp: Path, name: str, archive: Path, seconds: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, str(SCRIPT), "--scale", "smoke", "--only", *ONLY, "--seconds",
                           str(seconds), "--runs-dir", str(tmp / name / "runs"), "--data-root", str(tmp / "data"),
                           "--out", str(tmp / name / "out"), "--archive", str(archive), "--device", "cpu",
                           "--jobs", "2"], env=env, capture_output=True, text=True, timeout=1200)


def records(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        assert not [n for n in names if n.endswith(".pt") or n.endswith(".tmp") or "/." in n], names
        return {n: tar.extractfile(n).read() for n in names if n.endswith("/record.json")}


@pytest.mark.slow
def test_chunks_pack_unpack_and_resume_without_retraining(ref, tmp_path):
    # A: the whole (reduced) reference in one chunk: every run and both sections.
    a = chunk(tmp_path, "a", tmp_path / "none.tar.gz")
    assert a.returncode == ref.DONE, a.stdout + a.stderr
    done = records(tmp_path / "a" / "out" / ref.RUNS_ARCHIVE)
    assert len(done) == 4 and all(n.startswith("runs/smoke/") for n in done)
    with tarfile.open(tmp_path / "a" / "out" / ref.SECTIONS_ARCHIVE) as tar:
        files = set(tar.getnames())
    assert {"results/table1.csv", "results/loss_vs_variance.csv", "figures/loss_vs_variance.png"} <= files

    # B, a fresh machine: the records of a chunk cut after two of the three record-only runs. Those two are reused
    # (not retrained: the same bytes, extracted before B started), the rest is trained, and Fig. 5's section runs
    # from the base run's checkpoint of this chunk while Table 1 needs no checkpoint of the unpacked runs.
    first, tta, last = ref.plan("smoke", ONLY, str(tmp_path / "a" / "runs"), str(tmp_path / "data"))
    assert len(first) == 3 and not tta and [r.row for r in last] == ["base"]
    kept = {f"runs/smoke/{r.out.name}/record.json" for r in first[:2]}
    partial = tmp_path / "partial.tar.gz"
    with tarfile.open(tmp_path / "a" / "out" / ref.RUNS_ARCHIVE) as src, tarfile.open(partial, "w:gz") as dst:
        for m in src.getmembers():
            if any(m.name.startswith(k.removesuffix("record.json")) for k in kept):
                dst.addfile(m, src.extractfile(m))
    started = time.time()
    b = chunk(tmp_path, "b", partial)
    assert b.returncode == ref.DONE, b.stdout + b.stderr
    assert "2 finished run(s) unpacked" in b.stdout and "2 of 3 run(s) reused" in b.stdout
    after = records(tmp_path / "b" / "out" / ref.RUNS_ARCHIVE)
    assert set(after) == set(done)
    for name in kept:
        assert after[name] == done[name]
        assert (tmp_path / "b" / name).stat().st_mtime < started

    # C, another fresh machine, every record committed: nothing to train, nothing to redo.
    c = chunk(tmp_path, "c", tmp_path / "b" / "out" / ref.RUNS_ARCHIVE)
    assert c.returncode == ref.DONE and "all 4 runs finished already" in c.stdout, c.stdout + c.stderr
    assert not list((tmp_path / "c" / "runs").glob("smoke/*/checkpoint.pt"))


@pytest.mark.slow
def test_a_chunk_cut_by_its_cap_stops_its_runs_and_packs_what_finished(ref, tmp_path):
    psutil = pytest.importorskip("psutil")
    cut = chunk(tmp_path, "cut", tmp_path / "none.tar.gz", seconds=3)
    assert cut.returncode == ref.CUT, cut.stdout + cut.stderr
    assert "cut off (SIGTERM" in cut.stdout
    records(tmp_path / "cut" / "out" / ref.RUNS_ARCHIVE)              # a valid archive (of the runs that finished)
    assert not (tmp_path / "cut" / "out" / ref.SECTIONS_ARCHIVE).exists()
    runs = str(tmp_path / "cut" / "runs")
    left = [p.pid for p in psutil.process_iter(["cmdline"]) if any(runs in a for a in p.info["cmdline"] or [])]
    assert not left, f"training processes left running: {left}"


# -- gpu_session.sh -------------------------------------------------------------------------------------------

def session(tmp_path, cap: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OUT": str(tmp_path / "out"), "SECONDS_CAP": cap, "PATH": os.environ["PATH"]}
    return subprocess.run(["bash", str(ROOT / "scripts" / "gpu_session.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_session_refuses_a_cap_the_device_cannot_give(tmp_path):
    result = session(tmp_path, "600")
    assert result.returncode == 1 and "SECONDS_CAP must be whole seconds in 60..540" in result.stderr
    assert not (tmp_path / "out").exists()


def test_the_session_trains_nothing_without_a_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    result = session(tmp_path, "120")
    assert result.returncode == 1 and "no CUDA device" in result.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["session.log"]


# -- committed records keep their keys; gpu_calibration.sh still resumes them -----------------------------------

def committed_records() -> list[tuple[str, dict]]:
    out = []
    for archive in sorted((ROOT / "reports" / "gpu").glob("*_runs.tar.gz")):
        with tarfile.open(archive) as tar:
            out += [(m.name, json.load(tar.extractfile(m))) for m in tar.getmembers()
                    if m.name.endswith("/record.json")]
    return out


def test_every_committed_gpu_record_still_maps_to_its_folders_key():
    """A GPU session resumes from the committed records only while today's code gives each its folder's key: a
    config field added since (a GPU-resident data path, say) must default to the committed behaviour and be listed
    in armlib.runs.OPT_IN_FIELDS (or armlib.config.RUNTIME_ONLY, if it cannot change a number), or every record
    is orphaned."""
    from armlib.config import TrainConfig
    from armlib.runs import run_key

    found = committed_records()
    assert len(found) >= 15                                           # the calibration cut off on 2026-11-30
    for name, record in found:
        folder = Path(name).parent.name
        experiment, seed = folder.rsplit("_s", 1)
        config = TrainConfig.from_dict(record["config"]).to_dict()   # today's fields, new ones at their default
        assert config["seed"] == int(seed), name
        assert experiment.rsplit("-", 1)[1] == run_key({**config, "seed": None}), (
            f"{name}: today's run key differs from the committed one; a field added to TrainConfig must be in "
            "armlib.runs.OPT_IN_FIELDS with the default that reproduces the committed runs (or the change is "
            "meant: bump TRAINING_CODE_VERSION and rerun the calibration on a GPU)")


def test_gpu_calibration_sh_calls_calibrate_as_the_committed_calibration_ran(tmp_path):
    """The script's `armlib calibrate` line parses with today's CLI and asks for the committed calibration's scale
    and candidate T, and the committed archive unpacks where calibrate looks for its runs."""
    import argparse

    from armlib import cli
    from armlib.reproduction import calibration
    from armlib.commands import flatten

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python3").write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" > {tmp_path}/argv\n')
    (fake / "python3").chmod(0o755)
    (tmp_path / "reports").symlink_to(ROOT / "reports")
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "OUT": str(tmp_path / "out"), "SECONDS_CAP": "30"}
    result = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_calibration.sh")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    argv = (tmp_path / "argv").read_text().splitlines()
    assert argv[:3] == ["-m", "armlib", "calibrate"]
    parser = argparse.ArgumentParser()
    cli.add_command_arguments("calibrate", parser)
    args = parser.parse_args(argv[3:])
    committed = json.loads((calibration.committed_dir("gpu") / calibration.SUMMARY_FILE).read_text())
    assert args.scale == "gpu" and not args.from_records
    assert sorted(flatten(args.iterations)) == sorted(map(int, committed["candidates"]))
    # The script runs from the repository's root, where calibrate's default runs folder (the repository's runs/)
    # is the ./runs it unpacks into; here it ran in tmp_path, so that is where the records must be.
    assert Path(args.runs_dir) == ROOT / "runs"
    unpacked = sorted(p.parent.name for p in (tmp_path / "runs" / "gpu" / "calibration").glob("*/record.json"))
    assert len(unpacked) == len([n for n, _ in committed_records() if n.startswith("runs/gpu/calibration/")])
    assert f"runs with a record: {len(unpacked)}, packed into" in result.stdout


# -- sizing the gpu reporting seeds from the calibration --------------------------------------------------------

@pytest.fixture(scope="module")
def seeds_script():
    return load(ROOT / "scripts" / "gpu_seeds.py")


def test_seeds_wait_for_a_chosen_t(seeds_script, capsys):
    assert seeds_script.main([]) == 3                                 # the committed gpu calibration chose none
    assert "no T chosen yet" in capsys.readouterr().out


def test_the_pilot_is_the_calibrations_coarse_pairs_at_the_chosen_t(seeds_script):
    folder = ROOT / "reports" / "quick" / "calibration"
    summary = json.loads((folder / "calibration.json").read_text())
    t, n, sd = seeds_script.pilot(folder)
    assert (t, n) == (summary["chosen_T"], 5) and sd == pytest.approx(summary["paired_sd"], rel=1e-12)


def test_seeds_come_from_the_sd_upper_bound(seeds_script):
    from armlib.reproduction import stats

    if not hasattr(stats, "sd_upper_bound"):
        pytest.skip("armlib.reproduction.stats.sd_upper_bound (issue 22's sizing rule) is not on this branch yet")
    s = seeds_script.size(0.38, 5, 1.0, 0.05)
    assert s["sd_upper"] > 0.38                                        # an upper bound, from 4 degrees of freedom
    assert s["seeds_needed"] == pytest.approx(stats.seeds_needed(1.0, s["sd_upper"], alpha=0.05, power=0.8))
    assert s["seeds"] == max(5, math.ceil(s["seeds_needed"]))
    assert seeds_script.size(5.0, 5, 1.0, 0.05)["seeds"] > 5           # a noisy pilot asks for more than the floor


FAKE_PYTHON = """#!/bin/bash
# python3 on a pretend GPU machine: the pieces are stubs that log their arguments; small helper scripts run for real.
echo "$*" >> "$CALLS"
case "$*" in
  *torch.cuda.is_available*) exit 0 ;;
  *"import torch"*) echo "torch 0.0 cuda True" ;;
  *bench_gpu_loss.py*) echo '{}' > "$OUT/nvidia-h200-2026-12-03.json"; echo "[bench_gpu_loss] target met; wrote it" ;;
  *"-m armlib calibrate"*) mkdir -p runs/gpu/calibration/new_s105 && echo '{}' > runs/gpu/calibration/new_s105/record.json ;;
  *gpu_reference.py*) echo "reference: not started: the calibration is incomplete"; exit 3 ;;
  *) exec {real} "$@" ;;
esac
"""


def fake_session(tmp_path, bench_committed: bool) -> tuple[subprocess.CompletedProcess, list[str]]:
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "python3").write_text(FAKE_PYTHON.replace("{real}", sys.executable))
    (bin_ / "python3").chmod(0o755)
    repo = tmp_path / "repo"
    (repo / "benchmarks" / "results" / "gpu_loss").mkdir(parents=True)
    (repo / "scripts").symlink_to(ROOT / "scripts")
    (repo / "reports").symlink_to(ROOT / "reports")
    if bench_committed:
        (repo / "benchmarks" / "results" / "gpu_loss" / "h200.json").write_text(
            json.dumps({"device": {"type": "cuda"}, "settings": {"tiny": False}}))
    env = {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}", "OUT": str(tmp_path / "out"), "SECONDS_CAP": "300",
           "CALLS": str(tmp_path / "calls")}
    result = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_session.sh")], cwd=repo, env=env,
                            capture_output=True, text=True, timeout=120)
    return result, (tmp_path / "calls").read_text().splitlines()


def test_a_session_runs_bench_calibration_and_reference_in_order_and_returns_few_files(tmp_path):
    result, calls = fake_session(tmp_path, bench_committed=False)
    assert result.returncode == 0, result.stdout + result.stderr
    pieces = [c for c in calls if "bench_gpu_loss.py" in c or "armlib calibrate" in c or "gpu_reference.py" in c]
    assert [[m in c for m in ("bench_gpu_loss.py", "-m armlib calibrate", "gpu_reference.py")] for c in pieces] == [
        [True, False, False], [False, True, False], [False, False, True]]
    assert "--results-dir" in pieces[0] and "--no-markdown" in pieces[0]
    assert "--require-calibration" in pieces[2]
    log = (tmp_path / "out" / "session.log").read_text()
    assert "bench: exit 0: [bench_gpu_loss] target met" in log
    assert "runs with a record: 16" in log                             # the 15 committed + the one "trained"
    assert "reference: exit 3; reference: not started" in log
    out = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert out == ["calibration_runs.tar.gz", "logs.tar.gz", "nvidia-h200-2026-12-03.json", "session.log"]
    with tarfile.open(tmp_path / "out" / "logs.tar.gz") as tar:
        assert {"./bench.log", "./calibration.log", "./reference.log"} <= set(tar.getnames())


def test_a_session_skips_the_bench_once_a_gpu_record_is_committed(tmp_path):
    result, calls = fake_session(tmp_path, bench_committed=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not [c for c in calls if "bench_gpu_loss.py" in c]
    assert "bench: skipped" in (tmp_path / "out" / "session.log").read_text()
