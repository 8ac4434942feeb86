"""Issue 20, "nothing lost and nothing silently wrong": one or more tests per case, each failing before the fix.

1. figures from the wrong model; 2. wrong verdicts from a damaged result file; 3. two writers in one folder;
4. a run that learned nothing recorded "ok"; 5. a corrupt checkpoint blocking a reproduction; 6. errors found
only after training; 7. the fused loss skipping the reference's checks; 8. notebook parameters unchecked.
"""
from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import armlib.train as train_mod
from armlib.reproduction import experiments as ex
from armlib.reproduction import executors
from armlib.reproduction import sections as sx
from armlib.reproduction.analysis import RunNotUsable, load_run
from armlib.arm import ARMLoss
from armlib.cli import main as cli_main
from armlib.config import load_config
from armlib.data.loading import prepare_data
from armlib.errors import UsageError, check_writable
from armlib.fused import FusedARMLoss
from armlib.reproduction.parameters import check_notebook
from armlib.paths import CONFIG_DIR, REPO_ROOT
from armlib.runs import (CHECKPOINT, FAILED_STATUSES, LOSS_BOUND_FACTOR, RECORD, CorruptCheckpoint, DamagedRecord,
                         RunFailed, RunsFolderBusy, is_failed, loss_failure, read_checkpoint, read_record)
from armlib.train import train

C = 10  # the synthetic scenes' classes


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    prepare_data(small_cfg(root))
    return root


def small_cfg(data_root, *overrides: str):
    return load_config(CONFIG_DIR / "smoke.yaml", [
        f"data_root={data_root}", "batch_size=2", "iterations=4", "checkpoint_every=2", "log_every=2",
        "threads=1", "num_workers=0", "device=cpu", "quiet=true", *overrides])


class StandIn(nn.Module):
    """A small conv net with armlib's output contract; its logits are multiplied by ``scale_from[1]`` from its
    ``scale_from[0]``-th training call (a finite explosion)."""

    def __init__(self, num_classes: int, scale_from: tuple[int, float] | None = None, batch_norm: bool = False):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), *([nn.BatchNorm2d(8)] if batch_norm else []),
                                  nn.ReLU())
        self.out = nn.Conv2d(8, num_classes, 1)
        self.scale_from, self.calls = scale_from, 0

    def forward(self, x):
        self.calls += self.training
        out = self.out(self.body(x))
        if self.scale_from is not None and self.calls >= self.scale_from[0]:
            out = out * self.scale_from[1]
        return {"out": out}


def trained_run(data_root, folder, *overrides):
    train(small_cfg(data_root, *overrides), folder, model_fn=lambda c, k: StandIn(k))
    return folder


# -- 1. a diverged or degenerate run is never analysed as if it were fine ----------------------------------------

def test_analysis_refuses_a_run_whose_record_is_not_ok(data_root, tmp_path):
    run = trained_run(data_root, tmp_path / "run")
    load_run(run, model_fn=lambda c, k: StandIn(k))   # "ok": loads
    record = json.loads((run / RECORD).read_text())
    (run / RECORD).write_text(json.dumps({**record, "status": "diverged", "message": "non-finite loss"}))
    with pytest.raises(RunNotUsable, match=r"status is 'diverged'.*learned nothing"):
        load_run(run, model_fn=lambda c, k: StandIn(k))


def test_analysis_refuses_a_checkpoint_that_is_not_the_records(data_root, tmp_path):
    run = trained_run(data_root, tmp_path / "run")
    record = json.loads((run / RECORD).read_text())
    assert record["checkpoint"]["iteration"] == 4 and len(record["checkpoint"]["sha256"]) == 64
    ckpt = torch.load(run / CHECKPOINT, weights_only=True)
    torch.save({**ckpt, "iteration": 2}, run / CHECKPOINT)   # e.g. an earlier checkpoint copied back
    with pytest.raises(RunNotUsable, match="is not the checkpoint .* was computed from"):
        load_run(run, model_fn=lambda c, k: StandIn(k))
    # a record written before the trainer stored the hash: the iterations must agree
    (run / RECORD).write_text(json.dumps({k: v for k, v in record.items() if k != "checkpoint"}))
    with pytest.raises(RunNotUsable, match="from iteration 2 but .* from iteration 4"):
        load_run(run, model_fn=lambda c, k: StandIn(k))


def test_figure_sections_mark_a_failed_base_run_instead_of_crashing(tmp_path):
    from armlib.reproduction import stats
    from armlib.reproduction.report_sections import confidence_quadrants, holder, loss_vs_variance, variance_maps
    from armlib.reproduction.report_sections._runs import base_run

    sc = sx.get_scale("smoke")
    base = base_run(sc, tmp_path / "runs")
    base.out.mkdir(parents=True)
    (base.out / RECORD).write_text(json.dumps({"status": "diverged", "seed": base.seed,
                                               "metrics": {"aAcc": math.nan, "mAcc": math.nan, "mIoU": math.nan}}))
    kwargs = {"scale": "smoke", "runs_dir": tmp_path / "runs", "out_dir": tmp_path / "out", "device": "cpu"}
    _, claims = loss_vs_variance.measure(**kwargs)
    assert claims.verdict.tolist() == [stats.NOT_RUN] and "'diverged'" in claims.note[0]
    toy, curve, claims = holder.measure(**kwargs)
    verdicts = dict(zip(claims.id, claims.verdict))
    assert verdicts["holder_arm"] == verdicts["holder_l1"] == stats.NOT_RUN
    assert verdicts["holder_toy"] == stats.HOLDS and curve["fits"] == {} and curve["collapsed"] is None
    for section in (variance_maps, confidence_quadrants):   # Fig. 4 and Fig. 2 refused such a run with an error
        shown, claims = section.measure(**kwargs)
        assert claims.verdict.tolist() == [stats.NOT_RUN] and "'diverged'" in claims.note[0]
        section.plot(shown, kwargs["out_dir"])
        assert (kwargs["out_dir"] / "figures" / f"{section.__name__.rsplit('.', 1)[1]}.png").stat().st_size


# -- 2. every file read is checked where it is read -------------------------------------------------------------

@pytest.fixture
def report_copy(tmp_path):
    folder = tmp_path / "report"
    shutil.copytree(REPO_ROOT / "reports" / "quick" / "results", folder / "results")
    return folder


@pytest.mark.parametrize("damage, what", [
    (lambda text: text[: len(text) // 2], "cut short"),
    (lambda text: "", "empty: 0 bytes"),
    (lambda text: text.replace(",ok,", ",okay,", 1), "unknown status 'okay'"),
    (lambda text: text.replace("table,row,seed,", "table,row,seeds,", 1), "missing column"),
    (lambda text: re.sub(r"(\n(?:[^,\n]*,){4})[^,\n]*", r"\1", text, count=1), "no value but status 'ok'"),
], ids=["truncated", "zero-bytes", "unknown-status", "renamed-column", "value-missing"])
def test_a_damaged_seeds_file_is_one_line_naming_it(report_copy, capsys, damage, what):
    path = report_copy / "results" / "table1_seeds.csv"
    path.write_text(damage(path.read_text()))
    assert cli_main(["report", "--out-dir", str(report_copy)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and "--only table1" in err and what in err
    assert not (report_copy / "index.html").exists()


def test_a_damaged_meta_file_or_record_is_named(report_copy, capsys, tmp_path):
    meta = report_copy / "results" / "meta_table1.json"
    meta.write_text(meta.read_text()[:40])
    assert cli_main(["report", "--out-dir", str(report_copy)]) == 2
    assert f"{meta}: damaged result file (not valid JSON" in capsys.readouterr().err
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / RECORD).write_text('{"status": "ok", "metrics": {"mIoU": 1')
    with pytest.raises(DamagedRecord, match=r"record.json: damaged record \(not JSON"):
        read_record(tmp_path / "run")
    (tmp_path / "run" / RECORD).write_text('{"status": "fine"}')
    with pytest.raises(DamagedRecord, match="status 'fine'"):
        read_record(tmp_path / "run")


# -- 3. one writer per run folder ----------------------------------------------------------------------------------

def _hold(folder, how: str):
    """A process holding ``runs.<how>(folder)`` until killed; returns once it holds it."""
    code = textwrap.dedent(f"""
        import time
        from armlib import runs
        with runs.{how}({str(folder)!r}):
            print('held', flush=True)
            time.sleep(120)
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_writer_is_refused_and_the_first_loses_nothing(data_root, tmp_path):
    run = tmp_path / "runs" / "a"
    holder = _hold(run, "run_folder_lock")   # an `armlib train` writing into runs/a
    try:
        with pytest.raises(RunsFolderBusy, match=f"{run} is in use by armlib pid {holder.pid}"):
            train(small_cfg(data_root), run, model_fn=lambda c, k: StandIn(k))
        assert not (run / CHECKPOINT).exists() and not (run / "log.csv").exists()
        trained_run(data_root, tmp_path / "runs" / "b")   # a sibling run folder trains side by side
    finally:
        holder.kill()
        holder.wait()
    holder = _hold(tmp_path / "runs", "runs_lock")   # an `armlib reproduce` of the runs folder
    try:
        with pytest.raises(RunsFolderBusy, match=f"{tmp_path / 'runs'} is in use by armlib pid {holder.pid}"):
            train(small_cfg(data_root), run, model_fn=lambda c, k: StandIn(k))
    finally:
        holder.kill()
        holder.wait()
    trained_run(data_root, run)   # the lock dies with its holder


# -- 4. a run that learned nothing ends with a status that says so ----------------------------------------------

def test_the_failure_rule_and_the_failed_statuses():
    assert loss_failure(["2.3", "1.9", "0.8"]) is None
    assert loss_failure([2.0, 2.0 * LOSS_BOUND_FACTOR]) is None   # at the bound: still a number the run can come back from
    assert loss_failure([2.0, 2.0 * LOSS_BOUND_FACTOR * 1.01])[0] == "exploded"
    assert loss_failure([2.0, ""])[0] == "diverged" and loss_failure([2.0, "nan"])[0] == "diverged"
    assert loss_failure([0.0, 5.0]) is None   # a first loss of 0 (nothing labelled) sets no scale
    assert set(FAILED_STATUSES) == {"diverged", "exploded", "no_labels"}
    assert all(is_failed(s) for s in FAILED_STATUSES) and not is_failed("ok") and not is_failed(None)


def test_an_exploding_loss_is_recorded_exploded(data_root, tmp_path):
    cfg = small_cfg(data_root, "iterations=8", "base_lr=0.001")
    with pytest.raises(RunFailed, match=r"exploded: at iteration 6 the logged loss .* exceeds 100 ×"):
        train(cfg, tmp_path / "run", model_fn=lambda c, k: StandIn(k, scale_from=(5, 1e4)))
    record = read_record(tmp_path / "run")
    assert record["status"] == "exploded" and math.isnan(record["metrics"]["mIoU"]) and record["seed"] == cfg.seed
    collected = ex.collect([ex.Run("base", cfg.seed, {}, tmp_path / "run")])
    assert collected.status.tolist() == ["exploded"]


def test_a_training_set_without_a_labelled_pixel_is_recorded_no_labels(data_root, tmp_path, monkeypatch):
    real = train_mod.build_datasets

    class Unlabelled(torch.utils.data.Dataset):
        def __init__(self, base):
            self.base = base

        def __len__(self):
            return len(self.base)

        def __getitem__(self, i):
            image, mask, *rest = self.base[i]
            return (image, mask.clone().fill_(255), *rest)

    def unlabelled(cfg, root):
        train_set, val_set, n = real(cfg, root)
        return Unlabelled(train_set), val_set, n

    monkeypatch.setattr(train_mod, "build_datasets", unlabelled)
    with pytest.raises(RunFailed, match="no_labels: no labelled training pixel in iterations 1–"):
        train(small_cfg(data_root, "iterations=40"), tmp_path / "run", model_fn=lambda c, k: StandIn(k))
    assert read_record(tmp_path / "run")["status"] == "no_labels"
    args = ["train", "--config", str(CONFIG_DIR / "smoke.yaml"), "--out", str(tmp_path / "cli"),
            f"data_root={data_root}", "iterations=4", "batch_size=2", "device=cpu", "quiet=true"]
    assert cli_main(args) == 3   # one line, and the record says why
    assert read_record(tmp_path / "cli")["status"] == "no_labels"


# -- 5. a corrupt checkpoint: one line, and reproduce retrains -----------------------------------------------------

@pytest.mark.parametrize("corrupt", [lambda b: b"", lambda b: b[: len(b) // 2]], ids=["zero-bytes", "truncated"])
def test_a_corrupt_checkpoint_is_one_line_naming_it(data_root, tmp_path, capsys, corrupt):
    cfg = small_cfg(data_root)
    train(cfg, tmp_path / "run", stop_at=2, model_fn=lambda c, k: StandIn(k))
    path = tmp_path / "run" / CHECKPOINT
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(CorruptCheckpoint, match=f"{path}: unreadable checkpoint .* delete it to retrain"):
        read_checkpoint(path)
    with pytest.raises(CorruptCheckpoint, match=str(path)):
        train(cfg, tmp_path / "run", resume=True, model_fn=lambda c, k: StandIn(k))
    args = ["train", "--config", str(CONFIG_DIR / "smoke.yaml"), "--out", str(tmp_path / "run"), "--resume",
            f"data_root={data_root}", "batch_size=2", "iterations=4", "checkpoint_every=2", "log_every=2",
            "threads=1", "num_workers=0", "device=cpu", "quiet=true"]
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err


def test_reproduce_sets_an_unreadable_checkpoint_aside_and_retrains(tmp_path, monkeypatch):
    sc = sx.get_scale("smoke")
    run = ex.plan("table1", sc, tmp_path, seeds=[0])[0]
    run.out.mkdir(parents=True)
    (run.out / CHECKPOINT).write_bytes(b"")   # a disk that filled up
    # the training command: fails, as `armlib train --resume` did, unless the checkpoint was set aside
    script = (f"import json, os; assert not os.path.exists({str(run.out / CHECKPOINT)!r}), 'stuck'; "
              f"open({str(run.record_path)!r}, 'w').write(json.dumps({{'metrics': {{'mIoU': 1}}}}))")
    monkeypatch.setattr(executors, "_command", lambda *a: [sys.executable, "-c", script])
    monkeypatch.setattr(executors, "_prepare_data", lambda *a: None)
    executors.execute([run], sc, progress=False)
    assert run.record_path.exists() and (run.out / "checkpoint.pt.corrupt").exists()
    assert "unreadable checkpoint" in (run.out / "train.log").read_text()


# -- 6. errors found before training, not after -----------------------------------------------------------------

def test_a_model_with_more_outputs_than_classes_is_refused_before_training(data_root, tmp_path):
    with pytest.raises(UsageError, match=f"has {C + 1} outputs but dataset='synth' has {C} classes"):
        train(small_cfg(data_root), tmp_path / "run", model_fn=lambda c, k: StandIn(k + 1))
    assert not (tmp_path / "run" / CHECKPOINT).exists()


def test_an_unwritable_output_folder_is_refused_before_any_work(data_root):
    # /proc takes no new files, even from root (permission bits would not stop root)
    with pytest.raises(UsageError, match="--out /proc/armlib-run: cannot write in /proc"):
        train(small_cfg(data_root), "/proc/armlib-run", model_fn=lambda c, k: StandIn(k))
    with pytest.raises(UsageError, match="--out-dir /proc: cannot write"):
        check_writable("/proc", "--out-dir")


def test_a_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_previous(data_root, tmp_path, monkeypatch):
    real_save, calls = torch.save, {"n": 0}

    def filling_save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            return real_save(obj, f, *args, **kwargs)
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 4096 vs 3962")

    monkeypatch.setattr(torch, "save", filling_save)
    path = tmp_path / "run" / CHECKPOINT
    with pytest.raises(OSError, match=f"could not write {path} .*unexpected pos.*free space.*--resume"):
        train(small_cfg(data_root), tmp_path / "run", model_fn=lambda c, k: StandIn(k))
    monkeypatch.setattr(torch, "save", real_save)
    assert read_checkpoint(path)["iteration"] == 2


def test_a_disk_too_small_for_a_checkpoint_is_refused_before_training(data_root, tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 10))
    with pytest.raises(UsageError, match="MiB free, but a checkpoint needs about"):
        train(small_cfg(data_root), tmp_path / "run", model_fn=lambda c, k: StandIn(k))
    assert not (tmp_path / "run" / CHECKPOINT).exists()


# -- 7. the fused loss and the config make the reference's checks ------------------------------------------------

def _logits_target(n=2, h=4, w=5):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, C, h, w, generator=g), torch.randint(0, C, (n, h, w), generator=g)


def test_fused_loss_checks_values_like_the_reference():
    logits, target = _logits_target()
    bad_label = target.clone()
    bad_label[0, 0, 0] = C
    nan = logits.clone()
    nan[0, 0, 0, 0] = math.nan
    for bad_logits, bad_target in ((nan, target), (logits, bad_label)):
        with pytest.raises(ValueError) as reference:
            ARMLoss()(bad_logits, bad_target)
        with pytest.raises(ValueError) as fused:
            FusedARMLoss()(bad_logits, bad_target)
        assert str(fused.value) == str(reference.value)
    first = FusedARMLoss()   # "first": the fast path checks its first call only
    first(logits, target)
    assert torch.isnan(first(nan, target))
    with pytest.raises(ValueError, match="NaN or Inf"):
        always = FusedARMLoss(validate=True)
        always(logits, target)
        always(nan, target)


def test_out_of_range_settings_are_refused():
    for p in (math.inf, 0.5):
        with pytest.raises(ValueError, match="finite"):
            ARMLoss(p=p)
        with pytest.raises(UsageError, match="norm_p"):
            load_config(CONFIG_DIR / "smoke.yaml", [f"norm_p={p}"])
    with pytest.raises(UsageError, match=r"base_lr must be in \(0, 1\]"):
        load_config(CONFIG_DIR / "smoke.yaml", ["base_lr=1000"])


def test_a_batch_of_one_image_with_batchnorm_is_refused_before_training(data_root, tmp_path):
    with pytest.raises(UsageError, match="batch_size=1 gives 1 image per rank .* BatchNorm"):
        train(small_cfg(data_root, "batch_size=1"), tmp_path / "run",
              model_fn=lambda c, k: StandIn(k, batch_norm=True))


# -- 8. notebook parameters checked by name and type -------------------------------------------------------------

def _namespace(**given):
    declared = {"scale": str, "seeds": "Optional[list[int]]", "data_root": str, "device": str, "out_dir": str,
                "runs_dir": str, "jobs": "Optional[int]"}
    defaults = {"scale": "quick", "seeds": None, "data_root": "data", "device": "auto", "out_dir": "reports",
                "runs_dir": "runs", "jobs": None}
    return {"__annotations__": declared, "In": [], "get_ipython": print, "sys": sys, **defaults, **given}


def test_notebook_parameters_are_checked_by_name_and_type():
    with pytest.raises(UsageError, match="unknown notebook parameter 'sclae' \\(did you mean 'scale'\\?\\)"):
        check_notebook(_namespace(sclae="smoke"))
    for name, value in (("jobs", "two"), ("jobs", 0), ("seeds", "0,a"), ("seed", True), ("device", "gpu"),
                        ("out_dir", 3), ("data_root", "")):
        namespace = _namespace(**{name: value})
        namespace["__annotations__"][name] = str
        with pytest.raises(UsageError, match=f"^{name}"):
            check_notebook(namespace)
    namespace = _namespace(seeds="0,1", jobs="2")
    assert check_notebook(namespace)["seeds"] == [0, 1] and namespace["jobs"] == 2   # normalised in place


def test_a_setup_cell_rerun_by_hand_is_not_refused_for_names_later_cells_defined():
    namespace = _namespace()
    check_notebook(namespace)
    namespace.update(change=0.3, histories={})       # what the cells below the setup cell define
    assert check_notebook(namespace)["scale"] == "quick"
    with pytest.raises(UsageError, match="'change'"):  # in a fresh kernel the same names are refused
        check_notebook({k: v for k, v in namespace.items() if not k.startswith("_armlib")})
    namespace["seeds"] = "0,a"                         # declared parameters are still checked on every call
    with pytest.raises(UsageError, match="^seeds"):
        check_notebook(namespace)


@pytest.mark.parametrize("notebook", ["data", "use_arm"])
def test_a_misspelt_parameter_stops_the_notebook(notebook, tmp_path):
    papermill = pytest.importorskip("papermill")
    parameters = {"out_dir": str(tmp_path)} if notebook == "data" else {}   # the tutorial writes nothing
    with pytest.raises(papermill.PapermillExecutionError, match="unknown notebook parameter 'sclae'"):
        papermill.execute_notebook(str(REPO_ROOT / "notebooks" / f"{notebook}.ipynb"), str(tmp_path / "out.ipynb"),
                                   parameters={"sclae": "smoke", **parameters}, progress_bar=False,
                                   kernel_name="python3", cwd=str(tmp_path))
