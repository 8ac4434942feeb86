"""`armlib reproduce` killed at several points, then rerun, ends with the same result files as an uninterrupted
run; it leaves no training process behind; a second reproduce on the same runs folder is refused; the submitit
executor gives the same result files as the default pool.

Slow (each test runs a smoke reproduction of one notebook, 2 runs: ~30-60 s on 2 shared cores): marked
``slow``; deselect with ``-m "not slow"``.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from armlib.paths import REPO_ROOT

pytestmark = pytest.mark.slow

NOTEBOOK = "learned_curve"   # the smallest notebook that trains more than one run (base and ARM)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")   # shared: the synthetic set is generated once


def command(tmp: Path, data_root: Path, *extra) -> list[str]:
    return [sys.executable, "-m", "armlib", "reproduce", "--scale", "smoke", "--only", NOTEBOOK,
            "--out-dir", str(tmp / "out"), "--runs-dir", str(tmp / "runs"), "--data-root", str(data_root), *extra]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}


def default_sigint() -> None:
    """In the child before exec: SIGINT back to its default. A shell starting `make test` in the background
    (`cmd &`, nohup) leaves SIGINT ignored, and Python then never raises KeyboardInterrupt: the SIGINT kill point
    would silently test nothing (seen: reproduce ran to the end, exit 0)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def reproduce(tmp: Path, data_root: Path, *extra) -> subprocess.CompletedProcess:
    proc = subprocess.run(command(tmp, data_root, *extra), env=env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def result_files(out: Path) -> dict:
    """Every result file's content; wall times, the timing sentence and the git revision (provenance, which a
    commit made while the tests run changes) left out."""
    files = {}
    for p in sorted((out / "results").iterdir()):
        if p.suffix == ".json":
            meta = json.loads(p.read_text())
            files[p.name] = {k: v for k, v in meta.items()
                             if "time" not in k and k != "git_revision" and not (meta.get("key") == "training" and k == "finding")}
        else:
            files[p.name] = p.read_text()
    assert any(name.startswith("claims_") for name in files)
    return files


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_root):
    tmp = tmp_path_factory.mktemp("reference")
    reproduce(tmp, data_root)
    return result_files(tmp / "out")


def wait_for(condition, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"reproduce ended (rc {proc.returncode}) before the kill point"
        assert time.monotonic() < deadline, "kill point not reached"
        time.sleep(0.05)


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def trainers_of(runs: Path) -> list[psutil.Process]:
    """Every `armlib train` process writing under ``runs`` (started before or after any snapshot)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "train" in cmd and any(str(runs) in c for c in cmd):
            found.append(p)
    return found


def checkpoints(runs: Path) -> list[Path]:
    return list(runs.glob("smoke/*/checkpoint.pt"))


KILL_POINTS = {
    # training started, no checkpoint yet: the rerun starts those runs afresh
    "before_checkpoint": (lambda t: any(t.glob("runs/smoke/*/train.log")) and not checkpoints(t / "runs"),
                          signal.SIGINT),
    # a checkpoint exists, no record yet: the rerun resumes from it
    "after_checkpoint": (lambda t: checkpoints(t / "runs") and not any(t.glob("runs/smoke/*/record.json")),
                         signal.SIGTERM),
    # every run done, papermill executing the notebook
    "notebooks": (lambda t: (t / "out" / "executed").is_dir(), signal.SIGTERM),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_an_interrupted_reproduce_reruns_to_the_same_results(point, tmp_path, data_root, reference):
    condition, sig = KILL_POINTS[point]
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(command(tmp_path, data_root), env=env(), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=default_sigint)
    try:
        wait_for(lambda: condition(tmp_path), proc)
        family = psutil.Process(proc.pid).children(recursive=True)
        os.kill(proc.pid, sig)   # the parent only: it must stop its children itself
        assert proc.wait(timeout=60) == 128 + sig
        time.sleep(0.5)
        assert not alive(family) and not alive(trainers_of(tmp_path / "runs"))
    finally:   # whatever failed above, leave no process behind
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for p in alive(trainers_of(tmp_path / "runs")):
            p.kill()
        log.close()
    assert "the same command resumes" in (tmp_path / "first.log").read_text()

    reproduce(tmp_path, data_root)
    assert result_files(tmp_path / "out") == reference
    if point == "after_checkpoint":
        resumed = [p for p in (tmp_path / "runs" / "smoke").glob("*/train.log") if "resuming from" in p.read_text()]
        assert resumed, "no run resumed from its checkpoint"
        text = resumed[0].read_text()
        assert text.count("\n=== ") + text.startswith("=== ") >= 3   # attempt, stopped, attempt: appended


def test_a_second_reproduce_on_a_busy_runs_folder_is_refused_in_one_line(tmp_path, data_root):
    """The lock held by another process (here a stand-in holding it, so that no race with a finishing reproduce
    decides the outcome: checked during a live reproduce's notebooks, it once found the lock already released)."""
    runs = tmp_path / "runs" / "smoke"
    runs.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import time; from armlib.reproduction.executors import runs_lock\n"
                               f"with runs_lock({str(runs)!r}):\n print('held', flush=True); time.sleep(120)"],
                              env=env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        second = subprocess.run(command(tmp_path, data_root), env=env(), capture_output=True, text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert second.returncode == 1 and f"in use by armlib pid {holder.pid}" in second.stderr, second.stderr
    assert len(second.stderr.strip().splitlines()) == 1 and "Traceback" not in second.stderr


def test_submitit_local_executor_gives_the_pool_results(tmp_path, data_root, reference):
    reproduce(tmp_path, data_root, "--executor", "submitit-local")
    assert (tmp_path / "runs" / "smoke" / ".submitit").is_dir()
    assert result_files(tmp_path / "out") == reference


def test_a_calibrate_stopped_by_sigterm_stops_its_runs(tmp_path, data_root):
    """A time limit's SIGTERM (`timeout`, a batch scheduler) used to end calibrate alone and leave its training runs
    going on as orphans."""
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "armlib", "calibrate", "--scale", "smoke", "--iterations", "60", "--seeds",
           "100,101", "--runs-dir", str(runs), "--data-root", str(data_root), "--out", str(tmp_path / "out")]
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=default_sigint)
    try:
        wait_for(lambda: any(runs.glob("smoke/calibration/*/train.log")), proc)
        family = psutil.Process(proc.pid).children(recursive=True)
        os.kill(proc.pid, signal.SIGTERM)   # the parent only: it must stop its children itself
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        time.sleep(0.5)
        assert not alive(family) and not alive(trainers_of(runs))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for p in alive(trainers_of(runs)):
            p.kill()
    err = proc.stderr.read()
    assert "armlib calibrate: interrupted (SIGTERM); every training run was stopped" in err, err
    assert not (tmp_path / "out").exists()   # nothing written from a calibration cut short
