"""`armlib <command>`: one entry point, each command implemented in the module that owns it.

Commands are imported lazily so that `armlib synth` does not pay for importing the trainer, and ``--help``
imports only the command's arguments (:mod:`armlib.commands` for the commands whose modules import torch), so it
answers at once. Each owning module exposes ``run(args) -> int`` and, unless :mod:`armlib.commands` holds them,
``add_arguments(parser)``.

A user's mistake (:data:`armlib.errors.USER_ERRORS`: a bad setting, path or dataset) is one line on stderr,
``armlib <command>: error: <message>``, and exit status 2; ``--debug`` anywhere on the line shows the
traceback instead (every command gets ``args.debug``). Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from armlib import commands
from armlib.errors import USER_ERRORS

COMMANDS = {
    "synth": ("armlib.data.synth", "write synthetic street scenes in the official Cityscapes layout"),
    "train": ("armlib.train", "train one model from a YAML config"),
    "calibrate": ("armlib.reproduction.calibration", "choose a scale's T on the base model and on whether ARM learns (seeds ≥ 100)"),
    "reproduce": ("armlib.reproduction.reproduce", "run every notebook at a scale and render the HTML report"),
    "report": ("armlib.reproduction.report", "render reports/index.html from result files"),
    "compare": ("armlib.reproduction.compare", "compare a rerun's claims with a reference report, claim by claim"),
    "goldens": ("armlib.reproduction.reproduce", "regenerate the smoke-scale notebook goldens used by nbval"),
}


class _OneLineParser(argparse.ArgumentParser):
    """argparse's errors as one line (argparse prints the whole usage first), pointing at ``--help``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_command_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    """Add command ``name``'s arguments to ``parser``: from :mod:`armlib.commands` when it holds them (no torch),
    else from the owning module (``add_<command>_arguments`` where a module owns several commands)."""
    add_arguments = getattr(commands, f"add_{name}_arguments", None)
    if add_arguments is None:
        module = importlib.import_module(COMMANDS[name][0])
        add_arguments = getattr(module, f"add_{name}_arguments", None) or module.add_arguments
    add_arguments(parser)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]  # no command takes a value "--debug"
    parser = argparse.ArgumentParser(prog="armlib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser.parse_args(argv)  # prints help or the "invalid choice" error naming COMMAND
        return 2
    name = argv[0]
    cmd_parser = _OneLineParser(prog=f"armlib {name}", description=COMMANDS[name][1],
                                epilog=f"{commands.PATHS_HELP}. --debug: show the traceback of an error instead of "
                                       "one line")
    add_command_arguments(name, cmd_parser)
    args = cmd_parser.parse_args(argv[1:])
    args.debug = debug
    module = importlib.import_module(COMMANDS[name][0])
    runner = getattr(module, f"run_{name}", None) or module.run
    try:
        return int(runner(args) or 0)
    except USER_ERRORS as exc:
        if debug:
            raise
        print(f"armlib {name}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
