"""``medexport demo``: build the demo bundles, then open the viewer (export/demo.py)."""
from __future__ import annotations


def add_parsers(sub) -> None:
    m = sub.add_parser("demo", help="build the demo bundles, then open the viewer (headless: print results)")
    m.add_argument("--bundles", default="bundles", help="folder for the demo bundles (default ./bundles)")
    m.add_argument("--build-only", action="store_true", help="build (or check) the demo bundles, open nothing")
    m.add_argument("--headless", action="store_true", help="print results even when a display exists")


def cmd_demo(args) -> int:
    from ..demo import main as demo

    return demo(args.bundles, build_only=args.build_only, headless=args.headless)


COMMANDS = {"demo": cmd_demo}
