"""`armlib reproduce`: every training run, then every notebook through papermill, then the report.

Order matters for speed: all runs of all selected notebooks are planned first and executed in one pool
(``jobs`` at a time), so parallel hardware stays busy across tables; the notebooks then find their
runs' records and only evaluate, summarise and plot. Re-running skips every run whose record exists.

`armlib goldens` writes the smoke-scale copies of the notebooks that nbval checks in ``make test``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from tqdm.auto import tqdm

from armlib.paths import NOTEBOOK_DIR, REPO_ROOT, resolve
from armlib.sections import SECTION_KEYS

NOTEBOOKS = list(SECTION_KEYS)            # notebooks/<key>.ipynb, in report order
GOLDEN_DIR = REPO_ROOT / "tests" / "notebooks"
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
              jobs: int | None = None, progress: bool = True) -> Path:
    """Run the selected notebooks at ``scale`` and render ``<out_dir>/index.html``; return its path."""
    import papermill

    from armlib import report, tables

    keys = select(only)
    params = {"scale": scale, "seeds": seeds, "data_root": data_root, "device": device, "out_dir": out_dir,
              "runs_dir": runs_dir, "jobs": jobs}
    runs = tables.train_all(keys, **{k: v for k, v in params.items() if k != "out_dir"}, progress=progress)
    tables.write_training_meta(runs, scale, out_dir)
    executed = resolve(out_dir) / "executed"
    executed.mkdir(parents=True, exist_ok=True)
    for key in tqdm(keys, desc="notebooks", unit="nb", disable=not progress):
        start = time.perf_counter()
        papermill.execute_notebook(str(notebook_path(key)), str(executed / f"{key}.ipynb"), parameters=params,
                                   cwd=str(NOTEBOOK_DIR), progress_bar=False, kernel_name="python3")
        tqdm.write(f"{key}: {time.perf_counter() - start:.0f} s") if progress else None
    return report.render(out_dir)


def make_goldens(only: list[str] | None = None) -> list[Path]:
    """Execute each notebook at smoke scale into ``tests/notebooks/<key>.ipynb`` (nbval's goldens)."""
    import papermill

    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    written = []
    for key in tqdm(select(only), desc="goldens", unit="nb"):
        target = GOLDEN_DIR / f"{key}.ipynb"
        papermill.execute_notebook(str(notebook_path(key)), str(target), parameters=GOLDEN_PARAMETERS,
                                   cwd=str(GOLDEN_DIR), progress_bar=False, kernel_name="python3")
        tidy_golden(target)
        written.append(target)
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


def add_reproduce_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", default="quick", choices=["smoke", "quick", "gpu", "paper"])
    parser.add_argument("--only", nargs="+", metavar="NOTEBOOK", help=f"run only these of {NOTEBOOKS}")
    parser.add_argument("--data-root", default="data", help="datasets (relative paths: from the repo root)")
    parser.add_argument("--out-dir", default="reports", help="report, results/ and figures/ go here")
    parser.add_argument("--runs-dir", default="runs", help="one folder per training run")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--seeds", type=int, nargs="+", help="override the scale's seeds")
    parser.add_argument("--jobs", type=int, help="training runs at once (default: the scale's)")


def run_reproduce(args) -> int:
    index = reproduce(args.scale, args.only, args.data_root, args.out_dir, args.runs_dir, args.device,
                      args.seeds, args.jobs)
    print(f"report: {index}")
    return 0


def add_goldens_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--only", nargs="+", metavar="NOTEBOOK", help=f"regenerate only these of {NOTEBOOKS}")


def run_goldens(args) -> int:
    for path in make_goldens(args.only):
        print(path)
    return 0
