"""The command line speaks one dialect and answers at once (issue 21): --help imports no torch nor pandas, one seed
syntax, one-line errors naming the nearest valid key, --debug for every command, relative paths from the current
folder."""
from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from armlib import cli, commands
from armlib.errors import nearest
from armlib.paths import CONFIG_DIR, REPO_ROOT

HELP_PROBE = """
import sys
from armlib.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("HEAVY", sorted(m for m in ("torch", "pandas", "matplotlib") if m in sys.modules), file=sys.stderr)
"""


@pytest.mark.parametrize("argv", [["--help"], *[[name, "--help"] for name in cli.COMMANDS]])
def test_help_imports_neither_torch_nor_pandas_nor_matplotlib(argv):
    env = {"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", HELP_PROBE, *argv], capture_output=True, text=True, env=env,
                          timeout=120)
    assert "usage: armlib" in proc.stdout, proc.stderr
    heavy = proc.stderr.rsplit("HEAVY", 1)[1]
    assert heavy.strip() == "[]", f"armlib {' '.join(argv)} imported {heavy.strip()}"


def parse(name: str, argv: list[str]) -> argparse.Namespace:
    parser = cli._OneLineParser(prog=f"armlib {name}")
    cli.add_command_arguments(name, parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize("name", ["reproduce", "calibrate"])
def test_one_seed_syntax_for_every_command(name):
    spaced, commas, mixed = (commands.flatten(parse(name, argv).seeds)
                             for argv in (["--seeds", "100", "101", "102"], ["--seeds", "100,101,102"],
                                          ["--seeds", "100,101", "102"]))
    assert spaced == commas == mixed == [100, 101, 102]


def test_calibrate_iterations_read_both_forms():
    assert commands.flatten(parse("calibrate", ["--iterations", "800", "1600"]).iterations) == [800, 1600]
    assert commands.flatten(parse("calibrate", ["--iterations", "800,1600"]).iterations) == [800, 1600]


@pytest.mark.parametrize("argv, expected", [
    (["calibrate", "--scale", "fast"], "invalid choice: 'fast'"),
    (["calibrate", "--seeds", "1,x"], "expected an integer, got 'x'"),
    (["reproduce", "--seeds", "0", "0"], "repeated"),
])
def test_bad_arguments_are_one_line(argv, expected, capsys):
    try:
        status = cli.main(argv)
    except SystemExit as exc:   # argparse's own checks
        status = exc.code
    assert status != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err and err.startswith(f"armlib {argv[0]}: error:"), err


def test_unknown_key_names_the_nearest_valid_one(capsys):
    assert nearest("lr", ["base_lr", "lr_power", "loss"]) == "base_lr"    # difflib alone finds nothing
    assert nearest("iteratons", ["iterations", "seed"]) == "iterations"
    assert nearest("zzz", ["base_lr"]) is None
    assert cli.main(["train", "--config", str(CONFIG_DIR / "smoke.yaml"), "--out", "unused", "lr=abc"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown config key 'lr' (did you mean 'base_lr'?)" in err, err


@pytest.mark.parametrize("argv", [
    ["train", "--config", str(CONFIG_DIR / "smoke.yaml"), "--out", "unused", "lr=abc"],
    ["report", "--out-dir", "no/such/folder"],
    ["reproduce", "--scale", "smoke", "--only", "no_such_notebook", "--dry-run"],
])
def test_debug_shows_the_traceback_of_every_command(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) != 0                       # one line without --debug
    assert "Traceback" not in capsys.readouterr().err
    with pytest.raises(Exception):                   # the exception itself with it, wherever --debug stands
        cli.main([*argv, "--debug"])


def test_relative_paths_mean_the_current_folder_in_every_argument(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    args = parse("train", ["--config", "my.yaml", "--out", "runs/mine", "data_root=data", "base_lr=0.1"])
    assert args.config == work / "my.yaml" and args.out == work / "runs" / "mine"
    assert args.overrides == [f"data_root={work / 'data'}", "base_lr=0.1"]
    args = parse("reproduce", ["--out-dir", "rep", "--runs-dir", "r", "--data-root", "d"])
    assert (args.out_dir, args.runs_dir, args.data_root) == (work / "rep", work / "r", work / "d")
    defaults = parse("reproduce", [])                # defaults: the repository's folders, wherever one starts
    assert (defaults.runs_dir, defaults.data_root) == (REPO_ROOT / "runs", REPO_ROOT / "data")
    assert defaults.out_dir is None   # reports/, or reports/<scale>-full/ with --plan full (run_reproduce)
    assert parse("compare", ["a", "b"]).reference == work / "a"
    assert parse("calibrate", ["--runs-dir", "r"]).runs_dir == work / "r"
    assert parse("report", ["--out-dir", "x"]).out_dir == work / "x"
