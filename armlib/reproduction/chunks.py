"""A reproduction too long for one session, in chunks: each trains what it can within a time cap and packs every
finished run into one archive that is committed, so that the next chunk, on any machine, continues where the last
stopped (``armlib reproduce --scale quick --plan full --minutes 95``).

A chunk:

1. unpacks the committed archive (``reports/<scale>/runs.tar.gz``) into the runs folder, keeping what is there;
2. prints what it will do: the runs left, the seconds a run took on this machine (median wall time of the records
   this CPU trained; runs side by side share the cores) and the wall time that gives at ``jobs``;
3. trains the runs left in batches until ``minutes`` have passed (then stops them as a time limit would; an
   interrupted run resumes from its checkpoint on this machine, or trains again on another). After each batch,
   while its checkpoints are here, it evaluates what a section reads from a model rather than from its record, and
   caches it in the run folder: Table 6's test-time-augmentation mIoU (``tta.json``) and the learned-curve section's
   per-seed loss curve (``train_loss_curve.json``). The one run whose checkpoint the figure sections read (the
   base model at the first seed: Figs. 2, 4, 5 and the Hölder fit) keeps its checkpoint in the archive (1.4 MB at
   the quick scale);
4. packs every finished run (its record with what its sections need, not ARM's curve history: :data:`LEFT_OUT`)
   into the archive, atomically, so a chunk cut at any point leaves a valid one;
5. once every run is finished, runs every section and renders the report; at the end of a scale's pilot stage
   (its follow-up plan not written yet) it then writes the pilot seeds' per-seed files to
   ``reports/<scale>/pilot/`` and the follow-up plan sized from them (:func:`write_followup`). Both are committed
   before the next chunk, which refuses to train a plan git does not hold as committed, trains the plan's seeds.

Checkpoints other than that one are never archived: the section files are made from the caches.
"""
from __future__ import annotations

import json
import math
import os
import signal
import statistics
import tarfile
import threading
import time
import traceback
from pathlib import Path

from armlib.paths import NOTEBOOK_DIR, resolve
from armlib.reproduction import executors, experiments, notebook, verdicts
from armlib.reproduction.sections import SECTION_KEYS, Scale, followup_plan, get_scale
from armlib.runs import CHECKPOINT, CURVES, RECORD, cpu_name, is_failed, read_record

ARCHIVE = "runs.tar.gz"        # reports/<scale>/runs.tar.gz: every finished run of the scale, committed per chunk
ARCHIVE_PREFIX = "runs/"       # run folders are archived as runs/<scale>/<run>/, wherever the runs folder lies
TTA_FILE = "tta.json"
# Run files no section reads, kept in the runs folder but not archived: ARM's W(v) every T/20 steps (the record
# holds the final curve; calibration reads the history, of its own runs) was 12 of the first chunk's 14 MB.
LEFT_OUT = (CURVES,)
DONE, CUT, FAILED = 0, 2, 1


def committed_archive(scale: str) -> Path:
    return resolve("reports") / scale / ARCHIVE


def unpack(archive: Path, runs_dir: Path) -> int:
    """Extract ``archive`` (paths ``runs/<scale>/<run>/<file>``, as :func:`pack` writes them) into ``runs_dir``,
    keeping files that exist there (like ``tar --skip-old-files``); returns how many run records it holds.

    Raises:
        ValueError: a member outside ``runs/`` (one line naming the archive and the member).
    """
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for m in members:
            if not m.name.startswith(ARCHIVE_PREFIX):
                raise ValueError(f"{archive}: {m.name} does not start with {ARCHIVE_PREFIX}")
            m.name = m.name[len(ARCHIVE_PREFIX):]
        tar.extractall(runs_dir, members=[m for m in members if not (runs_dir / m.name).exists()], filter="data")
        return sum(Path(m.name).name == RECORD for m in members)


def pack(folders: list[Path], archive: Path, root: Path, prefix: str = "",
         checkpoints: frozenset[Path] = frozenset(), leave_out: tuple[str, ...] = ()) -> None:
    """Every file of ``folders`` into ``archive`` (written atomically), named ``prefix`` + its path relative to
    ``root``; checkpoints only of the folders in ``checkpoints``, and no file named in ``leave_out``."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp = archive.with_name(archive.name + ".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for folder in sorted(folders):
            for path in sorted(folder.rglob("*")):
                keep = (path.name != CHECKPOINT or folder in checkpoints) and path.name not in leave_out
                if path.is_file() and keep and not path.name.endswith(".tmp"):
                    tar.add(path, arcname=prefix + str(path.relative_to(root)))
    os.replace(tmp, archive)


def run_sections(scale: str, keys: list[str], runs_dir: str, data_root: str, out_dir: Path, device: str,
                 jobs: int | None) -> None:
    """Every section notebook's code cells in this process, with the parameters papermill would inject (the
    notebooks hold no logic: each calls its armlib.reproduction.report_sections module), then what ``reproduce``
    writes beside: the calibration, the training meta and, once every section has run, the verdicts."""
    from armlib.reproduction import calibration

    os.environ.setdefault("MPLBACKEND", "Agg")
    params = {"scale": scale, "seeds": None, "data_root": data_root, "device": device, "out_dir": str(out_dir),
              "runs_dir": runs_dir, "jobs": jobs}
    sc = get_scale(scale)
    calibration.attach(sc.reference, out_dir)
    notebook.write_training_meta(experiments.plan_sections(keys, sc, runs_dir, None, data_root), scale, out_dir)
    for key in keys:
        path = NOTEBOOK_DIR / f"{key}.ipynb"
        namespace: dict = {"__name__": "__main__"}
        started = time.perf_counter()
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                exec(compile("".join(cell["source"]), str(path), "exec"), namespace)
                if "parameters" in cell.get("metadata", {}).get("tags", []):
                    namespace.update(params)
        print(f"section {key}: {time.perf_counter() - started:.0f} s", flush=True)
    verdicts.write(out_dir)


# -- what a chunk trains and caches ----------------------------------------------------------------------------

def cached_runs(sc: Scale, runs_dir: str, data_root: str) -> dict[str, set[str]]:
    """{run folder: the cache files its sections need beside its record}: Table 6's runs need ``tta.json``, the
    learned-curve section's ARM runs ``train_loss_curve.json``."""
    from armlib.reproduction.report_sections._runs import LOSS_CURVE_FILE

    out: dict[str, set[str]] = {}
    for r in experiments.plan("table6", sc, runs_dir, None, data_root):
        out.setdefault(str(r.out), set()).add(TTA_FILE)
    for r in experiments.plan("table2", sc, runs_dir, None, data_root, rows=("norm_l2",)):
        out.setdefault(str(r.out), set()).add(LOSS_CURVE_FILE)
    return out


def figure_run(sc: Scale, runs_dir: str, data_root: str) -> experiments.Run:
    """The run whose checkpoint the figure sections read: the base model at the first seed."""
    from armlib.reproduction.report_sections._runs import base_run

    return base_run(sc, runs_dir, None, data_root)


def evaluate_caches(run: experiments.Run, needs: set[str], sc: Scale, device: str) -> None:
    """Compute (or find) the caches ``needs`` names for a finished run whose checkpoint is here."""
    from armlib.reproduction.report_sections import _runs, paper_tables

    if not run.record_path.exists():
        return
    record = read_record(run.out)
    failed = is_failed(record.get("status", "ok"))
    if not failed and not (run.out / CHECKPOINT).exists():
        return   # trained elsewhere: its caches came with it, or it is not finished (is_finished)
    if TTA_FILE in needs:
        paper_tables.tta_metrics(run, sc, device)   # a failed run caches NaN without its checkpoint
    if _runs.LOSS_CURVE_FILE in needs and not failed and "arm_curve" in record:
        _runs.train_loss_curve(run, device)


def is_finished(run: experiments.Run, needs: set[str], figure: experiments.Run) -> bool:
    """A run counts as finished, and is packed, with its record and its caches (a failed run needs no loss
    curve: the section never reads one), and the figure run with its checkpoint too."""
    if not run.record_path.exists():
        return False
    record = read_record(run.out)
    if is_failed(record.get("status", "ok")) or "arm_curve" not in record:
        needs = needs - {"train_loss_curve.json"}
    if run.out == figure.out and not (run.out / CHECKPOINT).exists():
        return False
    return all((run.out / name).exists() for name in needs)


def seconds_per_run(runs: list[experiments.Run], device: str | None = None) -> tuple[float | None, int]:
    """(median wall seconds of the finished runs the CPU ``device`` trained (default: this one), how many): the
    time a run takes there as the chunks run them, side by side; (None, 0) before it has finished one."""
    here = device or cpu_name()
    walls = []
    for r in runs:
        if r.record_path.exists():
            record = read_record(r.out)
            if record.get("device_name") == here and record.get("wall_time_s"):
                walls.append(float(record["wall_time_s"]))
    return (statistics.median(walls), len(walls)) if walls else (None, 0)


def forecast(runs: list[experiments.Run], jobs: int) -> str:
    """One line: runs left, the seconds per run measured here and the wall time that gives at ``jobs``; before
    this machine has finished a run, the machine that finished the most of them stands in, named."""
    left = [r for r in runs if not r.record_path.exists()]
    per_run, n = seconds_per_run(runs)
    where = "on this machine"
    if per_run is None:
        others = [d for r in runs if r.record_path.exists() and (d := read_record(r.out).get("device_name"))]
        if others:
            other = statistics.mode(others)
            per_run, n = seconds_per_run(runs, other)
            where = f"on {other} (not measured on this machine yet)"
    if per_run is None:
        return (f"{len(left)} of {len(runs)} run(s) to train; seconds per run not measured yet "
                "(no finished run of these records its time)")
    hours = math.ceil(len(left) / jobs) * per_run / 3600
    return (f"{len(left)} of {len(runs)} run(s) to train; {per_run:.0f} s per run {where} (median of {n}, runs "
            f"side by side), so about {hours:.1f} h at {jobs} job(s)")


def uncommitted_plan(sc: Scale) -> str | None:
    """Why the scale's follow-up plan must not be trained yet (one line): it exists but git does not hold it as
    committed. None when it is committed, absent (the pilot stage), or there is no git to ask."""
    import subprocess

    from armlib.reproduction import sections

    if followup_plan(sc) is None:
        return None
    path = sections.PLAN_DIR / sc.followup
    try:
        state = subprocess.run(["git", "status", "--porcelain", "--", path.name], cwd=path.parent,
                               capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if state.returncode != 0:
        return None   # not a git checkout (a copy on a cluster): nothing to ask
    if state.stdout.strip():
        return (f"{path} is not committed: a plan is committed before any of its seeds runs "
                "(git add it and commit, then run again)")
    return None


def write_followup(sc: Scale, out_dir: Path) -> Path:
    """At the end of the pilot stage: the pilot seeds' per-seed results into ``reports/<scale>/pilot/`` and the
    follow-up plan sized from them (:func:`armlib.reproduction.design.make_followup_plan`); returns the plan's path.
    Both are to be committed before the next chunk, which trains the plan's seeds."""
    from armlib.paths import atomic_write_text
    from armlib.reproduction import design
    from armlib.reproduction.results import read_csv
    from armlib.reproduction.sections import PLAN_DIR

    pilot_dir = resolve("reports") / sc.name / "pilot"
    pilot_dir.mkdir(parents=True, exist_ok=True)
    seeds = {*sc.seeds, *sc.followup_pilot}
    for path in sorted((out_dir / "results").glob("*_seeds.csv")):
        frame = read_csv(path)
        atomic_write_text(pilot_dir / path.name, frame[frame.seed.isin(seeds)].to_csv(index=False))
    return design.write_plan(design.make_followup_plan(sc.name, pilot_dir), PLAN_DIR / sc.followup)


def chunk(scale: str, runs_dir: str, data_root: str = "data", out_dir: str | Path = "reports", device: str = "auto",
          jobs: int | None = None, minutes: float | None = None, archive: Path | None = None,
          executor: str = "pool", cluster=None, keys: list[str] | None = None) -> int:
    """One chunk (module docstring) of every section's runs at ``scale``; returns :data:`DONE` (every run and
    section done, the report rendered), :data:`CUT` (stopped at ``minutes`` with runs left) or :data:`FAILED`.

    Raises:
        KeyboardInterrupt: Ctrl-C (the finished runs are packed first).
        ValueError, FileNotFoundError, RuntimeError: as :func:`armlib.reproduction.executors.execute`.
    """
    from armlib.reproduction import report
    # every module the chunk imports lazily, now: a source file edited while a chunk trains (an hour) must not mix
    # an old module with a new one at the first cache (it did: ImportError, and the chunk packed nothing)
    from armlib.reproduction.report_sections import _runs, paper_tables  # noqa: F401

    sc = get_scale(scale)
    keys = keys or list(SECTION_KEYS)
    runs_path = resolve(runs_dir)
    archive = archive or committed_archive(scale)
    reused = unpack(archive, runs_path) if archive.exists() else 0
    print(f"chunk: {reused} finished run(s) unpacked from {archive}", flush=True)
    if reason := uncommitted_plan(sc):
        print(f"chunk: not started: {reason}", flush=True)
        return FAILED
    runs = experiments.plan_sections(keys, sc, runs_dir, None, data_root)
    needs = cached_runs(sc, runs_dir, data_root)
    figure = figure_run(sc, runs_dir, data_root)
    jobs = jobs or sc.jobs
    print(f"chunk: {forecast(runs, jobs)}", flush=True)
    status = CUT
    timer = None
    if minutes is not None:   # the cap's SIGTERM goes through signals_as_interrupts: every run stops cleanly
        timer = threading.Timer(minutes * 60, os.kill, (os.getpid(), signal.SIGTERM))
        timer.daemon = True
        timer.start()
    batch = 8 * jobs   # caches are evaluated after each batch, while its checkpoints are here
    try:
        with executors.signals_as_interrupts():
            for start in range(0, len(runs), batch):
                part = runs[start:start + batch]
                executors.execute(part, sc, data_root=data_root, device=device, jobs=jobs, executor=executor,
                                  cluster=cluster, desc=f"runs {start + 1}-{start + len(part)} of {len(runs)}")
                for r in part:
                    evaluate_caches(r, needs.get(str(r.out), set()), sc, device)
            if timer is not None:
                timer.cancel()
            run_sections(scale, keys, runs_dir, data_root, resolve(out_dir), device, jobs)
            report.render(out_dir)
            status = DONE
            if sc.followup and followup_plan(sc) is None:
                plan = write_followup(sc, resolve(out_dir))
                print(f"chunk: the pilot stage is done; its plan is written to {plan}, sized from "
                      f"reports/{sc.name}/pilot/: commit both, then run the same command for the plan's seeds",
                      flush=True)
    except KeyboardInterrupt as exc:
        print(f"chunk: cut off ({exc.args[0] if exc.args else 'SIGINT'}); the same command continues from the "
              "packed records", flush=True)
    except Exception as exc:   # whatever failed, the runs that finished are packed below: nothing is lost
        if not isinstance(exc, (RuntimeError, FileNotFoundError, ValueError)):
            traceback.print_exc()   # not a failure we expect: the whole story, for whoever fixes it
        print(f"chunk: error: {type(exc).__name__}: {exc}", flush=True)
        status = FAILED
    finally:
        if timer is not None:
            timer.cancel()
        previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)   # a late cap must not cut the packing short
        for r in runs:   # what finished just before a cut still has its checkpoint here
            try:
                evaluate_caches(r, needs.get(str(r.out), set()), sc, device)
            except Exception as exc:   # that run stays unpacked (its caches are missing); the others are packed
                print(f"chunk: {r.out.name}: its caches failed ({type(exc).__name__}: {exc})", flush=True)
                status = FAILED
        done = [r.out for r in runs if is_finished(r, needs.get(str(r.out), set()), figure)]
        pack(done, archive, runs_path, ARCHIVE_PREFIX, checkpoints=frozenset({figure.out}), leave_out=LEFT_OUT)
        signal.signal(signal.SIGTERM, previous)
        print(f"chunk: {len(done)} of {len(runs)} run(s) finished, packed into {archive}: commit it", flush=True)
    return status
