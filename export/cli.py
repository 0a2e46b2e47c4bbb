"""The ``medexport`` command: build, predict, inspect, verify, sign, selftest, keygen, doctor, models.

A MedError is printed as one line on stderr (exit code 2), never as a traceback.
torch is imported only by ``build`` from a registered model.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from medexport.engine.errors import ConfigurationError, MedError, ValidationError
from medexport.engine.tasks import TASKS

from .cli_calibrate import add_parser as add_calibrate, cmd_calibrate
from . import cli_serve
from . import cli_pacs
from . import cli_trust
from . import cli_commission


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _age_range(text: str) -> list[float]:
    """'1-5' -> [1.0, 5.0] (years)."""
    import argparse

    lo, sep, hi = text.partition("-")
    try:
        return [float(lo), float(hi)] if sep else [float(lo), float(lo)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not MIN-MAX in years, e.g. 1-5") from None


def _intended_for(args) -> dict | None:
    """The header values an ONNX model is for, from --modalities/--body-parts/--views/--ages."""
    given = {"modalities": args.modalities, "body_parts": args.body_parts, "view_positions": args.views,
             "age_years": args.ages}
    given = {k: v for k, v in given.items() if v}
    return given or None


def _names(text: str) -> list[str]:
    """Comma-separated target or precision names; case does not matter (INT8 is int8)."""
    return [t.lower() for t in _csv(text)]


def _floats(text: str) -> tuple:
    return tuple(float(t) for t in _csv(text))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medexport", description="Export, compile, verify and run medical models offline.")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="build a bundle from a registered model or an .onnx file")
    b.add_argument("model", help="registered model name (see 'medexport models') or path to an .onnx file")
    b.add_argument("-o", "--out", required=True, help="bundle folder to write (or a .zip)")
    b.add_argument("--target", "--targets", dest="target", type=_names, default=["auto"],
                   help="openvino, onnxruntime, tensorrt (comma-separated), or auto: the one 'medexport doctor' "
                        "says builds and runs best here (default)")
    b.add_argument("--precision", "--precisions", dest="precision", type=_names, default=["fp32"],
                   help="fp32, fp16, int8 (comma-separated; default fp32)")
    b.add_argument("--golden", help="studies for on-target self-checks (default: shared real chest X-rays)")
    b.add_argument("--calib", help="training-like studies (folder or .npz[:split[:n]]): int8 calibration and the "
                                    "out-of-distribution reference")
    b.add_argument("--calib-size", type=int, help="number of calibration studies (default 300)")
    b.add_argument("--val", help="labelled validation data: the build reports metrics and guards int8 on them")
    b.add_argument("--metric", help="metric that guards the artifacts: auroc (findings with thresholds; the default "
                                    "for them), f1 (argmax classes; ECG rhythm), dice (segmentation)")
    b.add_argument("--max-drop", type=float, help="largest AUROC drop allowed against the source model (int8 default 0.005)")
    b.add_argument("--max-decision-drop", type=float,
                   help="largest sensitivity/specificity drop at the operating threshold (int8 default 0.02)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --out")
    b.add_argument("--keep-passing", action="store_true",
                   help="leave out an artifact that fails validation (recorded in the manifest) instead of failing")
    b.add_argument("--robustness", action="store_true",
                   help="with --val: report each artifact's metric under image / ECG perturbations (noise, JPEG, "
                        "rotation, mains, inverted lead, ...; docs/robustness.md)")
    b.add_argument("--robustness-studies", type=int, default=200, metavar="N",
                   help="validation studies the robustness report uses (a seeded subset; default 200)")
    b.add_argument("--sign-key", help="ECDSA private key (PEM) to sign the bundle with (see 'medexport keygen')")
    g = b.add_argument_group("ONNX sources (a registered model brings its own)")
    g.add_argument("--task", choices=[name for name, cls in TASKS.items() if cls.from_onnx],
                   help="what the model does (tasks a user's ONNX file can be built as)")
    g.add_argument("--labels", type=_csv, help="output labels in order, comma-separated")
    g.add_argument("--input-size", type=int, help="square input size in pixels")
    g.add_argument("--mean", type=_floats, default=(0.0,), help="normalisation mean on [0,1] pixels (default 0)")
    g.add_argument("--std", type=_floats, default=(1.0,), help="normalisation std (default 1)")
    g.add_argument("--activation", choices=["softmax", "sigmoid"], help="default: softmax for >1 label")
    g.add_argument("--threshold", type=float, default=0.5, help="operating threshold (default 0.5)")
    g.add_argument("--model-id", "--name", dest="model_id", help="model id in the bundle (default: the file name)")
    g.add_argument("--version", help="model version in the bundle (default 0.0.0)")
    g.add_argument("--intended-use", help="what the model is for and on which studies (shown by inspect and the viewer)")
    g.add_argument("--modalities", type=_csv, help="DICOM Modality values it is for, e.g. CR,DX (others get a warning)")
    g.add_argument("--body-parts", type=_csv, help="DICOM Body Part Examined values it is for, e.g. CHEST")
    g.add_argument("--views", type=_csv, help="DICOM View Position values it is for, e.g. AP,PA")
    g.add_argument("--ages", type=_age_range, help="patient ages it is for, in years: MIN-MAX, e.g. 1-5")

    r = sub.add_parser("predict", help="run studies through a bundle")
    r.add_argument("bundle", help="bundle folder or .zip")
    r.add_argument("inputs", nargs="+", help="studies: DICOM, PNG/JPEG, ECG files (WFDB .hea, aECG .xml, CSV), or "
                                             "folders (searched recursively, DICOM grouped by series)")
    r.add_argument("--backend", default="auto", type=str.lower, help="auto, openvino, onnxruntime, tensorrt")
    r.add_argument("--precision", default="auto", type=str.lower, help="auto, fp32, fp16, int8")
    r.add_argument("--frame", type=int, help="frame of a multi-frame DICOM")
    r.add_argument("--lead", help="ECG lead to analyse (default: the bundle's, usually II)")
    r.add_argument("--fs", type=float, help="sampling rate of a CSV ECG without one")
    r.add_argument("--explain", action="store_true", help="occlusion map when the model has no built-in CAM (slower)")
    r.add_argument("--pixel-size", type=float, metavar="MM",
                   help="measurements: mm per pixel of a picture (PNG/JPEG) that does not state its spacing")
    r.add_argument("--out", help="folder for outputs: masks (PNG, or DICOM SEG for DICOM input), heatmaps (PNG)")
    r.add_argument("--strict", action="store_true", default=None,
                   help="refuse studies outside the bundle's intended use instead of answering with a warning "
                        "(also $MEDEXPORT_STRICT=1)")
    r.add_argument("--reference", help="segmentation: a truth mask (PNG, foreground > 0) to report Dice against")
    decode = r.add_mutually_exclusive_group()
    decode.add_argument("--reduced-decode", action="store_true",
                        help="decode images reduced where the syntax allows even if the artifact's build check did "
                             "not pass (faster; scores may move beyond its tolerance: docs/speed.md). Default: "
                             "reduced only where the build showed the scores stay within tolerance")
    decode.add_argument("--full-decode", action="store_true",
                        help="always decode images at full resolution (also $MEDEXPORT_REDUCED_DECODE=0)")
    r.add_argument("--json", action="store_true", help="print results as JSON")
    r.add_argument("--csv", help="also write one row per study (file, decision, scores, error, backend, precision, "
                                 "times) to this CSV file (an existing one is refused unless --overwrite)")
    r.add_argument("--overwrite", action="store_true", help="replace an existing --csv file")

    i = sub.add_parser("inspect", help="show a bundle's manifest, card, artifacts and validation")
    i.add_argument("bundle", help="bundle folder or .zip")
    i.add_argument("--json", action="store_true", help="print the manifest and reports as JSON")

    cli_trust.add_parsers(sub)  # verify, sign
    cli_commission.add_parsers(sub)  # commission, shadow

    k = sub.add_parser("keygen", help="create an ECDSA P-256 key pair for signing bundles")
    k.add_argument("-o", "--out", required=True, help="folder for NAME.key.pem (private) and NAME.pub.pem (public)")
    k.add_argument("--name", default="medexport-signing", help="file name stem (default medexport-signing)")

    s = sub.add_parser("selftest", help="verify checksums and run golden inputs on every artifact that runs here")
    s.add_argument("bundles", nargs="+", help="bundle folders or .zip files")

    d = sub.add_parser("doctor", help="what this machine has and which targets it can build and run")
    d.add_argument("--json", action="store_true", help="print the report as JSON")

    sub.add_parser("models", help="list registered models")

    be = sub.add_parser("bench", help="benchmark every target x precision side by side (+ torch eager)")
    be.add_argument("items", nargs="+", help="registered model names and/or bundle folders")
    be.add_argument("--target", "--targets", dest="targets", type=_names, default=["openvino", "onnxruntime"],
                    help="targets to measure (comma-separated; default openvino,onnxruntime)")
    be.add_argument("--precision", "--precisions", dest="precisions", type=_names, default=["fp32", "fp16", "int8"],
                    help="precisions to measure (comma-separated; default fp32,fp16,int8)")
    be.add_argument("--data", help="labelled data for the metric column (default: the model's validation data)")
    be.add_argument("--batch", type=int, default=8, help="batch size for the throughput column")
    be.add_argument("--threads", type=int, help="inference threads (default: all cores)")
    be.add_argument("--study", help="file for the end-to-end column (default: a real CR radiograph DICOM)")
    be.add_argument("--syntaxes", action="store_true",
                    help="image bundles: end to end per transfer syntax and a 100-file mixed-syntax folder")
    be.add_argument("--out", help="folder for bench.csv and bench.json")

    add_calibrate(sub)

    m = sub.add_parser("demo", help="build the demo bundles, then open the viewer (headless: print results)")
    m.add_argument("--bundles", default="bundles", help="folder for the demo bundles (default ./bundles)")
    m.add_argument("--build-only", action="store_true", help="build (or check) the demo bundles, open nothing")
    m.add_argument("--headless", action="store_true", help="print results even when a display exists")
    cli_serve.add_parsers(sub)
    cli_pacs.add_parsers(sub)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args) or 0
    except MedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def cmd_build(args) -> int:
    from .build import BuildOptions, build

    targets = args.target
    if "auto" in targets:
        from .doctor import best_target

        targets = list(dict.fromkeys(best_target() if t == "auto" else t for t in targets))
        print(f"[build] --target auto: {', '.join(targets)} (what 'medexport doctor' says runs best here)",
              file=sys.stderr)
    options = BuildOptions(targets=targets, precisions=args.precision, golden=args.golden, calib=args.calib,
                           calib_size=args.calib_size, val=args.val, metric=args.metric, max_drop=args.max_drop, max_decision_drop=args.max_decision_drop,
                           overwrite=args.overwrite, keep_passing=args.keep_passing, sign_key=args.sign_key,
                           robustness=args.robustness, robustness_studies=args.robustness_studies, task=args.task, labels=args.labels,
                           input_size=args.input_size, mean=args.mean, std=args.std, activation=args.activation,
                           threshold=args.threshold, model_id=args.model_id, version=args.version,
                           intended_use=args.intended_use, intended_for=_intended_for(args))
    try:
        path = build(args.model, args.out, options, emit=lambda m: print(m, file=sys.stderr, flush=True))
    except ValidationError as exc:  # the whole report goes to a file; the error stays one line
        if exc.report:
            from medexport.engine.atomic import write_new

            out = Path(args.out)
            saved = write_new(out.with_name(out.name + ".refused-report.json"),
                              json.dumps(exc.report, indent=2, default=str).encode())
            print(f"the full validation report (every flipped case): {saved}", file=sys.stderr)
        raise
    from medexport.engine.bundle import read_manifest

    from .render import artifact_table, read_reports

    manifest, _, root = read_manifest(path)
    print("\n".join(artifact_table(manifest, root, read_reports(manifest, root))))
    return 0


def cmd_predict(args) -> int:
    from medexport.engine import open_bundle
    from medexport.engine.io.fast_decode import reduced_resolution
    from medexport.engine.pipeline import BatchStats, run
    from medexport.engine.studies import batch_row, write_batch_csv

    from .render import render_result

    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise ConfigurationError(f"--out {args.out} is a file", expected="a folder for masks and heatmaps",
                                 fix="give a folder path (it is created if missing)")
    if args.csv and Path(args.csv).exists() and not args.overwrite:
        raise ConfigurationError(f"--csv {args.csv} exists already", expected="a new file name for the results table",
                                 fix="choose another name, or add --overwrite to replace it")
    failures, results, rows = 0, [], []
    with open_bundle(args.bundle, backend=args.backend, precision=args.precision, strict=args.strict) as model:
        studies, skipped = _studies(args.inputs, model.study_kind)
        if skipped:
            print(f"skipped {skipped} file(s) in the folder(s) that are not {model.study_kind} studies",
                  file=sys.stderr)
        progress = _Progress(len(studies), enabled=args.csv is not None or len(studies) > 1)
        stats = BatchStats()
        opts = dict(frame=args.frame, lead=args.lead, fs=args.fs, explain=args.explain, pixel_size_mm=args.pixel_size)

        decode = True if args.reduced_decode else False if args.full_decode else None

        def prepare(study):
            with reduced_resolution(decode):
                return model.prepare(study.path, **opts)

        def predict(study):
            with reduced_resolution(decode):
                return model.predict(study.path, **opts)

        # a local bundle decodes the next studies on worker threads while it runs those already read
        # in one pass; a model served by Triton batches on the server (engine/pipeline.run)
        stream = run(model, studies, prepare, predict, stats=stats)
        for study, result, error in stream:
            progress.step(study.path)
            extra = {}
            if result is not None:
                try:
                    extra = _write_outputs(result, study.path, args)
                except MedError as exc:
                    result, error = None, str(exc)
            rows.append(batch_row(study, result, error))
            if error is not None:
                failures += 1
                results.append({"source": study.path, "error": error})
                if not args.json:
                    progress.clear()
                    print(f"{study.path}: error: {error}", file=sys.stderr)
                continue
            results.append(result.to_dict() | extra)
            if not args.json:
                progress.clear()
                print(render_result(result))
                for key, value in extra.items():
                    print(f"  {key}: {value}")
        if len(studies) > 1:
            progress.clear()
            print(stats.line(), file=sys.stderr)
        progress.clear()
    if args.json:
        print(json.dumps(results, indent=2))
    if args.csv:
        written = write_batch_csv(rows, Path(args.csv), replace=args.overwrite)
        print(f"wrote {written} ({len(rows)} studies, {failures} failed)", file=sys.stderr)
    return 1 if failures else 0


def _studies(inputs: list[str], kind: str) -> tuple[list, int]:
    """Files as given (a file the model cannot read gets its own clear error), folders walked
    recursively with DICOM grouped by series, keeping the studies this bundle reads."""
    from medexport.engine.studies import Study, open_paths

    studies, skipped = [], 0
    for item in inputs:
        if Path(item).is_dir():
            found, _ = open_paths([item])
            studies += [s for s in found if s.kind == kind]
            skipped += sum(s.kind != kind for s in found)
        else:
            studies.append(Study(item, kind, Path(item).name))
    return studies, skipped


class _Progress:
    """'[12/100] file' on stderr while a batch runs, when stderr is a terminal."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.done = total, 0
        self.enabled = enabled and sys.stderr.isatty()

    def step(self, name: str) -> None:
        self.done += 1
        if self.enabled:
            width = 30
            filled = width * self.done // max(self.total, 1)
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {Path(name).name[:40]:<40}")
            sys.stderr.flush()

    def clear(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 90 + "\r")
            sys.stderr.flush()


def _write_outputs(result, path: str, args) -> dict:
    """Masks / heatmaps into --out, and Dice against --reference; returns what to report."""
    extra = {}
    if args.reference:
        if "mask" not in result.saves:
            raise ConfigurationError("--reference is a truth mask: it applies to segmentation bundles",
                                     fix="drop --reference")
        import numpy as np
        from PIL import Image

        truth = np.asarray(Image.open(args.reference)) > 0
        if truth.shape != result.mask.shape:
            raise ConfigurationError(f"--reference is {truth.shape[1]}x{truth.shape[0]}, the mask "
                                     f"{result.mask.shape[1]}x{result.mask.shape[0]}", fix="give the matching mask")
        extra["dice_vs_reference"] = round(result.dice(truth), 4)
    if args.out:
        try:
            extra |= {k: str(v) for k, v in result.save_outputs(Path(args.out), path).items()}
        except OSError as exc:  # disk full, permissions: this study's outputs are lost, say so
            raise ConfigurationError(f"could not write the outputs of {path} into {args.out} ({exc.strerror})",
                                     fix="check the --out folder's free space and permissions") from None
    return extra


def cmd_inspect(args) -> int:
    from .render import inspect_bundle

    text, data = inspect_bundle(args.bundle)
    print(json.dumps(data, indent=2, default=str) if args.json else text)
    return 0


def cmd_keygen(args) -> int:
    from medexport.engine.signing import generate_key_pair, read_key

    private, public = generate_key_pair(args.out, args.name)
    print(f"private key {private}  (keep it secret: it signs bundles)")
    print(f"public key  {public}  (give it to clinics: medexport verify --trust {public.name})")
    print(f"fingerprint {read_key(public).fingerprint}")
    return 0


def cmd_selftest(args) -> int:
    from medexport.engine.selftest import self_test_bundle

    failed = 0
    for path in args.bundles:
        for check in self_test_bundle(path):
            failed += not check.passed and not check.skipped
            print(check.line())
    return 1 if failed else 0


def cmd_doctor(args) -> int:
    from .doctor import render, report

    info = report()
    print(json.dumps(info, indent=2) if args.json else render(info))
    return 0


def cmd_models(args) -> int:
    from medexport.models.registry import get_config, list_models

    for name in list_models():
        c = get_config(name)
        state = "trained" if c.trained else "random weights (speed work)"
        print(f"{name:<18} {c.version:<7} {c.task:<15} {'x'.join(map(str, c.input_shape)):<10} {state}")
    return 0


def cmd_bench(args) -> int:
    from .bench import bench, render, write

    rows = bench(args.items, args.targets, args.precisions, data=args.data, batch=args.batch, threads=args.threads,
                 study=args.study, syntaxes=args.syntaxes, emit=lambda m: print(m, file=sys.stderr, flush=True))
    print(render(rows, args.threads, args.study))
    if args.out:
        for path in write(rows, Path(args.out)):
            print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_demo(args) -> int:
    from .demo import main as demo

    return demo(args.bundles, build_only=args.build_only, headless=args.headless)


COMMANDS = {"demo": cmd_demo, "bench": cmd_bench, "build": cmd_build, "predict": cmd_predict, "inspect": cmd_inspect, "selftest": cmd_selftest,
            "doctor": cmd_doctor, "models": cmd_models, "keygen": cmd_keygen,
            "calibrate": cmd_calibrate, **cli_serve.COMMANDS, **cli_trust.COMMANDS, **cli_pacs.COMMANDS,
            **cli_commission.COMMANDS}

if __name__ == "__main__":
    sys.exit(main())
