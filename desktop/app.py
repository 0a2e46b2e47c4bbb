"""``medexport-viewer``: the clinic's desktop app (PySide6). Talks to medexport.engine only.

    medexport-viewer [FILE...] [--model ID] [--run] [--screenshot out.png] [--quit]
    medexport-viewer --selftest      (headless: verify and run every shipped bundle)
"""
from __future__ import annotations

import argparse
import os
import sys


def offline_environment() -> None:
    """The app never reaches the network and writes only into its user data folder."""
    from .paths import data_dir

    os.environ.setdefault("MEDEXPORT_CACHE", str(data_dir() / "cache"))
    os.environ["OPENVINO_TELEMETRY_OPT_OUT"] = "1"  # runtime sends none; belt and braces
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"  # ONNX Runtime's device id and event upload
    os.environ.pop("HTTP_PROXY", None)
    os.environ.pop("HTTPS_PROXY", None)


def selftest(folders) -> int:
    """One line per shipped bundle: checksums verified, golden inputs through the best local backend."""
    from medexport.engine import MedError, open_bundle

    from .catalog import default_folders, find_bundles
    from .trust import open_options

    bundles, problems = find_bundles(default_folders(folders))
    for problem in problems:
        print(f"FAIL {problem}")
    if not bundles:
        print("FAIL no bundles found in " + ", ".join(str(f) for f in default_folders(folders)))
        return 1
    failed = len(problems)
    for entry in bundles:
        try:
            with open_bundle(entry.path, **open_options()) as model:
                check = model.self_test()
            print(check.line() + f"  load {model.runtime.load_seconds:.2f} s")
            failed += not check.passed
        except MedError as exc:
            print(f"FAIL {entry.model_id}: {exc}")
            failed += 1
    return 1 if failed else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="medexport-viewer", description="Open studies and run models, offline.")
    parser.add_argument("files", nargs="*", help="DICOM, PNG/JPEG, or ECG files or folders to open")
    parser.add_argument("--bundles", help="folder of installed bundles (in addition to the defaults)")
    parser.add_argument("--model", help="model id to select")
    parser.add_argument("--run", action="store_true", help="run the model on the first study")
    parser.add_argument("--screenshot", help="save a PNG of the main window")
    parser.add_argument("--quit", action="store_true", help="exit after --run / --screenshot")
    parser.add_argument("--selftest", action="store_true", help="verify every shipped bundle, headless")
    args = parser.parse_args(argv)
    offline_environment()
    if args.selftest:
        return selftest([args.bundles] if args.bundles else [])
    try:
        from .qt_main import run_app
    except ImportError as exc:
        print(f"error: the viewer needs PySide6 ({exc}). Fix: pip install 'medexport[desktop]'.", file=sys.stderr)
        return 2
    return run_app(args)


if __name__ == "__main__":
    sys.exit(main())
