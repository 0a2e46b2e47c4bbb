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
    from medexport.engine.backends.offline import runtimes_offline

    from .paths import data_dir

    os.environ.setdefault("MEDEXPORT_CACHE", str(data_dir() / "cache"))
    runtimes_offline()  # ONNX Runtime and OpenVINO telemetry off, before either is imported
    os.environ.pop("HTTP_PROXY", None)
    os.environ.pop("HTTPS_PROXY", None)


def selftest(folders) -> int:
    """One line per shipped bundle (checksums and signature verified, golden inputs through the best
    local backend against the source model, also from threads sharing the model), then every save
    path on a synthetic DICOM (PDF, SR, SEG, mask, heatmap, CSV), then the privacy checks: no
    runtime wrote under ~/intel, an audit entry names no file."""
    from medexport.engine import MedError
    from medexport.engine.open import self_test_bundle

    from .catalog import default_folders, find_bundles
    from .trust import open_options

    bundles, problems = find_bundles(default_folders(folders))
    for problem in problems:
        print(f"FAIL {problem}")
    if not bundles:
        print("FAIL no bundles found in " + ", ".join(str(f) for f in default_folders(folders)))
        return 1
    failed = len(problems)
    intel_before = _intel_files()
    for entry in bundles:
        try:
            check, = self_test_bundle(entry.path, every_artifact=False, **open_options())
            print(check.line())
            failed += not check.passed
        except MedError as exc:
            print(f"FAIL {entry.model_id}: {exc}")
            failed += 1
    from .save_check import save_paths_work

    for line in (*save_paths_work(bundles, open_options()), no_runtime_files(intel_before), audit_names_no_file()):
        print(line)
        failed += line.startswith("FAIL")
    return 1 if failed else 0


def _intel_files() -> set:
    intel = os.path.join(os.path.expanduser("~"), "intel")
    return {os.path.join(root, f) for root, _, files in os.walk(intel) for f in files}


def no_runtime_files(before: set) -> str:
    """OpenVINO's telemetry writes a client id under ~/intel when it is not switched off."""
    new = sorted(_intel_files() - before)
    if new:
        return f"FAIL a runtime wrote {', '.join(new)} (telemetry is not off)"
    return "PASS no runtime wrote under ~/intel"


def audit_names_no_file() -> str:
    """An audit entry for a study named like a patient holds neither the name nor the folder."""
    import json
    from types import SimpleNamespace

    from . import audit

    source = os.path.join(os.sep, "clinic", "Doe_Jane", "Doe_Jane_1234.dcm")
    result = SimpleNamespace(source=source, input_sha256="0" * 64, model_id="selftest", model_version="0",
                             bundle_sha256="0" * 64, backend="selftest", precision="fp32", scores={"x": 0.5},
                             timings_ms={}, input_meta={"StudyInstanceUID": "1.2.3"})
    line = json.dumps(audit.entry(result, user_action="selftest"))
    if "Doe" in line or "clinic" in line:
        return f"FAIL the audit log would record the file name: {line}"
    return "PASS the audit log records hashes and UIDs, no file names"


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
    from medexport.engine.host import install_line, missing_desktop_libraries

    missing = missing_desktop_libraries()
    if missing and not args.screenshot:
        print(f"error: this desktop lacks libraries the viewer's display needs: {', '.join(missing)}. "
              f"Fix: {install_line(missing)} (or run 'medexport-viewer --selftest' headless).", file=sys.stderr)
        return 2
    try:
        from .qt_main import run_app
    except ImportError as exc:
        print(f"error: the viewer needs PySide6 ({exc}). Fix: pip install 'medexport[desktop]'.", file=sys.stderr)
        return 2
    return run_app(args)


if __name__ == "__main__":
    sys.exit(main())
