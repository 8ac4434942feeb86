"""Training the planned runs (:mod:`armlib.reproduction.experiments`): one ``armlib train`` process per run.

Runs are separate ``armlib train`` processes (isolated threads, memory and CUDA context), several at
once where the hardware allows (:func:`execute`): from a thread pool on this machine (the default), or as
submitit jobs, locally or on SLURM. A run whose ``record.json`` exists is skipped and one with only a
``checkpoint.pt`` resumes from it, so an interrupted reproduction continues where it stopped and ends
with the same metrics (training is deterministic on CPU). A lock file in the runs folder keeps two
reproductions from training into the same folders.
"""
from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from armlib.commands import EXECUTORS
from armlib.paths import REPO_ROOT
from armlib.runs import CHECKPOINT, LOG, CorruptCheckpoint, read_checkpoint, write_failed_record
from armlib.runs import RunsFolderBusy, runs_lock  # noqa: F401 (the lock reproduce takes, re-exported)
from armlib.reproduction.experiments import Run, check_data, collect, overrides, plan, run_config, yaml_value
from armlib.reproduction.sections import Scale, get_scale


def run_table(table: str, scale: str = "quick", seeds=None, runs_dir: str | Path = "runs",
              data_root: str | Path = "data", device: str = "auto", jobs: int | None = None,
              progress: bool = True) -> pd.DataFrame:
    """Train (or reuse) every run of a table; return one row per run: row, seed, metrics, run_dir."""
    sc = get_scale(scale)
    runs = plan(table, sc, runs_dir, seeds, data_root)
    execute(runs, sc, data_root=data_root, device=device, jobs=jobs, progress=progress, desc=table)
    return collect(runs)


@dataclass(frozen=True)
class ClusterOptions:
    """Resources of one training job under submitit (``--executor submitit-local|slurm``)."""

    partition: str | None = None     # SLURM partition (None: the cluster's default)
    gpus_per_run: int = 0            # GPUs of one run, on one node (the paper scale uses them all through torchrun)
    cpus_per_run: int | None = None  # CPU cores of one run (None: the scheduler's default)
    timeout_min: int = 24 * 60       # wall-clock limit of one job; a run past it resumes from its checkpoint
    poll_s: float | None = None      # seconds between state checks (None: 1 locally, 20 on SLURM)


def cluster_options(args) -> ClusterOptions:
    """The :class:`ClusterOptions` of :func:`armlib.commands.add_executor_arguments`' parsed arguments."""
    return ClusterOptions(partition=args.slurm_partition, gpus_per_run=args.gpus_per_run,
                          cpus_per_run=args.cpus_per_run, timeout_min=args.timeout_min)


def execute(runs: list[Run], scale: Scale, data_root="data", device="auto", jobs=None,
            progress=True, desc="runs", executor: str = "pool", cluster: ClusterOptions | None = None) -> None:
    """Run every run without a record (deduplicated by directory), ``jobs`` at a time, with a progress bar.

    The bar counts training steps over all runs (read from each running run's ``log.csv``), so it moves and
    estimates the time left during a run, not only between runs; its postfix counts finished runs.

    A run folder holding a checkpoint but no record (an interrupted run) is resumed from it. Each run's
    ``train.log`` gets one header line per attempt and is appended to, never overwritten.

    Args:
        executor: "pool" (default): ``armlib train`` processes from a thread pool on this machine;
            "submitit-local" / "slurm": one submitit job per run (a SLURM job array, ``jobs`` at once).
        cluster: resources of a submitit job; ignored by "pool".

    Raises:
        RunsFolderBusy: another process is executing into the same runs folder.
        FileNotFoundError: a real dataset is missing or not laid out as expected (checked before any run).
        RuntimeError: some runs failed; the message lists their logs. The others ran to the end.
        KeyboardInterrupt / SystemExit: re-raised after every training process started here has been stopped.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    unique = {str(r.out): r for r in runs}
    todo = {k: r for k, r in unique.items() if not r.record_path.exists()}
    resumed = sum((r.out / CHECKPOINT).exists() for r in todo.values())
    if progress:   # the run store at work: a changed config or trainer shows up here as runs to train
        tqdm.write(f"{desc}: {len(unique) - len(todo)} of {len(unique)} run(s) reused (record exists), "
                   f"{resumed} to resume from a checkpoint, {len(todo) - resumed} to train")
    if not todo:
        return
    with contextlib.ExitStack() as stack:
        for folder in sorted({r.out.parent for r in todo.values()}):
            stack.enter_context(runs_lock(folder))
        todo = {k: r for k, r in todo.items() if not r.record_path.exists()}   # finished while we waited
        _prepare_data(list(todo.values()), scale, data_root)
        jobs = max(1, jobs or scale.jobs)
        steps = StepProgress(list(todo.values()), scale, data_root, desc, progress)
        failures: list[Run] = []

        def finished(r: Run, ok: bool) -> None:
            if not ok:
                failures.append(r)
            steps.finished(r, ok)

        try:
            if executor == "pool":
                _run_pool(list(todo.values()), scale, data_root, device, jobs, finished)
            else:
                _run_submitit(list(todo.values()), scale, data_root, device, jobs, finished,
                              executor, cluster or ClusterOptions())
        finally:
            steps.close()
    if failures:
        logs = "\n".join(f"  {r.out / 'train.log'}" for r in failures)
        raise RuntimeError(f"{len(failures)} of {len(todo)} run(s) failed; see their logs:\n{logs}")


class StepProgress:
    """A tqdm bar over the training steps of ``runs``, updated from their ``log.csv`` by a thread (every
    ``poll_s``): tqdm's rate and time left then describe steps, as ``armlib train``'s own bar does."""

    def __init__(self, runs: list[Run], scale: Scale, data_root, desc: str, enabled: bool = True,
                 poll_s: float = 1.0):
        self.totals = {r.out: run_config(r, scale, data_root).iterations for r in runs}
        self.done: dict[Path, int] = {}
        self.runs_done = self.failed = 0
        self.lock = threading.Lock()
        start = sum(self._logged(r.out) for r in runs)   # resumed runs' steps are not this session's rate
        self.bar = tqdm(total=sum(self.totals.values()), initial=start, desc=desc, unit="step", disable=not enabled,
                        dynamic_ncols=True, postfix={"runs": f"0/{len(runs)}"})
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, args=(poll_s,), daemon=True)
        if enabled:
            self.thread.start()

    def _logged(self, out: Path) -> int:
        """The last iteration ``out/log.csv`` records (0 without one); at most the run's T."""
        try:
            with open(out / LOG, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 512))
                last = f.read().decode(errors="replace").strip().splitlines()[-1]
            return min(int(last.split(",", 1)[0]), self.totals[out])
        except (OSError, IndexError, ValueError):
            return 0

    def _refresh(self) -> None:
        with self.lock:
            current = sum(self.done.get(out, self._logged(out)) for out in self.totals)
            if current > self.bar.n:
                self.bar.update(current - self.bar.n)
            failed = {"failed": self.failed} if self.failed else {}
            self.bar.set_postfix(runs=f"{self.runs_done}/{len(self.totals)}", **failed, refresh=False)

    def _poll(self, poll_s: float) -> None:
        while not self.stop.wait(poll_s):
            self._refresh()

    def finished(self, r: Run, ok: bool) -> None:
        with self.lock:
            self.runs_done += 1
            self.failed += not ok
            self.done[r.out] = self.totals[r.out]   # a failed run's steps will not come: counted as spent
        self._refresh()

    def close(self) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()
        self._refresh()
        self.bar.close()


def _run_pool(runs: list[Run], scale: Scale, data_root, device, jobs: int, finished) -> None:
    gpus = torch.cuda.device_count() if device in ("auto", "cuda") else 0
    children = _Children()

    def launch(i: int, r: Run) -> None:
        env = dict(os.environ)
        if gpus > 1 and scale.name != "paper":
            env["CUDA_VISIBLE_DEVICES"] = str(i % gpus)   # one independent run per GPU, round robin
        ok = _train(r, scale, data_root, device, env, gpus, children)
        if ok is not None:   # None: stopped by an interrupt, neither done nor failed
            finished(r, ok)

    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        for future in [pool.submit(launch, i, r) for i, r in enumerate(runs)]:
            future.result()
    except BaseException:
        children.stop()   # before the pool's shutdown, which waits for them
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _run_submitit(runs: list[Run], scale: Scale, data_root, device, jobs: int, finished, executor: str,
                  cluster: ClusterOptions) -> None:
    """One submitit job per run. On SLURM the runs go in one job array (``jobs`` at once, the scheduler
    queues the rest); locally submitit has no queue, so a job is submitted when a slot frees."""
    try:
        import submitit
    except ImportError:
        raise ImportError(f"--executor {executor} needs submitit: pip install submitit") from None
    folder = runs[0].out.parent / ".submitit"
    ex = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm" if executor == "slurm" else "local")
    params = {"timeout_min": cluster.timeout_min, "gpus_per_node": cluster.gpus_per_run, "nodes": 1,
              "tasks_per_node": 1, "name": "armlib-train"}
    if cluster.cpus_per_run:
        params["cpus_per_task"] = cluster.cpus_per_run
    if executor == "slurm":
        params["slurm_array_parallelism"] = jobs
        if cluster.partition:
            params["slurm_partition"] = cluster.partition
    ex.update_parameters(**params)
    poll = cluster.poll_s or (20.0 if executor == "slurm" else 0.5)
    pending = list(runs)
    running: dict = {}   # job -> run
    try:
        if executor == "slurm":
            running = dict(zip(ex.map_array(_job, pending, [scale] * len(pending), [str(data_root)] * len(pending),
                                            [device] * len(pending)), pending))
            pending = []
        while pending or running:
            while pending and len(running) < jobs:
                r = pending.pop(0)
                running[ex.submit(_job, r, scale, str(data_root), device)] = r
            for job in [j for j in running if j.done()]:
                r = running.pop(job)
                try:
                    ok = bool(job.result())
                except Exception as exc:   # the job itself died (node failure, timeout): a failed run
                    last = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
                    _append_log(r.out / "train.log", f"=== submitit job {job.job_id} failed: {last}")
                    ok = False
                finished(r, ok)
            time.sleep(poll if running else 0)
    except BaseException:
        if executor != "slurm":   # a cluster's jobs are the scheduler's; local ones die with us
            for job in running:
                job.cancel()   # SIGINT: the job stops its `armlib train` (see _run_child)
        raise


def _job(r: Run, scale: Scale, data_root: str, device: str) -> bool:
    """A submitit job: one run on whatever node the scheduler chose (its GPUs counted there)."""
    gpus = torch.cuda.device_count() if device in ("auto", "cuda") else 0
    return bool(_train(r, scale, data_root, device, dict(os.environ), gpus))


class _Children:
    """The live ``armlib train`` processes of one execute(), so an interrupt stops them all."""

    def __init__(self):
        self.lock = threading.Lock()
        self.procs: set[subprocess.Popen] = set()
        self.stopping = False

    def start(self, cmd: list[str], **kwargs) -> subprocess.Popen | None:
        with self.lock:   # no process may start after stop() has looked at the set
            if self.stopping:
                return None
            # own session: a terminal's Ctrl-C reaches only reproduce, which then stops each run cleanly
            proc = subprocess.Popen(cmd, start_new_session=True, **kwargs)
            self.procs.add(proc)
            return proc

    def forget(self, proc: subprocess.Popen) -> None:
        with self.lock:
            self.procs.discard(proc)

    def stop(self, grace_s: float = 10.0) -> None:
        with self.lock:
            self.stopping = True
            procs = list(self.procs)
        _stop_processes(procs, grace_s)


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C so that every cleanup path is the same."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_INTERRUPTING = (signal.SIGTERM, signal.SIGHUP)


def _raise_interrupted(signum, frame):
    # Once: a second signal (a scheduler repeating its SIGTERM) must not cut short the stopping of the runs.
    for s in _INTERRUPTING:
        signal.signal(s, signal.SIG_IGN)
    raise Interrupted(signum)


@contextmanager
def signals_as_interrupts():
    """Within it, the first SIGTERM or SIGHUP raises :class:`Interrupted` (a KeyboardInterrupt) in the main
    thread, so that :func:`execute` stops every training process it started, as on Ctrl-C; later ones are ignored
    while that happens. Their default action would end this process alone and leave its training runs going on as
    orphans (a time limit's SIGTERM, a closed terminal). A signal the process was started ignoring (SIGHUP under
    ``nohup``) stays ignored. The previous handlers are restored on leaving. Main thread only (``signal.signal``'s
    rule)."""
    previous = {s: signal.getsignal(s) for s in _INTERRUPTING}
    for s, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(s, _raise_interrupted)
    try:
        yield
    finally:
        for s, handler in previous.items():
            # None: a handler not installed from Python, which signal.signal cannot take back; the default then
            signal.signal(s, signal.SIG_DFL if handler is None else handler)


def _stop_processes(procs: list[subprocess.Popen], grace_s: float = 10.0) -> None:
    """SIGTERM each process group (torchrun's workers too), SIGKILL what is left after ``grace_s``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, sig)
        deadline = time.monotonic() + grace_s
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
        if all(p.poll() is not None for p in procs):
            return


def _command(r: Run, scale: Scale, data_root, device, gpus: int) -> list[str]:
    # --resume: continues from checkpoint.pt when an earlier attempt left one, starts afresh otherwise
    args = ["train", "--config", str(scale.config_for(r.spec)), "--out", str(r.out), "--resume"]
    settings = {**overrides(r.spec, scale, data_root), "seed": r.seed, "device": device, "quiet": True}
    if scale.threads:
        settings["threads"] = scale.threads
    args += [f"{k}={yaml_value(v)}" for k, v in settings.items()]
    if scale.name == "paper" and gpus > 1:   # the paper's recipe: one run over all GPUs
        return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={gpus}", "-m", "armlib", *args]
    return [sys.executable, "-m", "armlib", *args]


def _append_log(path: Path, line: str) -> None:
    with open(path, "a") as f:
        f.write(line.rstrip("\n") + "\n")


def _train(r: Run, scale: Scale, data_root, device, env, gpus, children: _Children | None = None) -> bool | None:
    """One training attempt; True when the run has its record, False when it failed, None when ``children``
    was stopped. A run that diverged (NaN loss) is a result, not a failure: the paper reports such rows as
    NaN (Table 2), so we record NaN metrics for it."""
    r.out.mkdir(parents=True, exist_ok=True)
    log = r.out / "train.log"
    cmd = _command(r, scale, data_root, device, gpus)
    ckpt = r.out / CHECKPOINT
    start = log.stat().st_size if log.exists() else 0   # this attempt's output begins here
    if ckpt.exists():
        _set_aside_if_corrupt(ckpt, log)
    _append_log(log, f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} on {socket.gethostname()}: "
                     f"{'resuming from ' + ckpt.name if ckpt.exists() else 'fresh start'}: {shlex.join(cmd)}")
    children = children or _Children()
    with open(log, "ab") as f:
        proc = children.start(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)
        if proc is None:
            return None
        try:
            code = proc.wait()
        finally:   # an exception here (KeyboardInterrupt in a submitit job) must not orphan the run
            if proc.poll() is None:
                _stop_processes([proc])
            children.forget(proc)
    if children.stopping:
        _append_log(log, f"=== stopped (interrupted), exit code {code}; the next attempt resumes")
        return None
    if r.record_path.exists():   # "ok", or a failed status the trainer recorded itself (armlib.runs.RunFailed)
        return True
    with open(log, "rb") as f:
        f.seek(start)
        text = f.read().decode(errors="replace")
    if "FloatingPointError" in text:
        write_failed_record(r.out, "diverged", text.strip().splitlines()[-1], seed=r.seed, spec=r.spec)
        return True
    _append_log(log, f"=== failed with exit code {code}")
    return False


def _set_aside_if_corrupt(ckpt: Path, log: Path) -> None:
    """An unreadable checkpoint (a full disk, a kill during a copy) would fail every rerun the same way: rename it
    to ``checkpoint.pt.corrupt`` (kept for a post-mortem, nothing deleted) so that this attempt retrains the run."""
    try:
        read_checkpoint(ckpt)
    except CorruptCheckpoint as exc:
        aside = ckpt.with_name(ckpt.name + ".corrupt")
        os.replace(ckpt, aside)
        _append_log(log, f"=== {exc}; set aside as {aside.name}, retraining this run from the start")


def _prepare_data(runs: list[Run], scale: Scale, data_root) -> None:
    """Check real datasets, then generate each synthetic dataset once, before parallel runs could race to
    create it."""
    from armlib.data.loading import prepare_data

    check_data(runs, scale, data_root)
    seen = set()
    for r in runs:
        cfg = run_config(r, scale, data_root)
        key = json.dumps(cfg.to_dict(), sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            prepare_data(cfg)
