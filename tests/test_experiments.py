"""Experiment grids: every table cell is a valid config, shared rows share runs, runs resume and diverge."""
import dataclasses
import json
import os
import subprocess
import sys

import pytest

from armlib.reproduction import experiments as ex
from armlib.reproduction import executors
from armlib.config import RUNTIME_ONLY, load_config
from armlib.paths import REPO_ROOT
from armlib.reproduction.reproduce import NOTEBOOKS, select
from armlib.reproduction import sections as sx
from armlib.runs import run_key


@pytest.mark.parametrize("scale", list(sx.SCALES))
@pytest.mark.parametrize("table", list(sx.TABLES) + ["table6", "noise_sweep"])
def test_every_row_is_a_valid_config(scale, table, tmp_path):
    sc = sx.get_scale(scale)
    for name, spec in sx.table_rows(table, sc).items():
        cfg = load_config(sc.config_for(spec), [f"{k}={ex.yaml_value(v)}" for k, v in
                                                ex.overrides(spec, sc, tmp_path).items()])
        assert cfg.model == spec["model"] and cfg.reweight == spec["reweight"], name


def test_rows_meaning_the_same_experiment_share_one_run():
    sc = sx.get_scale("quick")
    by_row = lambda t: {r.row: r.out for r in ex.plan(t, sc, "runs", seeds=[0])}
    base = by_row("table1")["base"]
    assert base == by_row("table2")["base"] == by_row("table4")["ce"] == by_row("table5")["coarse_base"]
    assert by_row("table2")["norm_l2"] == by_row("table2")["input_var"] == by_row("table4")["ce_arm"]
    assert by_row("noise_sweep")["base@0.5"] == base          # the scale's own noise level is shared
    assert by_row("noise_sweep")["base@0"] != base
    every = ex.plan_sections(NOTEBOOKS, sc)
    assert len({r.out for r in every}) == len(every)


def test_a_run_folder_is_named_by_content_so_a_changed_config_retrains(tmp_path, monkeypatch):
    sc = sx.get_scale("smoke")
    before = ex.plan("table1", sc, tmp_path, seeds=[0], rows=("base",))[0]
    assert before.out.name.endswith("_s0") and before.experiment in before.out.name
    # the same experiment at another seed shares the experiment id, not the folder
    other_seed = ex.plan("table1", sc, tmp_path, seeds=[1], rows=("base",))[0]
    assert other_seed.experiment == before.experiment and other_seed.out != before.out
    # an edited config file changes the key
    config = tmp_path / "smoke.yaml"
    config.write_text((sc.config_for({})).read_text().replace("iterations: 60", "iterations: 61"))
    monkeypatch.setattr(sx.Scale, "config_for", lambda self, spec: config)
    after = ex.plan("table1", sc, tmp_path, seeds=[0], rows=("base",))[0]
    assert after.out != before.out


def test_run_key_ignores_only_fields_that_cannot_change_a_result():
    """One list (config.RUNTIME_ONLY) says what a resume may change and what the key leaves out: every other
    field changes the key (synthetic data_root aside: the generator's settings fix the data)."""
    cfg = load_config(sx.get_scale("smoke").config_for({})).to_dict()
    assert {"device", "threads", "quiet", "log_every", "curve_every"} <= set(RUNTIME_ONLY) <= set(cfg)
    for field in cfg:
        changed = run_key({**cfg, field: "changed"}) != run_key(cfg)
        assert changed == (field not in RUNTIME_ONLY and field != "data_root"), field
    real = {**cfg, "dataset": "cityscapes"}
    assert run_key({**real, "data_root": "/a"}) != run_key({**real, "data_root": "/b"})


def test_the_paper_scale_runs_three_seeds_of_the_primary_rows_only(tmp_path):
    paper = sx.get_scale("paper")
    seeds = {r.row: [] for r in ex.plan("table1", paper, tmp_path, data_root=tmp_path)}
    for r in ex.plan("table1", paper, tmp_path, data_root=tmp_path):
        seeds[r.row].append(r.seed)
    assert seeds["base"] == [0, 1, 2] and seeds["linear_detach"] == [0, 1, 2]
    assert seeds["linear_focusing"] == [0]            # secondary rows: one seed, as the paper ran
    assert ex.plan("table1", paper, tmp_path, seeds=[5], data_root=tmp_path)[0].seed == 5   # --seeds wins


def test_the_quick_scale_spends_its_plans_seeds_on_planned_rows_and_one_on_the_rest(tmp_path):
    # Issue 22: seed 0 for every row, and the confirmatory plan's seeds for the rows of its funded comparisons
    # (every table's row that is the same experiment); the pilot's seeds 1-4 only on request.
    quick = sx.get_scale("quick")
    plan = sx.confirmatory_plan(quick)
    for table in ("table1", "table3", "table5"):
        for r in ex.plan(table, quick, tmp_path, first_seed_only=True):
            want = [0, *sx.confirmatory_seeds(table, r.row, quick)]
            assert list(quick.seeds_for(r.row, table)) == want, (table, r.row)
    first = plan["comparisons"][0]
    assert quick.seeds_for(first["a"], first["table"]) == (0, *first["seeds"])
    assert quick.seeds_for("linear_focusing", "table1") == (0,)
    assert quick.seeds_for("arm@coarse", "table6") == (0,)   # the reference's budget counts no TTA beyond seed 0
    # Issue 31, free power: with it, Table 6's rows, the same experiments, are measured on every seed the plan
    # trains them at; a Table 6 row no plan trains stays at the scale's seeds
    free = dataclasses.replace(quick, free_power=True)
    assert free.seeds_for("arm@coarse", "table6") == free.seeds_for("coarse_arm", "table5") == (0, *first["seeds"])
    assert free.seeds_for("linear_arm@fine", "table6") == (0,)
    assert quick.seeds_for("coarse_arm", "table5", seeds=[0, 1, 2, 3, 4]) == (0, 1, 2, 3, 4)


def test_scale_coverage_rules(tmp_path):
    quick = sx.table_rows("table3", sx.get_scale("quick"))
    assert not any("r50" in k for k in quick)                 # no CPU stand-in for a second backbone depth
    assert not sx.table_rows("table5", sx.get_scale("quick")).keys() & {"ade_base", "ade_ohem", "ade_arm"}
    paper = sx.get_scale("paper")
    assert "ade_base" not in sx.table_rows("table5", paper, tmp_path)   # no ADE20K on disk
    (tmp_path / "ade20k").mkdir()
    rows = sx.table_rows("table5", paper, tmp_path)
    assert paper.config_for(rows["ade_base"]).name == "paper_ade20k.yaml"
    assert ex.overrides(rows["ade_base"], paper, tmp_path)["data_root"] == str(tmp_path / "ade20k")
    assert ex.overrides(rows["fine_base"], paper, tmp_path)["data_root"] == str(tmp_path / "cityscapes")


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="scale must be one of"):
        sx.get_scale("huge")
    with pytest.raises(ValueError, match="table must be one of"):
        sx.table_rows("table9", sx.get_scale("quick"))
    with pytest.raises(ValueError, match="unknown notebook"):
        select(["table9"])
    with pytest.raises(ValueError, match="unknown experiment keys"):
        sx.row(lr=0.1)


def fake_runs(tmp_path, n=2):
    sc = sx.get_scale("smoke")
    return sc, ex.plan("table1", sc, tmp_path, seeds=range(n))[:n]


def test_execute_skips_finished_runs_and_records_divergence(tmp_path, monkeypatch):
    sc, runs = fake_runs(tmp_path)
    runs[0].out.mkdir(parents=True)
    runs[0].record_path.write_text(json.dumps({"metrics": {"aAcc": 1, "mAcc": 2, "mIoU": 3}}))
    launched = []

    def command(r, *args):
        launched.append(r.out)
        return [sys.executable, "-c", "raise FloatingPointError('non-finite loss at iteration 7')"]

    monkeypatch.setattr(executors, "_command", command)
    monkeypatch.setattr(executors, "_prepare_data", lambda *a: None)
    executors.execute(runs, sc, progress=False)
    assert launched == [runs[1].out]
    record = json.loads(runs[1].record_path.read_text())
    assert record["status"] == "diverged" and "iteration 7" in record["message"]
    df = ex.collect(runs)
    assert list(df.status) == ["ok", "diverged"] and df.mIoU.isna().tolist() == [False, True]


def test_a_crashed_run_fails_loudly_naming_its_log(tmp_path, monkeypatch):
    sc, runs = fake_runs(tmp_path, 1)
    monkeypatch.setattr(executors, "_command", lambda *a: [sys.executable, "-c", "raise SystemExit(3)"])
    monkeypatch.setattr(executors, "_prepare_data", lambda *a: None)
    with pytest.raises(RuntimeError, match="train.log"):
        executors.execute(runs, sc, progress=False)
    assert not runs[0].record_path.exists()


def test_logs_append_one_header_per_attempt_and_failures_show_in_the_bar(tmp_path, monkeypatch, capsys):
    sc, runs = fake_runs(tmp_path, 1)
    assert "--resume" in executors._command(runs[0], sc, tmp_path, "cpu", 0)   # a checkpoint left behind is resumed
    monkeypatch.setattr(executors, "_command", lambda *a: [sys.executable, "-c", "print('attempt'); raise SystemExit(3)"])
    monkeypatch.setattr(executors, "_prepare_data", lambda *a: None)
    for _ in range(2):
        with pytest.raises(RuntimeError, match="1 of 1 run"):
            executors.execute(runs, sc, progress=True)
    assert "failed=1" in capsys.readouterr().err
    log = (runs[0].out / "train.log").read_text()
    assert log.count("fresh start") == 2 and log.count("attempt\n") == 2 and log.count("exit code 3") == 2


def test_a_second_holder_of_the_runs_folder_is_refused_and_a_dead_one_releases_it(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from armlib.reproduction.executors import runs_lock\n"
                               f"with runs_lock({str(tmp_path)!r}):\n print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(executors.RunsFolderBusy, match=f"in use by armlib pid {holder.pid} on"):
            with executors.runs_lock(tmp_path):
                pass
    finally:
        holder.kill()   # SIGKILL: no cleanup code runs, the OS releases the lock
        holder.wait()
    with executors.runs_lock(tmp_path):
        with executors.runs_lock(tmp_path):   # reentrant (notebook kernels of a reproduce)
            pass


def test_missing_real_data_is_named_before_any_run(tmp_path):
    paper = sx.get_scale("paper")
    runs = ex.plan("table1", paper, tmp_path / "runs", data_root=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"cityscapes/cityscapes/leftImg8bit/train.*pass its parent"):
        ex.check_data(runs, paper, tmp_path / "cityscapes")
    for folder in ("leftImg8bit/train", "leftImg8bit/val", "gtCoarse/train", "gtFine/val"):
        (tmp_path / "cityscapes" / folder).mkdir(parents=True)
    # the folders alone are not a dataset: the up-front check is the trainer's own (one function, issue 20)
    with pytest.raises(ValueError, match=r"no usable image/label pairs under .*leftImg8bit/train"):
        ex.check_data(runs, paper, tmp_path)


def test_signals_as_interrupts_raises_once_keeps_ignored_signals_and_restores_handlers():
    import os
    import signal
    import time

    from armlib.reproduction.executors import Interrupted, signals_as_interrupts

    def mine(signum, frame):
        pass

    saved = signal.signal(signal.SIGTERM, mine), signal.signal(signal.SIGHUP, signal.SIG_IGN)   # SIGHUP as nohup
    try:
        with pytest.raises(Interrupted) as caught, signals_as_interrupts():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN   # still ignored: nohup is respected
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(1.0)   # the handler runs between bytecodes; never reached
            finally:   # the cleanup: a repeated signal must not interrupt it
                assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
                os.kill(os.getpid(), signal.SIGTERM)
        assert caught.value.signum == signal.SIGTERM and isinstance(caught.value, KeyboardInterrupt)
        assert signal.getsignal(signal.SIGTERM) is mine and signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, saved[0])
        signal.signal(signal.SIGHUP, saved[1])


@pytest.mark.parametrize("command", ["reproduce", "calibrate"])
def test_commands_offer_the_registries_names(command):
    """Scale, executor and device names come from their registries (they were literals in reproduce.py, and
    calibrate had no --executor)."""
    import argparse

    from armlib import cli
    from armlib.config import DEVICES
    parser = argparse.ArgumentParser()
    cli.add_command_arguments(command, parser)
    choices = {a.dest: a.choices for a in parser._actions}
    assert list(choices["scale"]) == list(sx.SCALES)
    assert list(choices["executor"]) == list(executors.EXECUTORS)
    if "device" in choices:
        assert list(choices["device"]) == list(DEVICES)


def test_the_bar_counts_training_steps_from_the_runs_logs(tmp_path, monkeypatch, capsys):
    """Issue 21: a notebook's only feedback was "0/1 run" for minutes; the bar now counts steps, with a rate and
    the time left, while a run trains."""
    sc, runs = fake_runs(tmp_path, 2)
    total = sum(ex.run_config(r, sc).iterations for r in runs)
    runs[0].out.mkdir(parents=True, exist_ok=True)
    (runs[0].out / "log.csv").write_text("iteration,loss\n10,1.0\n20,0.9\n")   # a resumed run: 20 steps done
    progress = executors.StepProgress(runs, sc, "data", "runs", enabled=True, poll_s=0.01)
    assert progress.bar.total == total and progress.bar.n == 20
    (runs[1].out).mkdir(parents=True, exist_ok=True)
    (runs[1].out / "log.csv").write_text("iteration,loss\n10,1.0\n")
    progress._refresh()
    assert progress.bar.n == 30
    progress.finished(runs[0], True)
    progress.close()
    assert progress.bar.n == total - ex.run_config(runs[1], sc).iterations + 10
    assert "step" in capsys.readouterr().err
