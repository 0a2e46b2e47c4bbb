"""``medexport-viewer``: the clinic's desktop app (PySide6). Talks to medexport.engine only."""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="medexport-viewer")
    parser.add_argument("files", nargs="*")
    parser.add_argument("--bundles", help="folder of installed bundles")
    parser.add_argument("--model")
    parser.add_argument("--run", action="store_true")
    parser.add_argument("--screenshot")
    parser.add_argument("--quit", action="store_true")
    args = parser.parse_args(argv)
    try:
        from .qt_main import run_app
    except ImportError as exc:
        print(f"error: the viewer needs PySide6 ({exc}). Fix: pip install 'medexport[desktop]'.", file=sys.stderr)
        return 2
    return run_app(args)
