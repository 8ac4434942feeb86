"""What each ``armlib`` command accepts: its arguments, apart from the code that runs it.

``armlib --help`` and every ``armlib <command> --help`` must answer at once, so the arguments of the commands
whose modules import torch or pandas (train, calibrate, report) live here, in a module that imports neither
(``tests/test_cli.py`` checks ``sys.modules``; ``benchmarks/cli_help.py`` times it). The other commands' modules
are light and keep their own ``add_arguments``.

One dialect for every command:

* seeds: ``--seeds 0 1 2`` (``--seeds 0,1,2`` is read the same), as every list (``--iterations``);
* paths: a relative path given in an argument is relative to the current folder, in every argument (``--config``,
  ``--out``, ``--runs-dir``, ``data_root=`` ...); a default names the repository's own folder (``runs/``,
  ``reports/``, ``data/``), so ``make report`` and a notebook mean the same folders wherever they start.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from armlib.paths import REPO_ROOT

PATHS_HELP = ("relative paths in arguments are relative to the current folder; defaults name the repository's "
              "folders")
CALIBRATION_SEEDS = (100, 101, 102, 103, 104)   # kept apart from every reporting seed (0-4)
DEFAULT_ITERATIONS = (800, 1600, 3200)          # candidate T of the quick scale's calibration
PATH_FIELDS = ("data_root",)   # config fields that are paths: given on the command line, relative to the current folder


def path_arg(text: str) -> Path:
    """A path argument: absolute, relative ones taken from the current folder (module docstring)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return Path(os.path.abspath(os.path.expanduser(text)))


def seeds_arg(text: str) -> list[int]:
    """One item of ``--seeds``: an int, or several separated by commas (``0,1``)."""
    from armlib.errors import UsageError
    from armlib.reproduction.parameters import parse_seeds

    try:
        return parse_seeds(text, "seed")
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_ints_arg(text: str) -> list[int]:
    """One item of a list of whole numbers ≥ 1 (``--iterations 800 1600`` or ``800,1600``)."""
    try:
        values = [int(part) for part in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected whole numbers ≥ 1, got {text!r}")
    return values


def flatten(groups: list[list[int]] | None) -> list[int] | None:
    """``[[0, 1], [2]]`` (argparse's ``nargs="+"`` of list-valued items) → ``[0, 1, 2]``; None stays None."""
    return None if groups is None else [value for group in groups for value in group]


def override_arg(text: str) -> str:
    """A ``key=value`` config override; a relative path in a path field (:data:`PATH_FIELDS`) made absolute."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected key=value (e.g. base_lr=0.01), got {text!r}")
    if key.strip() in PATH_FIELDS and value.strip() and not os.path.isabs(os.path.expanduser(value.strip())):
        return f"{key}={os.path.abspath(value.strip())}"
    return text


def scale_names() -> list[str]:
    from armlib.reproduction.sections import SCALES   # light: dataclasses only

    return list(SCALES)


EXECUTORS = ("pool", "submitit-local", "slurm")   # where training runs go (armlib.reproduction.executors.execute)


def add_executor_arguments(parser) -> None:
    """``--executor`` (one of :data:`EXECUTORS`) and the submitit job's resources, for every command that
    trains runs (``armlib reproduce``, ``armlib calibrate``); :func:`armlib.reproduction.executors.cluster_options` reads them
    back."""
    group = parser.add_argument_group("executor", "where training runs go: 'pool' (default) runs `armlib train` "
                                      "processes on this machine; 'submitit-local' and 'slurm' submit one "
                                      "submitit job per run (on SLURM one job array, --jobs at once)")
    group.add_argument("--executor", default="pool", choices=EXECUTORS)
    group.add_argument("--slurm-partition", metavar="P", help="SLURM partition (default: the cluster's)")
    group.add_argument("--gpus-per-run", type=int, default=0, metavar="N", help="GPUs per run (submitit)")
    group.add_argument("--cpus-per-run", type=int, metavar="N", help="CPU cores per run (submitit)")
    group.add_argument("--timeout-min", type=int, default=24 * 60, metavar="MIN",
                       help="time limit of one job (submitit); a rerun resumes from the run's checkpoint")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=path_arg,
                        help="YAML config (see configs/ and armlib.config.TrainConfig)")
    parser.add_argument("--out", required=True, type=path_arg, help="run folder (checkpoint.pt, record.json, log.csv)")
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    parser.add_argument("overrides", nargs="*", metavar="key=value", type=override_arg,
                        help="config overrides, values in YAML (e.g. base_lr=0.01 reweight=arm)")


def add_calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", default="quick", choices=scale_names(), help="scale to calibrate (default quick)")
    parser.add_argument("--iterations", nargs="+", type=positive_ints_arg, default=[list(DEFAULT_ITERATIONS)],
                        metavar="T", help=f"candidate T (default {' '.join(map(str, DEFAULT_ITERATIONS))})")
    parser.add_argument("--seeds", nargs="+", type=seeds_arg, default=[list(CALIBRATION_SEEDS)], metavar="SEED",
                        help=f"calibration seeds, ≥ 100 (default {' '.join(map(str, CALIBRATION_SEEDS))})")
    parser.add_argument("--runs-dir", type=path_arg, default=REPO_ROOT / "runs", help="default: the repository's runs/")
    parser.add_argument("--data-root", type=path_arg, default=REPO_ROOT / "data", help="default: the repository's data/")
    parser.add_argument("--out", type=path_arg, default=None,
                        help="folder of the files (default: the repository's reports/<scale>/calibration)")
    parser.add_argument("--jobs", type=lambda t: positive_ints_arg(t)[0], default=None,
                        help="runs at once (default: the scale's)")
    parser.add_argument("--from-records", action="store_true",
                        help="train nothing: write the files from the records already in --runs-dir (an interrupted "
                             "calibration); runs without a record are listed as missing")
    add_executor_arguments(parser)


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out-dir", type=path_arg, default=REPO_ROOT / "reports",
                        help="folder holding results/ and figures/ (default: the repository's reports/)")
