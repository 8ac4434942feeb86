"""One chunk of a scale's reference (`armlib reproduce --scale gpu`'s runs and sections) on a lent GPU machine:
resumable from committed records, within a time cap, without papermill (the device's python has none).

    PYTHONPATH=. python3 scripts/gpu_reference.py --seconds 300 --out "$OUT"       # scripts/gpu_session.sh runs this

In order:

1. unpacks ``reports/<scale>/reference_runs.tar.gz`` (the records committed after earlier chunks) into the runs
   folder, keeping what it already holds;
2. with ``--require-calibration`` (the session script passes it), stops (exit 3, one line) while the scale's
   committed calibration is incomplete or its config does not train at the chosen T with the calibration's
   unresolved classes: runs trained before would be orphaned when the config changes (both enter the run key);
3. trains the runs the report's sections need (the plan of ``armlib reproduce``) until ``--seconds`` have passed,
   then stops them cleanly (SIGTERM, as a time limit would), in three groups (:func:`plan`). Checkpoints cannot
   come back from the machine (hundreds of MB each), so whatever a section reads from a checkpoint is made in the
   chunk that trained the run:

   - the runs whose records alone make their sections (most of Tables 1–5, the noise sweep);
   - Table 6's other runs, each followed by its test-time-augmentation evaluation, which ``paper_tables.tta_metrics``
     caches in the run's ``tta.json`` (so Table 6 then needs no checkpoint);
   - together, the runs whose checkpoints the figure sections read (:data:`CHECKPOINT_READS`: the base model of
     Figs. 2, 4, 5 and the Hölder fit, ARM's runs of the learned-curve section);
4. when every run has its record and those checkpoints are here, runs every section notebook's code cells in this
   process, with papermill's parameters (no papermill), into ``--sections-dir``: ``results/`` and ``figures/``, from
   which ``armlib report --out-dir reports/<scale>`` renders the report on the CPU;
5. packs every finished run's folder (records, logs, curves, ``tta.json``; no checkpoints) into
   ``<out>/reference_runs.tar.gz``, and the sections' files into ``<out>/reference_sections.tar.gz``. A run is
   finished with its record, a Table 6 run with its ``tta.json`` too, and a run whose checkpoint a figure section
   reads only once the sections were made from it: a later chunk trains any other run again rather than finding a
   record without what its section needs.

Exit status: 0 every run and section done; 2 cut off by the time cap or the deadline with runs left (the next chunk
resumes); 3 waiting for the calibration (step 2); 1 an error or failed runs (their logs are packed too).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from armlib.reproduction import calibration, chunks, executors, experiments, reproduce  # noqa: E402
from armlib.config import load_config  # noqa: E402
from armlib.paths import resolve  # noqa: E402
from armlib.reproduction.report_sections import paper_tables  # noqa: E402
from armlib.runs import CHECKPOINT, RECORD  # noqa: E402
from armlib.reproduction.sections import get_scale  # noqa: E402

RUNS_ARCHIVE, SECTIONS_ARCHIVE = "reference_runs.tar.gz", "reference_sections.tar.gz"
ARCHIVE_PREFIX = chunks.ARCHIVE_PREFIX
DONE, CUT, WAITING, FAILED = 0, 2, 3, 1
# Sections that reload a trained model from its checkpoint (armlib.reproduction.analysis.load_run through
# report_sections._runs.pixels or paper_tables.tta_metrics) rather than reading records: Figs. 2, 4, 5 and the
# Hölder fit analyse the base model, the learned-curve section ARM's runs of Table 2, Table 6 evaluates its runs
# with test-time augmentation.
# tests/test_gpu_session.py checks this list against the functions the notebooks call.
CHECKPOINT_SECTIONS = ("variance_maps", "loss_vs_variance", "holder", "confidence_quadrants", "learned_curve",
                       "table6")
TTA_SECTION = "table6"          # its checkpoint reads are cached per run (tta.json) right after training
# The runs whose checkpoints the other sections read: (section, table, rows, first seed only).
CHECKPOINT_READS = tuple((key, "table1", ("base",), True) for key in CHECKPOINT_SECTIONS[:4]) + (
    ("learned_curve", "table2", ("norm_l2",), False),)
TTA_FILE = chunks.TTA_FILE


def committed_archive(scale: str) -> Path:
    return ROOT / "reports" / scale / RUNS_ARCHIVE


def _shown(path: Path) -> Path:
    """``path`` relative to the repository where it lies inside it (messages)."""
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def calibration_gate(scale: str) -> str | None:
    """Why the scale's reference must not be trained yet (one line), or None when its calibration is complete and
    its config trains at the chosen T with the calibration's unresolved classes."""
    path = calibration.committed_dir(scale) / "calibration.json"
    if not path.exists():
        return f"{_shown(path)} does not exist: calibrate the scale first (scripts/gpu_calibration.sh)"
    cal = json.loads(path.read_text())
    if cal.get("missing_runs") or cal.get("chosen_T") is None:
        return (f"the calibration in {_shown(path.parent)} is incomplete (chosen_T "
                f"{cal.get('chosen_T')}, {len(cal.get('missing_runs') or [])} run(s) missing): resume it first")
    cfg = load_config(get_scale(scale).config_for({}))
    if cfg.iterations != cal["chosen_T"]:
        return f"the config trains {cfg.iterations} iterations, the calibration chose T = {cal['chosen_T']}: set it"
    if sorted(cfg.unresolved_classes) != sorted(cal.get("unresolved_classes") or []):
        return (f"the config's unresolved_classes {list(cfg.unresolved_classes)} are not the calibration's "
                f"{cal.get('unresolved_classes')}: set them")
    return None


def plan(scale: str, keys: list[str], runs_dir: str, data_root: str) -> tuple[list, list, list]:
    """The runs of sections ``keys``, each once, in three groups: (records suffice, Table 6's runs evaluated with
    test-time augmentation right after training, runs whose checkpoints a figure section reads)."""
    sc = get_scale(scale)
    every = experiments.plan_sections(keys, sc, runs_dir, None, data_root)
    read = {str(r.out) for key, table, rows, first_only in CHECKPOINT_READS if key in keys
            for r in experiments.plan(table, sc, runs_dir, None, data_root, rows, first_only)}
    tta = ({str(r.out) for r in experiments.plan(TTA_SECTION, sc, runs_dir, None, data_root)} - read
           if TTA_SECTION in keys else set())
    return ([r for r in every if str(r.out) not in read | tta], [r for r in every if str(r.out) in tta],
            [r for r in every if str(r.out) in read])


def finished(first: list, tta: list, last: list, sections_done: bool) -> list:
    """The runs a chunk packs: with a record; Table 6's with its ``tta.json`` too; those whose checkpoint a figure
    section reads only once the sections were made (module docstring, step 5)."""
    return ([r for r in first if r.record_path.exists()]
            + [r for r in tta if r.record_path.exists() and (r.out / TTA_FILE).exists()]
            + [r for r in last if r.record_path.exists() and sections_done])


# Shared with the chunks of armlib.reproduction.chunks (the quick scale's full plan).
unpack, pack, run_sections = chunks.unpack, chunks.pack, chunks.run_sections


def chunk(args) -> int:
    """One chunk (module docstring); returns the exit status."""
    runs_dir = resolve(args.runs_dir)
    reused = unpack(args.archive, runs_dir) if args.archive.exists() else 0
    print(f"reference: {reused} finished run(s) unpacked from {args.archive}", flush=True)
    if args.require_calibration and (reason := calibration_gate(args.scale)):
        print(f"reference: not started: {reason}", flush=True)
        return WAITING
    first, tta, last = plan(args.scale, args.only, args.runs_dir, args.data_root)
    runs = first + tta + last
    if len(finished(first, tta, last, sections_done=True)) == len(runs):
        print(f"reference: all {len(runs)} runs finished already; their sections were written by the chunk that "
              "trained them", flush=True)
        return DONE
    if any(r.record_path.exists() and not (r.out / CHECKPOINT).exists() for r in last):
        print("reference: error: a run whose checkpoint a section reads has a record but no checkpoint, while other "
              "runs are missing; pack such runs only with their sections (see --help)", flush=True)
        return FAILED
    sc = get_scale(args.scale)
    status, sections_done = CUT, False
    # The cap's SIGTERM goes through executors.signals_as_interrupts: every training run is stopped cleanly.
    timer = threading.Timer(args.seconds, os.kill, (os.getpid(), signal.SIGTERM))
    timer.daemon = True
    timer.start()
    try:
        with executors.signals_as_interrupts():
            executors.execute(first, sc, data_root=args.data_root, device=args.device, jobs=args.jobs,
                                desc="reference runs (records suffice)")
            executors.execute(tta, sc, data_root=args.data_root, device=args.device, jobs=args.jobs,
                                desc="reference runs (Table 6)")
            for r in tta:   # cached in the run folder, so Table 6 needs no checkpoint of it later
                paper_tables.tta_metrics(r, sc, args.device)
            executors.execute(last, sc, data_root=args.data_root, device=args.device, jobs=args.jobs,
                                desc="reference runs (checkpoints read)")
            run_sections(args.scale, args.only, args.runs_dir, args.data_root, args.sections_dir, args.device,
                         args.jobs)
            status, sections_done = DONE, True
    except KeyboardInterrupt as exc:
        print(f"reference: cut off ({exc.args[0] if exc.args else 'SIGINT'}: the {args.seconds:g} s cap, or the "
              "machine's end); the next chunk resumes from the packed records", flush=True)
    except (RuntimeError, FileNotFoundError, ValueError) as exc:
        print(f"reference: error: {exc}", flush=True)
        status = FAILED
    finally:
        timer.cancel()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)   # a late cap must not cut the packing short
        done = [r.out for r in finished(first, tta, last, sections_done)]
        pack(done, args.out / RUNS_ARCHIVE, runs_dir, ARCHIVE_PREFIX)
        print(f"reference: {len(done)} of {len(runs)} run(s) finished, packed into "
              f"{args.out / RUNS_ARCHIVE}: commit it as {_shown(committed_archive(args.scale))}", flush=True)
        if sections_done:
            pack([args.sections_dir / "results", args.sections_dir / "figures"], args.out / SECTIONS_ARCHIVE,
                 args.sections_dir)
            print(f"reference: every section written; {args.out / SECTIONS_ARCHIVE} holds results/ and figures/ "
                  f"(unpack into reports/{args.scale}/, then `armlib report --out-dir reports/{args.scale}`)",
                  flush=True)
    return status


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", default="gpu")
    p.add_argument("--only", nargs="+", metavar="SECTION", default=None,
                   help=f"these sections and their runs only (default every one: {' '.join(reproduce.NOTEBOOKS)})")
    p.add_argument("--seconds", type=float, required=True, help="time cap of this chunk (training and sections)")
    p.add_argument("--out", type=Path, required=True, help="where the archives go ($OUT on the GPU machine)")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--data-root", default="data")
    p.add_argument("--sections-dir", type=Path, default=None,
                   help="results/ and figures/ of the sections (default <runs-dir>/<scale>_sections)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--jobs", type=int, default=None, help="training runs at once (default: the scale's)")
    p.add_argument("--require-calibration", action="store_true",
                   help="train nothing while the scale's committed calibration is incomplete or not applied")
    p.add_argument("--archive", type=Path, default=None,
                   help="records of earlier chunks to resume from (default reports/<scale>/reference_runs.tar.gz)")
    args = p.parse_args(argv)
    if args.seconds <= 0:
        p.error("--seconds must be > 0")
    if args.sections_dir is None:
        args.sections_dir = resolve(args.runs_dir) / f"{args.scale}_sections"
    args.sections_dir = args.sections_dir.resolve()
    args.archive = args.archive or committed_archive(args.scale)
    try:
        args.only = reproduce.select(args.only)
    except ValueError as exc:
        p.error(str(exc))
    return args


if __name__ == "__main__":
    sys.exit(chunk(parse_args()))
