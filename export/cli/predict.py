"""``medexport predict``: studies through a bundle or a served model; results printed, as JSON or
a CSV table, outputs (masks, heatmaps, DICOM SEG / SR, reports) written to a folder."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from medexport.engine.errors import ConfigurationError, MedError

from .served import SERVED_FORM


def add_parsers(sub) -> None:
    r = sub.add_parser("predict", help="run studies through a bundle")
    r.add_argument("bundle", help=f"bundle folder or .zip, or a served model {SERVED_FORM}")
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
    r.add_argument("--out", help="folder for outputs: masks (PNG, or DICOM SEG for DICOM input), heatmaps (PNG); "
                                 "volumes: DICOM SEG + SR (TID 1500, mL) for a DICOM series, a label NIfTI for "
                                 "NIfTI, and a PDF report with three orthogonal slices")
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


def cmd_predict(args) -> int:
    from medexport.engine import open_bundle
    from medexport.engine.io.dicom import reduced_resolution
    from medexport.engine.pipeline import BatchStats, run
    from medexport.engine.studies import batch_row, write_batch_csv

    from ..render import render_result

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


COMMANDS = {"predict": cmd_predict}
