"""One run over two "nodes" through torchrun: two launchers on 127.0.0.1 meeting by c10d rendezvous (gloo).

The recipe under test is the documented one: ``scripts/dist_train.sh`` (one torchrun launcher per node) and
``scripts/slurm/train.sbatch`` (run here with stand-ins for ``srun`` and ``scontrol`` that start one launcher
per "node" on this machine). Two launchers of one process each form the same world (2 ranks) as one launcher of
two processes: same global batch split, same per-rank arithmetic, gradients summed over the same two ranks. So
the records must agree; and killing one launcher after a checkpoint, then starting both with ``--resume``, must
finish the same run.

Every subprocess has a timeout, and every process a launcher started is killed at the end of the test.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from armlib.config import load_config
from armlib.paths import CONFIG_DIR, REPO_ROOT
from armlib.train import CHECKPOINT, RECORD, prepare_data

pytestmark = pytest.mark.skipif(not dist.is_available() or sys.platform != "linux",
                                reason="needs torch.distributed with gloo (Linux)")

DIST_TRAIN = REPO_ROOT / "scripts" / "dist_train.sh"
SBATCH = REPO_ROOT / "scripts" / "slurm" / "train.sbatch"
# s per launcher, a hang guard: a smoke run takes a few seconds plus start-up. The two-node launch failed once at
# 120 s on a 2-core machine busy with two training runs (its log was not kept: a timeout is likely, not shown); it
# passed in 66-87 s in three reruns there, one with two busy loops beside it.
RUN_TIMEOUT = 300


def overrides(data_root: Path) -> list[str]:
    # 40 short steps with a checkpoint every 4: slow enough to kill a launcher between checkpoints
    return [f"data_root={data_root}", "iterations=40", "checkpoint_every=4", "log_every=4", "batch_size=4",
            "device=cpu", "threads=1", "num_workers=0", "quiet=true"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (torchrun starts its workers in new sessions, so a process group is not enough)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


class Launchers:
    """Starts launcher commands, remembers every process they spawn, and kills what is left at the end."""

    def __init__(self, tmp_path: Path):
        self.procs: list[subprocess.Popen] = []
        self.seen: set[int] = set()
        self.logs = tmp_path / "logs"
        self.logs.mkdir()

    def start(self, cmd: list[str], env: dict, name: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "w")
        proc = subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def track(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                self.seen |= descendants(proc.pid) | {proc.pid}

    def wait(self, *procs: subprocess.Popen, timeout: float = RUN_TIMEOUT) -> list[int]:
        deadline = time.monotonic() + timeout
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            self.track()
            time.sleep(0.1)
        return [p.poll() for p in procs]

    def kill(self, proc: subprocess.Popen) -> None:
        for pid in descendants(proc.pid) | {proc.pid}:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=10)

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()[-3000:]

    def close(self) -> None:
        self.track()
        for pid in self.seen:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            proc.wait(timeout=10)


@pytest.fixture
def launchers(tmp_path):
    group = Launchers(tmp_path)
    yield group
    group.close()


def env_for(**extra) -> dict:
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1",
           "GPUS": "1", "NNODES": "2", "MASTER_ADDR": "127.0.0.1", "TORCHELASTIC_ERROR_FILE": os.devnull}
    env.pop("WORLD_SIZE", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def record(out: Path) -> dict:
    return json.loads((out / RECORD).read_text())


def test_the_slurm_script_takes_the_first_host_of_a_long_node_list(tmp_path):
    """``scontrol … | head -n 1`` under pipefail ended the job with 141 (SIGPIPE) whenever scontrol was still
    writing when head exited: once in make test on a busy 2-core machine, and always for a long node list."""
    shims = tmp_path / "bin"
    shims.mkdir()
    (shims / "scontrol").write_text("#!/bin/sh\necho 10.0.0.1\nseq 200000\n")
    (shims / "srun").write_text('#!/bin/sh\necho "MASTER_ADDR=$MASTER_ADDR NNODES=$NNODES"\n')
    for shim in shims.iterdir():
        shim.chmod(0o755)
    env = env_for(PATH=f"{shims}:{os.environ['PATH']}", SLURM_JOB_NODELIST="node[0-9999]", SLURM_NNODES=10000,
                  SLURM_JOB_ID=1, SLURM_SUBMIT_DIR=REPO_ROOT)
    done = subprocess.run(["bash", str(SBATCH), "configs/smoke.yaml", str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "MASTER_ADDR=10.0.0.1 NNODES=10000"


def test_two_nodes_equal_one_node_and_resume_after_a_killed_node(tmp_path, launchers):
    data_root = tmp_path / "data"
    args = overrides(data_root)
    prepare_data(load_config(CONFIG_DIR / "smoke.yaml", args))   # generated once, before any launcher
    config = str(CONFIG_DIR / "smoke.yaml")

    # one node, two processes
    one = launchers.start(["bash", str(DIST_TRAIN), config, str(tmp_path / "one"), *args],
                          env_for(NNODES=1, GPUS=2, PORT=free_port(), RDZV_ID="one"), "one")
    assert launchers.wait(one) == [0], launchers.log("one")

    # two nodes of one process, through the SLURM script with srun/scontrol stand-ins
    shims = tmp_path / "bin"
    shims.mkdir()
    (shims / "scontrol").write_text("#!/bin/sh\necho 127.0.0.1\necho 127.0.0.2\n")
    # srun: one task per node, each a copy of the command; fails if any task fails (--kill-on-bad-exit)
    (shims / "srun").write_text('#!/bin/bash\nshift\nfor n in $(seq $SLURM_NNODES); do "$@" & done\n'
                                'for n in $(seq $SLURM_NNODES); do wait -n || exit 1; done\n')
    for shim in shims.iterdir():
        shim.chmod(0o755)
    slurm_env = env_for(PATH=f"{shims}:{os.environ['PATH']}", SLURM_JOB_NODELIST="node[0-1]", SLURM_NNODES=2,
                        SLURM_GPUS_PER_NODE="cpu:1", SLURM_JOB_ID=4242, SLURM_SUBMIT_DIR=REPO_ROOT,
                        PORT=free_port())
    two = launchers.start(["bash", str(SBATCH), config, str(tmp_path / "two"), *args], slurm_env, "two")
    assert launchers.wait(two) == [0], launchers.log("two")

    a, b = record(tmp_path / "one"), record(tmp_path / "two")
    assert a["world_size"] == b["world_size"] == 2 and a["iterations"] == b["iterations"] == 40
    assert b["metrics"]["mIoU"] == pytest.approx(a["metrics"]["mIoU"], abs=1e-4)
    assert b["metrics"]["aAcc"] == pytest.approx(a["metrics"]["aAcc"], abs=1e-4)

    # two nodes again; node 1's launcher (and its worker) is killed once the first checkpoint exists
    out = tmp_path / "killed"
    port = free_port()
    node_cmd = ["bash", str(DIST_TRAIN), config, str(out), *args]
    nodes = [launchers.start(node_cmd, env_for(PORT=port, RDZV_ID="killed"), f"node{i}") for i in range(2)]
    deadline = time.monotonic() + RUN_TIMEOUT
    while not (out / CHECKPOINT).exists() and time.monotonic() < deadline:
        launchers.track()
        time.sleep(0.02)
    assert (out / CHECKPOINT).exists(), launchers.log("node0")
    launchers.kill(nodes[1])
    launchers.wait(nodes[0], timeout=60)       # its peer gone, node 0 fails (or is killed below)
    if nodes[0].poll() is None:
        launchers.kill(nodes[0])
    assert not (out / RECORD).exists()
    stopped_at = torch.load(out / CHECKPOINT, weights_only=True)["iteration"]
    assert 4 <= stopped_at < 40

    port = free_port()
    nodes = [launchers.start([*node_cmd, "--resume"], env_for(PORT=port, RDZV_ID="resumed"), f"resume{i}")
             for i in range(2)]
    assert launchers.wait(*nodes) == [0, 0], launchers.log("resume0") + launchers.log("resume1")
    resumed = record(out)
    assert resumed["sessions"] == 2 and resumed["world_size"] == 2
    assert resumed["metrics"]["mIoU"] == pytest.approx(a["metrics"]["mIoU"], abs=1e-4)
