"""``medexport build``, ``keygen``, ``doctor`` and ``models``: making bundles (torch is imported only
by ``build`` from a registered model)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from medexport.engine.errors import ValidationError
from medexport.engine.tasks import TASKS

from .argtypes import csv_list, name_list


def _age_range(text: str) -> list[float]:
    """'1-5' -> [1.0, 5.0] (years)."""
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


def _floats(text: str) -> tuple:
    return tuple(float(t) for t in csv_list(text))


def add_parsers(sub) -> None:
    b = sub.add_parser("build", help="build a bundle from a registered model or an .onnx file")
    b.add_argument("model", help="registered model name (see 'medexport models') or path to an .onnx file")
    b.add_argument("-o", "--out", required=True, help="bundle folder to write (or a .zip)")
    b.add_argument("--target", "--targets", dest="target", type=name_list, default=["auto"],
                   help="openvino, onnxruntime, tensorrt (comma-separated), or auto: the one 'medexport doctor' "
                        "says builds and runs best here (default)")
    b.add_argument("--precision", "--precisions", dest="precision", type=name_list, default=["fp32"],
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
    g.add_argument("--labels", type=csv_list, help="output labels in order, comma-separated")
    g.add_argument("--input-size", type=int, help="square input size in pixels")
    g.add_argument("--mean", type=_floats, default=(0.0,), help="normalisation mean on [0,1] pixels (default 0)")
    g.add_argument("--std", type=_floats, default=(1.0,), help="normalisation std (default 1)")
    g.add_argument("--activation", choices=["softmax", "sigmoid"], help="default: softmax for >1 label")
    g.add_argument("--threshold", type=float, default=0.5, help="operating threshold (default 0.5)")
    g.add_argument("--model-id", "--name", dest="model_id", help="model id in the bundle (default: the file name)")
    g.add_argument("--version", help="model version in the bundle (default 0.0.0)")
    g.add_argument("--intended-use", help="what the model is for and on which studies (shown by inspect and the viewer)")
    g.add_argument("--modalities", type=csv_list, help="DICOM Modality values it is for, e.g. CR,DX (others get a warning)")
    g.add_argument("--body-parts", type=csv_list, help="DICOM Body Part Examined values it is for, e.g. CHEST")
    g.add_argument("--views", type=csv_list, help="DICOM View Position values it is for, e.g. AP,PA")
    g.add_argument("--ages", type=_age_range, help="patient ages it is for, in years: MIN-MAX, e.g. 1-5")

    k = sub.add_parser("keygen", help="create an ECDSA P-256 key pair for signing bundles")
    k.add_argument("-o", "--out", required=True, help="folder for NAME.key.pem (private) and NAME.pub.pem (public)")
    k.add_argument("--name", default="medexport-signing", help="file name stem (default medexport-signing)")

    d = sub.add_parser("doctor", help="what this machine has and which targets it can build and run")
    d.add_argument("--json", action="store_true", help="print the report as JSON")

    sub.add_parser("models", help="list registered models")


def cmd_build(args) -> int:
    from ..build import BuildOptions, build

    targets = args.target
    if "auto" in targets:
        from ..doctor import best_target

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
    from medexport.engine.bundle_read import read_manifest

    from ..render import artifact_table, read_reports

    manifest, _, root = read_manifest(path)
    print("\n".join(artifact_table(manifest, root, read_reports(manifest, root))))
    return 0


def cmd_keygen(args) -> int:
    from medexport.engine.signing import generate_key_pair, read_key

    private, public = generate_key_pair(args.out, args.name)
    print(f"private key {private}  (keep it secret: it signs bundles)")
    print(f"public key  {public}  (give it to clinics: medexport verify --trust {public.name})")
    print(f"fingerprint {read_key(public).fingerprint}")
    return 0


def cmd_doctor(args) -> int:
    from ..doctor import render, report

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


COMMANDS = {"build": cmd_build, "keygen": cmd_keygen, "doctor": cmd_doctor, "models": cmd_models}
