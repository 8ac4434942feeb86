"""`armlib reproduce`: every training run, then every notebook through papermill, then the report.

Order matters for speed: all runs of all selected notebooks are planned first and executed in one pool
(``jobs`` at a time), so parallel hardware stays busy across tables; the notebooks then find their
runs' records and only evaluate, summarise and plot. Re-running skips every run whose record exists and
resumes one that left a checkpoint; Ctrl-C or SIGTERM stops every training process first. ``--dry-run``
checks the data and prints the plan; ``--executor submitit-local|slurm`` sends the runs through submitit.

`armlib goldens` writes the smoke-scale copies of the notebooks that nbval checks in ``make test``.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from armlib import commands
from armlib.errors import UsageError, check_out_folder
from armlib.paths import NOTEBOOK_DIR, REPO_ROOT, resolve
from armlib.config import DEVICES
from armlib.reproduction.sections import SCALES, SECTION_KEYS, confirmatory_plan, get_scale

NOTEBOOKS = list(SECTION_KEYS)            # notebooks/<key>.ipynb, in report order
GOLDEN_DIR = REPO_ROOT / "tests" / "notebooks"
GOLDEN_RESULTS = REPO_ROOT / "tests" / "goldens" / "smoke"   # the smoke result files the goldens wrote
TUTORIALS = ["use_arm"]   # notebooks that are no report section (no result files), golden at scale="smoke"
GOLDEN_PARAMETERS = {"scale": "smoke", "out_dir": "reports/smoke", "runs_dir": "runs/nbval", "device": "cpu"}


def notebook_path(key: str) -> Path:
    return NOTEBOOK_DIR / f"{key}.ipynb"


def select(only: list[str] | None) -> list[str]:
    if not only:
        return list(NOTEBOOKS)
    unknown = [k for k in only if k not in NOTEBOOKS]
    if unknown:
        raise ValueError(f"unknown notebook(s) {unknown}; choose from {NOTEBOOKS}")
    return [k for k in NOTEBOOKS if k in only]


def reproduce(scale: str = "quick", only: list[str] | None = None, data_root: str = "data",
              out_dir: str = "reports", runs_dir: str = "runs", device: str = "auto", seeds=None,
              jobs: int | None = None, progress: bool = True, executor: str = "pool",
              cluster=None) -> Path:
    """Run the selected notebooks at ``scale`` and render ``<out_dir>/index.html``; return its path.

    Holds ``<runs_dir>/<scale>/.lock`` throughout (:func:`armlib.reproduction.executors.runs_lock`), so a second
    reproduction into the same runs folder is refused instead of training into the same run folders.
    ``executor`` and ``cluster`` choose where the training runs go (:func:`armlib.reproduction.executors.execute`).

    Raises:
        armlib.reproduction.executors.RunsFolderBusy, FileNotFoundError (missing data), RuntimeError (failed runs),
        ValueError (unknown notebook or scale).
    """
    import papermill

    from armlib.reproduction import calibration, executors, experiments, notebook, report, results, verdicts

    keys = select(only)
    params = {"scale": scale, "seeds": seeds, "data_root": data_root, "device": device, "out_dir": out_dir,
              "runs_dir": runs_dir, "jobs": jobs}
    sc = get_scale(scale)
    with executors.runs_lock(resolve(runs_dir) / scale):
        runs = experiments.plan_sections(keys, sc, runs_dir, seeds, data_root)
        executors.execute(runs, sc, data_root=data_root, device=device, jobs=jobs, progress=progress,
                            desc="training runs", executor=executor, cluster=cluster)
        results.discard_other_scales(out_dir, scale)
        calibration.attach(scale, out_dir)
        results.attach_pilot(confirmatory_plan(sc), out_dir)
        notebook.write_training_meta(runs, scale, out_dir)
        executed = resolve(out_dir) / "executed"
        executed.mkdir(parents=True, exist_ok=True)
        for key in tqdm(keys, desc="notebooks", unit="nb", disable=not progress):
            start = time.perf_counter()
            papermill.execute_notebook(str(notebook_path(key)), str(executed / f"{key}.ipynb"), parameters=params,
                                       cwd=str(NOTEBOOK_DIR), progress_bar=False, kernel_name="python3")
            tqdm.write(f"{key}: {time.perf_counter() - start:.0f} s") if progress else None
        verdicts.write(out_dir)   # once, after every section's results exist
        return report.render(out_dir)


def plan_text(scale: str = "quick", only: list[str] | None = None, data_root: str = "data",
              out_dir: str = "reports", runs_dir: str = "runs", seeds=None) -> str:
    """What ``reproduce`` would do, without training or generating data: one line per planned run (done,
    to resume from its checkpoint, or to train) and the notebooks.

    Raises:
        FileNotFoundError: a real dataset the plan needs is missing (the same check ``reproduce`` makes first).
    """
    from armlib.reproduction import experiments

    keys = select(only)
    sc = get_scale(scale)
    runs = experiments.plan_sections(keys, sc, runs_dir, seeds, data_root)
    experiments.check_data(runs, sc, data_root)
    state = {r.out: "done" if r.record_path.exists() else "resume" if (r.out / "checkpoint.pt").exists()
             else "train" for r in runs}
    counts = {s: list(state.values()).count(s) for s in ("done", "resume", "train")}
    synthetic = sc.dataset == "synth"
    lines = [f"scale {scale}: {len(runs)} run(s) in {resolve(runs_dir) / scale} "
             f"({counts['done']} done, {counts['resume']} to resume, {counts['train']} to train); "
             f"data under {resolve(data_root)}: " + ("synthetic, generated on first use" if synthetic else "found")]
    lines += [f"  {state[r.out]:<6} {r.row:<24} seed {r.seed}  {r.out.name}" for r in runs]
    lines.append(f"notebooks -> {resolve(out_dir) / 'executed'}: {' '.join(keys)}")
    return "\n".join(lines)


def make_goldens(only: list[str] | None = None) -> list[Path]:
    """Execute each notebook at smoke scale into ``tests/notebooks/<key>.ipynb`` (nbval's goldens), and copy
    the result files they wrote to ``tests/goldens/smoke/`` (compared at a measured tolerance by
    ``tests/test_goldens.py``; nbval compares only the cells whose output is the same on every machine)."""
    import shutil

    import papermill

    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    keys = select([k for k in only if k not in TUTORIALS]) if only else list(NOTEBOOKS)
    tutorials = [k for k in TUTORIALS if not only or k in only]
    written = []
    for key in tqdm(keys + tutorials, desc="goldens", unit="nb"):
        target = GOLDEN_DIR / f"{key}.ipynb"
        parameters = GOLDEN_PARAMETERS if key in NOTEBOOKS else {"scale": "smoke"}
        papermill.execute_notebook(str(notebook_path(key)), str(target), parameters=parameters,
                                   cwd=str(GOLDEN_DIR), progress_bar=False, kernel_name="python3")
        tidy_golden(target)
        written.append(target)
    from armlib.reproduction import verdicts

    verdicts.write(GOLDEN_PARAMETERS["out_dir"])   # the comparison sections' claims, as reproduce evaluates them
    results = resolve(GOLDEN_PARAMETERS["out_dir"]) / "results"
    GOLDEN_RESULTS.mkdir(parents=True, exist_ok=True)
    for path in sorted(results.glob("*.csv")):
        if any(path.name in (f"{k}.csv", f"{k}_seeds.csv", f"claims_{k}.csv") for k in keys):
            shutil.copyfile(path, GOLDEN_RESULTS / path.name)
            written.append(GOLDEN_RESULTS / path.name)
    return written


def tidy_golden(path: Path) -> None:
    """Keep a golden small and machine-independent: drop image outputs and the stderr of unchecked cells
    (nbval compares only cells marked NBVAL_CHECK_OUTPUT) and papermill's absolute input/output paths."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            checked = "NBVAL_CHECK_OUTPUT" in cell.source
            cell.outputs = [o for o in cell.outputs if "image/png" not in o.get("data", {})
                            and (checked or o.get("name") != "stderr")]
    meta = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if key in meta:
            meta[key] = str(Path(meta[key]).relative_to(REPO_ROOT)) if Path(meta[key]).is_absolute() else meta[key]
    nbformat.write(nb, path)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:   # 0 used to fall back to the scale's default silently
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 1, got {text}")
    return value


def add_reproduce_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", default="quick", choices=list(SCALES))
    parser.add_argument("--only", nargs="+", metavar="NOTEBOOK", help=f"run only these of {NOTEBOOKS}")
    parser.add_argument("--data-root", type=commands.path_arg, default=REPO_ROOT / "data",
                        help="datasets: synthetic sets go here; real ones in DIR/cityscapes/ and DIR/ade20k/ "
                             "(default: the repository's data/)")
    parser.add_argument("--out-dir", type=commands.path_arg, default=None,
                        help="report, results/ and figures/ go here (default: the repository's reports/, with "
                             "--plan full reports/<scale>-full/)")
    parser.add_argument("--runs-dir", type=commands.path_arg, default=REPO_ROOT / "runs",
                        help="one folder per training run (default: the repository's runs/)")
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--seeds", type=commands.seeds_arg, nargs="+", metavar="SEED",
                        help="override the scale's seeds (--seeds 0 1 2)")
    parser.add_argument("--jobs", type=_positive_int, help="training runs at once (default: the scale's)")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the data, print the planned runs and notebooks, train nothing")
    parser.add_argument("--plan", default="reference", choices=list(PLANS),
                        help="reference: the committed reference's runs (the default, `make report`); full: every "
                             "comparison decided (the scale's '-full' variant, e.g. quick-full), in chunks that pack "
                             "their records into reports/<scale>-full/runs.tar.gz to commit")
    parser.add_argument("--minutes", type=float, default=None,
                        help="with --plan full: stop this chunk after this many minutes (default: run to the end)")
    commands.add_executor_arguments(parser)


PLANS = {"reference": "", "full": "-full"}   # --plan → the suffix of the scale it selects


def full_scale(scale: str) -> str:
    """The scale ``--plan full`` selects for ``scale`` (quick → quick-full).

    Raises:
        UsageError: the scale has no full plan (one line naming the scales that have one).
    """
    name = scale + PLANS["full"]
    if name not in SCALES:
        have = sorted(s.removesuffix(PLANS["full"]) for s in SCALES if s.endswith(PLANS["full"]))
        raise UsageError(f"--plan full: the {scale} scale has no full plan; scales with one: {have}")
    return name


def run_full(args) -> int:
    """``armlib reproduce --plan full``: one chunk (:func:`armlib.reproduction.chunks.chunk`); its out folder
    defaults to ``reports/<scale>-full``. 0 with every run and the report done, 2 cut at ``--minutes`` with runs
    left (the same command continues), 1 failed."""
    from armlib.reproduction import chunks, executors

    from armlib.reproduction import experiments

    scale = full_scale(args.scale)
    sc = get_scale(scale)
    out_dir = args.out_dir or str(REPO_ROOT / "reports" / scale)
    if not args.dry_run:
        check_out_folder(args.runs_dir, "--runs-dir")
        check_out_folder(out_dir, "--out-dir")
        archive = chunks.committed_archive(scale)
        if archive.exists():   # first, so that the plan below shows what the committed chunks finished as done
            chunks.unpack(archive, resolve(args.runs_dir))
    runs = experiments.plan_sections(select(args.only), sc, args.runs_dir, None, args.data_root)
    print(plan_text(scale, args.only, args.data_root, out_dir, args.runs_dir))
    print(chunks.forecast(runs, args.jobs or sc.jobs), flush=True)
    if args.dry_run:
        return 0
    status = chunks.chunk(scale, args.runs_dir, args.data_root, out_dir, args.device, args.jobs, args.minutes,
                          executor=args.executor, cluster=executors.cluster_options(args), keys=select(args.only))
    if status == chunks.DONE:
        print(f"report: {resolve(out_dir) / 'index.html'}")
    return status


def run_reproduce(args) -> int:
    """``armlib reproduce``: 0 with the report's path; 2 with one line for what the user gave (a folder nothing
    can be written to, a bad setting); 1 with one error line for a failure; 128 + signal when interrupted."""
    from armlib.reproduction import executors

    args.seeds = commands.flatten(args.seeds)
    for name in ("data_root", "out_dir", "runs_dir"):   # absolute Paths (armlib.commands); notebooks get strings
        setattr(args, name, None if getattr(args, name) is None else str(getattr(args, name)))
    try:
        if args.plan == "full":
            if args.seeds:
                raise UsageError("--seeds: a plan fixes its seeds; leave --seeds out with --plan full")
            return run_full(args)   # a chunk turns signals into interrupts itself, and packs first
        if args.minutes is not None:
            raise UsageError("--minutes: only chunks stop early; use it with --plan full")
        args.out_dir = args.out_dir or str(REPO_ROOT / "reports")
        if not args.dry_run:   # before any run starts, not at the first write of a training process
            check_out_folder(args.runs_dir, "--runs-dir")
            check_out_folder(args.out_dir, "--out-dir")
        with executors.signals_as_interrupts():
            if args.dry_run:
                print(plan_text(args.scale, args.only, args.data_root, args.out_dir, args.runs_dir, args.seeds))
                return 0
            cluster = executors.cluster_options(args)
            index = reproduce(args.scale, args.only, args.data_root, args.out_dir, args.runs_dir, args.device,
                              args.seeds, args.jobs, executor=args.executor, cluster=cluster)
    except KeyboardInterrupt as exc:
        print(f"armlib reproduce: interrupted ({exc.args[0] if exc.args else 'SIGINT'}); every training run was "
              "stopped; the same command resumes", file=sys.stderr)
        return 128 + getattr(exc, "signum", signal.SIGINT)
    except UsageError as exc:
        if args.debug:
            raise
        print(f"armlib reproduce: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except (executors.RunsFolderBusy, FileNotFoundError, ValueError, RuntimeError, ImportError) as exc:
        if args.debug:
            raise
        print(f"armlib reproduce: error: {exc}", file=sys.stderr)
        return 1
    print(f"report: {index}")
    return 0


def add_goldens_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--only", nargs="+", metavar="NOTEBOOK", help=f"regenerate only these of "
                        f"{NOTEBOOKS + TUTORIALS}")


def run_goldens(args) -> int:
    for path in make_goldens(args.only):
        print(path)
    return 0
