"""The ``medexport`` command: one module per command group, each owning its parsers
(``add_parsers``) and handlers (``COMMANDS``); here only their assembly and ``main``.

A MedError is printed as one line on stderr (exit code 2), never as a traceback.
torch is imported only by ``build`` from a registered model.
"""
from __future__ import annotations

import argparse
import sys
import textwrap

from medexport.engine.errors import MedError

from . import bench, build, calibrate, commission, demo, inspect, pacs, predict, serve, trust
from .served import refuse_served

# clinic commands first in the help, then those that make, sign and serve bundles
CLINIC = (predict, inspect, trust, pacs, commission, demo)
BUILDING = (build, calibrate, bench, serve)
MODULES = CLINIC + BUILDING
CLINIC_COMMANDS = ("predict", "inspect", "selftest", "verify", "listen", "pacs", "commission", "shadow", "demo")
BUILD_COMMANDS = ("build", "calibrate", "sign", "keygen", "bench", "serve", "export-triton", "doctor", "models")
COMMANDS = {name: cmd for module in MODULES for name, cmd in module.COMMANDS.items()}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medexport", description="Export, compile, verify and run medical models offline.",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           help="'medexport COMMAND --help' for its arguments")
    for module in MODULES:
        module.add_parsers(sub)
    p.epilog = _grouped(sub)
    return p


def _grouped(sub) -> str:
    """The commands in two lists, clinic then building (argparse lists subcommands in one)."""
    rows = {a.dest: a.help for a in sub._choices_actions}
    sub._choices_actions.clear()  # listed once, below, in their groups
    clinic = [name for name in CLINIC_COMMANDS if name in rows]
    building = [name for name in BUILD_COMMANDS if name in rows]
    building += [name for name in rows if name not in CLINIC_COMMANDS + BUILD_COMMANDS]  # a new one: not lost
    width = max(map(len, rows)) + 2

    def listing(title, names):
        lines = [title]
        for name in names:
            lines += textwrap.wrap(rows[name], 100, initial_indent=f"  {name:<{width}}",
                                   subsequent_indent=" " * (width + 2))
        return "\n".join(lines)

    return listing("clinic commands (run, check and look after models):", clinic) + "\n\n" + \
        listing("build commands (make, calibrate, sign, time and serve bundles):", building)


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        refuse_served(args)
        return COMMANDS[args.command](args) or 0
    except MedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
