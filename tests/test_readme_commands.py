"""Every `armlib ...` and `make ...` command the README shows is one that parses and plans: `make -n <target>`,
`armlib reproduce ... --dry-run` (which checks the data layout: real data is stood in for by empty folders laid
out as data/README.md says), and the other commands' arguments through their own parsers."""
import re
import shlex
import subprocess

import pytest

from armlib import cli
from armlib.config import load_config
from armlib.paths import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()


def readme_commands() -> list[str]:
    fenced = [line.strip() for block in re.findall(r"```[a-z]*\n(.*?)```", README, re.S) for line in block.splitlines()]
    inline = [" ".join(c.split()) for c in re.findall(r"`([^`]+)`", re.sub(r"```.*?```", "", README, flags=re.S))]
    commands = [c.split("#")[0].strip() for c in fenced + inline if c.startswith(("armlib ", "make "))]
    return sorted({re.sub(r"\[([^\]]*)\]", r"\1", c) for c in commands})   # `[--only ...]`: optional, take it


COMMANDS = readme_commands()


def test_the_readme_shows_the_commands_that_matter():
    assert {"make report", "make test"} <= set(COMMANDS)
    assert any(c.startswith("armlib reproduce --scale paper") for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_parses_and_plans(command, tmp_path, monkeypatch, capsys):
    argv = shlex.split(command)
    if argv[0] == "make":
        assert subprocess.run(["make", "-n", "-C", str(REPO_ROOT), *argv[1:]], capture_output=True).returncode == 0
        return
    name, args = argv[1], argv[2:]
    if name == "reproduce":
        if "--data-root" in args:   # the README's relative data root, with real datasets as data/README.md lays out
            i = args.index("--data-root") + 1
            # One stand-in pair per split, named as Cityscapes names them: the plan checks names, decodes nothing.
            stem = "aachen/aachen_000000_000019"
            for folder, suffix in (("leftImg8bit/train", "leftImg8bit"), ("leftImg8bit/val", "leftImg8bit"),
                                   ("gtFine/train", "gtFine_labelIds"), ("gtFine/val", "gtFine_labelIds"),
                                   ("gtCoarse/train", "gtCoarse_labelIds")):
                path = tmp_path / "data" / "cityscapes" / folder / f"{stem}_{suffix}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
            args[i] = str(tmp_path / args[i])
        assert cli.main(["reproduce", *args, "--runs-dir", str(tmp_path / "runs"), "--dry-run"]) == 0, \
            capsys.readouterr().err
        assert "run(s) in" in capsys.readouterr().out
        return
    monkeypatch.chdir(REPO_ROOT)   # the README's commands run from the clone's root
    parser = cli.argparse.ArgumentParser(prog=f"armlib {name}")
    cli.add_command_arguments(name, parser)
    if args == ["--help"]:
        with pytest.raises(SystemExit, match="0"):
            parser.parse_args(args)
    else:
        parsed = parser.parse_args(args)
        if name == "train":   # the overrides name real config fields with valid values
            load_config(REPO_ROOT / parsed.config, parsed.overrides)
