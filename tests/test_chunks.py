"""Issue 31: a long reproduction in chunks (armlib.reproduction.chunks, `armlib reproduce --plan full`): each packs
what finished, with what its sections need, and the next continues from the archive on another machine."""
import dataclasses
import json
import subprocess
import tarfile

import pandas as pd
import pytest

from armlib import cli
from armlib.reproduction import chunks, experiments
from armlib.reproduction import sections as sx
from armlib.runs import cpu_name

ONLY = ["table1", "loss_vs_variance"]   # 4 smoke runs; Fig. 5 reads the base run's checkpoint


def members(archive):
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


@pytest.mark.slow
def test_a_chunk_packs_records_and_the_figure_checkpoint_and_the_next_machine_trains_nothing(tmp_path, capsys):
    archive = tmp_path / "runs.tar.gz"
    common = dict(data_root=str(tmp_path / "data"), device="cpu", jobs=2, archive=archive, keys=ONLY)
    a = chunks.chunk("smoke", str(tmp_path / "a" / "runs"), out_dir=tmp_path / "a" / "out", **common)
    assert a == chunks.DONE, capsys.readouterr().out
    packed = members(archive)
    records = sorted(n for n in packed if n.endswith("/record.json"))
    figure = chunks.figure_run(sx.get_scale("smoke"), str(tmp_path / "a" / "runs"), common["data_root"])
    assert len(records) == 4 and all(n.startswith("runs/smoke/") for n in records)
    assert [n for n in packed if n.endswith(".pt")] == [f"runs/smoke/{figure.out.name}/checkpoint.pt"]
    # ARM's curve history stays in the runs folder, out of the archive (no section reads it)
    assert list((tmp_path / "a" / "runs").rglob("curves.csv")) and not [n for n in packed if n.endswith("curves.csv")]
    assert (tmp_path / "a" / "out" / "index.html").exists()

    # another machine: everything from the archive, nothing trained, the same records, the sections made again
    capsys.readouterr()
    b = chunks.chunk("smoke", str(tmp_path / "b" / "runs"), out_dir=tmp_path / "b" / "out", **common)
    out = capsys.readouterr().out
    assert b == chunks.DONE and "4 finished run(s) unpacked" in out and "0 of 4 run(s) to train" in out, out
    again = members(archive)
    assert {n: again[n] for n in records} == {n: packed[n] for n in records}
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a" / "out" / "results" / "loss_vs_variance.csv"),
                                  pd.read_csv(tmp_path / "b" / "out" / "results" / "loss_vs_variance.csv"))


@pytest.mark.slow
def test_a_cached_loss_curve_is_the_curve_computed_afresh(tmp_path):
    from armlib.reproduction import executors
    from armlib.reproduction.report_sections import _runs

    sc = sx.get_scale("smoke")
    run = experiments.plan("table1", sc, tmp_path / "runs", seeds=[0], data_root=tmp_path / "data",
                           rows=("base",))[0]
    executors.execute([run], sc, data_root=tmp_path / "data", device="cpu", progress=False)
    fresh = _runs.train_loss_curve(run, "cpu")
    assert (run.out / _runs.LOSS_CURVE_FILE).exists()
    (run.out / "checkpoint.pt").unlink()          # the cache alone answers now
    pd.testing.assert_frame_equal(_runs.train_loss_curve(run, "cpu"), fresh, check_exact=True)


def fake_run(tmp_path, name, **record):
    out = tmp_path / name
    out.mkdir(parents=True)
    (out / "record.json").write_text(json.dumps({"status": "ok", **record}))
    return experiments.Run(name, 0, {}, out, name)


def test_a_run_is_finished_with_its_caches_and_the_figure_run_with_its_checkpoint(tmp_path):
    tta = fake_run(tmp_path, "t6")
    curve = fake_run(tmp_path, "arm", arm_curve={"v": [0], "w": [1]})
    failed = fake_run(tmp_path, "diverged", status="diverged")
    figure = fake_run(tmp_path, "base")
    assert not chunks.is_finished(tta, {chunks.TTA_FILE}, figure)
    (tta.out / chunks.TTA_FILE).write_text("{}")
    assert chunks.is_finished(tta, {chunks.TTA_FILE}, figure)
    assert not chunks.is_finished(curve, {"train_loss_curve.json"}, figure)
    assert chunks.is_finished(failed, {"train_loss_curve.json"}, figure)   # a failed run's section reads no curve
    assert not chunks.is_finished(figure, set(), figure)
    (figure.out / "checkpoint.pt").write_bytes(b"")
    assert chunks.is_finished(figure, set(), figure)


def test_the_forecast_uses_the_runs_this_cpu_finished(tmp_path):
    runs = [fake_run(tmp_path, f"r{i}", device_name=cpu_name(), wall_time_s=w) for i, w in enumerate((100, 130, 400))]
    runs.append(fake_run(tmp_path, "elsewhere", device_name="another CPU", wall_time_s=9.0))
    runs += [experiments.Run(f"todo{i}", 0, {}, tmp_path / f"todo{i}", "x") for i in range(5)]
    line = chunks.forecast(runs, jobs=2)
    assert line.startswith("5 of 9 run(s) to train; 130 s per run on this machine (median of 3, runs side by side)")
    assert "about 0.1 h at 2 job(s)" in line   # 3 rounds of two × 130 s
    # before this machine finished one, the machine that did stands in, named
    assert "9 s per run on another CPU (not measured on this machine yet)" in chunks.forecast(runs[3:], jobs=2)
    assert "not measured yet" in chunks.forecast(runs[4:], jobs=2)


def test_a_follow_up_plan_trains_only_once_committed(tmp_path, monkeypatch):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    monkeypatch.setattr(sx, "PLAN_DIR", tmp_path)
    sc = dataclasses.replace(sx.get_scale("quick-full"), followup="test_followup.json")
    assert chunks.uncommitted_plan(sc) is None                       # no plan yet: the pilot stage
    (tmp_path / "test_followup.json").write_text(json.dumps({"comparisons": []}))
    assert "is not committed" in chunks.uncommitted_plan(sc)
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "test_followup.json"], check=True)
    subprocess.run([*git, "commit", "-qm", "plan"], check=True)
    assert chunks.uncommitted_plan(sc) is None


@pytest.mark.parametrize("argv, expected", [
    (["reproduce", "--scale", "smoke", "--plan", "full"], "no full plan"),
    (["reproduce", "--plan", "full", "--seeds", "0"], "--seeds"),
    (["reproduce", "--minutes", "5"], "--minutes"),
])
def test_the_full_plans_options_are_refused_in_one_line(argv, expected, capsys, tmp_path):
    assert cli.main([*argv, "--runs-dir", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err


def test_the_full_plans_dry_run_lists_its_runs_and_the_forecast(capsys, tmp_path):
    assert cli.main(["reproduce", "--plan", "full", "--dry-run", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    n = len(experiments.plan_sections(list(sx.SECTION_KEYS), sx.get_scale("quick-full"), tmp_path))
    assert f"scale quick-full: {n} run(s)" in out and f"{n} of {n} run(s) to train" in out


def test_the_full_scale_trains_a_pilot_of_seeds_0_to_4_for_every_row():
    full = sx.get_scale("quick-full")
    for table in ("table1", "table2", "table4", "noise_sweep"):
        for name in sx.table_rows(table, full):
            assert set(range(5)) <= set(full.seeds_for(name, table)), (table, name)
    quick = sx.get_scale("quick")
    assert quick.seeds_for("kl", "table4") == (0,)   # the reference's plan is unchanged


def test_the_pilot_stage_ends_with_its_seeds_files_and_a_plan_sized_from_them(tmp_path, monkeypatch):
    """write_followup: the pilot seeds' rows of every per-seed file (the first plan's seeds left out) go to
    reports/<scale>/pilot/, and the plan written beside the first is make_followup_plan of exactly those."""
    import shutil

    from armlib.reproduction import design
    from test_followup import fake_pilot

    out = tmp_path / "out"
    fake_pilot(out / "results")
    extra = pd.read_csv(out / "results" / "table4_seeds.csv").query("seed == 0").assign(seed=7, value=0.0)
    extra.to_csv(out / "results" / "table4_seeds.csv", mode="a", header=False, index=False)   # a first-plan seed
    plans = tmp_path / "plans"
    plans.mkdir()
    shutil.copy(sx.PLAN_DIR / "quick.json", plans / "quick.json")
    monkeypatch.setattr(sx, "PLAN_DIR", plans)
    monkeypatch.setattr(chunks, "resolve", lambda p: tmp_path / p)
    sc = sx.get_scale("quick-full")
    target = chunks.write_followup(sc, out)
    assert target == plans / "quick_full.json"
    pilot = tmp_path / "reports" / "quick-full" / "pilot"
    assert sorted(pd.read_csv(pilot / "table4_seeds.csv").seed.unique()) == [0, 1, 2, 3, 4]
    written, again = json.loads(target.read_text())["comparisons"], design.make_followup_plan("quick-full", pilot)["comparisons"]
    for a, b in zip(written, again):
        assert a == b, {k: (a[k], b[k]) for k in a if a[k] != b[k]}
    assert len(written) == len(again)
    assert sx.followup_plan(sc) is not None   # the next chunk trains its seeds (once committed)


def test_a_chunk_that_fails_still_packs_every_run_that_finished(tmp_path, monkeypatch, capsys):
    """A bug after training (a cache that raised ImportError) once left the archive unwritten: now the error is one
    line, the status is FAILED, and every run that finished is packed all the same."""
    from armlib.reproduction import executors

    def train(part, sc, **kw):
        for r in part:
            r.out.mkdir(parents=True, exist_ok=True)
            (r.out / "record.json").write_text(json.dumps({"status": "ok"}))
            (r.out / "checkpoint.pt").write_bytes(b"x")

    def broken(run, needs, sc, device):
        raise ImportError("cannot import name 'x'")

    monkeypatch.setattr(executors, "execute", train)
    monkeypatch.setattr(chunks, "evaluate_caches", broken)
    archive = tmp_path / "runs.tar.gz"
    status = chunks.chunk("smoke", str(tmp_path / "runs"), data_root=str(tmp_path / "data"), out_dir=tmp_path / "out",
                          device="cpu", jobs=2, archive=archive, keys=["table1"])
    out = capsys.readouterr().out
    assert status == chunks.FAILED and "chunk: error: ImportError: cannot import name 'x'" in out
    sc = sx.get_scale("smoke")
    runs = experiments.plan_sections(["table1"], sc, tmp_path / "runs")
    needs = chunks.cached_runs(sc, str(tmp_path / "runs"), str(tmp_path / "data"))
    uncached = [r for r in runs if not needs.get(str(r.out))]   # the others lack their caches: not finished
    assert 0 < len(uncached) < len(runs)
    assert sorted(n for n in members(archive) if n.endswith("/record.json")) == \
        sorted(f"runs/smoke/{r.out.name}/record.json" for r in uncached)
