"""Experiment grids: every table cell is a valid config, shared rows share runs, runs resume and diverge."""
import json
import os
import subprocess
import sys

import pytest

from armlib import experiments as ex
from armlib.config import load_config
from armlib.paths import REPO_ROOT
from armlib.reproduce import NOTEBOOKS, select
from armlib.tables import all_runs


@pytest.mark.parametrize("scale", list(ex.SCALES))
@pytest.mark.parametrize("table", list(ex.TABLES) + ["table6", "noise_sweep"])
def test_every_row_is_a_valid_config(scale, table, tmp_path):
    sc = ex.get_scale(scale)
    for name, spec in ex.table_rows(table, sc).items():
        cfg = load_config(sc.config_for(spec), [f"{k}={ex._yaml_value(v)}" for k, v in
                                                ex.overrides(spec, sc, tmp_path).items()])
        assert cfg.model == spec["model"] and cfg.reweight == spec["reweight"], name


def test_rows_meaning_the_same_experiment_share_one_run():
    sc = ex.get_scale("quick")
    by_row = lambda t: {r.row: r.out for r in ex.plan(t, sc, "runs", seeds=[0])}
    base = by_row("table1")["base"]
    assert base == by_row("table2")["base"] == by_row("table4")["ce"] == by_row("table5")["coarse_base"]
    assert by_row("table2")["norm_l2"] == by_row("table2")["input_var"] == by_row("table4")["ce_arm"]
    assert by_row("noise_sweep")["base@0.5"] == base          # the scale's own noise level is shared
    assert by_row("noise_sweep")["base@0"] != base
    assert len({r.out for r in all_runs(NOTEBOOKS, "quick")}) == len(all_runs(NOTEBOOKS, "quick"))


def test_scale_coverage_rules(tmp_path):
    quick = ex.table_rows("table3", ex.get_scale("quick"))
    assert not any("r50" in k for k in quick)                 # no CPU stand-in for a second backbone depth
    assert not ex.table_rows("table5", ex.get_scale("quick")).keys() & {"ade_base", "ade_ohem", "ade_arm"}
    paper = ex.get_scale("paper")
    assert "ade_base" not in ex.table_rows("table5", paper, tmp_path)   # no ADE20K on disk
    (tmp_path / "ade20k").mkdir()
    rows = ex.table_rows("table5", paper, tmp_path)
    assert paper.config_for(rows["ade_base"]).name == "paper_ade20k.yaml"
    assert ex.overrides(rows["ade_base"], paper, tmp_path)["data_root"] == str(tmp_path / "ade20k")
    assert ex.overrides(rows["fine_base"], paper, tmp_path)["data_root"] == str(tmp_path / "cityscapes")


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="scale must be one of"):
        ex.get_scale("huge")
    with pytest.raises(ValueError, match="table must be one of"):
        ex.table_rows("table9", ex.get_scale("quick"))
    with pytest.raises(ValueError, match="unknown notebook"):
        select(["table9"])
    with pytest.raises(ValueError, match="unknown experiment keys"):
        ex.row(lr=0.1)


def fake_runs(tmp_path, n=2):
    sc = ex.get_scale("smoke")
    return sc, ex.plan("table1", sc, tmp_path, seeds=range(n))[:n]


def test_execute_skips_finished_runs_and_records_divergence(tmp_path, monkeypatch):
    sc, runs = fake_runs(tmp_path)
    runs[0].out.mkdir(parents=True)
    runs[0].record_path.write_text(json.dumps({"metrics": {"aAcc": 1, "mAcc": 2, "mIoU": 3}}))
    launched = []

    def command(r, *args):
        launched.append(r.out)
        return [sys.executable, "-c", "raise FloatingPointError('non-finite loss at iteration 7')"]

    monkeypatch.setattr(ex, "_command", command)
    monkeypatch.setattr(ex, "_prepare_data", lambda *a: None)
    ex.execute(runs, sc, progress=False)
    assert launched == [runs[1].out]
    record = json.loads(runs[1].record_path.read_text())
    assert record["status"] == "diverged" and "iteration 7" in record["message"]
    df = ex.collect(runs)
    assert list(df.status) == ["ok", "diverged"] and df.mIoU.isna().tolist() == [False, True]


def test_a_crashed_run_fails_loudly_naming_its_log(tmp_path, monkeypatch):
    sc, runs = fake_runs(tmp_path, 1)
    monkeypatch.setattr(ex, "_command", lambda *a: [sys.executable, "-c", "raise SystemExit(3)"])
    monkeypatch.setattr(ex, "_prepare_data", lambda *a: None)
    with pytest.raises(RuntimeError, match="train.log"):
        ex.execute(runs, sc, progress=False)
    assert not runs[0].record_path.exists()


def test_logs_append_one_header_per_attempt_and_failures_show_in_the_bar(tmp_path, monkeypatch, capsys):
    sc, runs = fake_runs(tmp_path, 1)
    assert "--resume" in ex._command(runs[0], sc, tmp_path, "cpu", 0)   # a checkpoint left behind is resumed
    monkeypatch.setattr(ex, "_command", lambda *a: [sys.executable, "-c", "print('attempt'); raise SystemExit(3)"])
    monkeypatch.setattr(ex, "_prepare_data", lambda *a: None)
    for _ in range(2):
        with pytest.raises(RuntimeError, match="1 of 1 run"):
            ex.execute(runs, sc, progress=True)
    assert "failed=1" in capsys.readouterr().err
    log = (runs[0].out / "train.log").read_text()
    assert log.count("fresh start") == 2 and log.count("attempt\n") == 2 and log.count("exit code 3") == 2


def test_a_second_holder_of_the_runs_folder_is_refused_and_a_dead_one_releases_it(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from armlib.experiments import runs_lock\n"
                               f"with runs_lock({str(tmp_path)!r}):\n print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ex.RunsFolderBusy, match=f"in use by armlib pid {holder.pid} on"):
            with ex.runs_lock(tmp_path):
                pass
    finally:
        holder.kill()   # SIGKILL: no cleanup code runs, the OS releases the lock
        holder.wait()
    with ex.runs_lock(tmp_path):
        with ex.runs_lock(tmp_path):   # reentrant (notebook kernels of a reproduce)
            pass


def test_missing_real_data_is_named_before_any_run(tmp_path):
    paper = ex.get_scale("paper")
    runs = ex.plan("table1", paper, tmp_path / "runs", data_root=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"cityscapes/cityscapes/leftImg8bit/train.*pass its parent"):
        ex.check_data(runs, paper, tmp_path / "cityscapes")
    for folder in ("leftImg8bit/train", "leftImg8bit/val", "gtCoarse/train", "gtFine/val"):
        (tmp_path / "cityscapes" / folder).mkdir(parents=True)
    ex.check_data(runs, paper, tmp_path)
