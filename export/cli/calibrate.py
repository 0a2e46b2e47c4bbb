"""``medexport calibrate``: re-fit a bundle's temperature and threshold on a site's labelled studies
(engine/calibrate.py does the work; no torch)."""
from __future__ import annotations

import json
import sys


def add_parsers(sub) -> None:
    c = sub.add_parser("calibrate", help="fit a bundle's threshold and temperature to this site's labelled studies "
                                         "and write a new bundle version")
    c.add_argument("bundle", help="bundle folder or .zip to calibrate (it is not changed)")
    c.add_argument("--data", required=True, help="folder of this site's studies with labels.csv (file,label) or one "
                                                 "sub-folder per label (NORMAL/, PNEUMONIA/), at least 20 of each class")
    c.add_argument("-o", "--out", required=True, help="new bundle folder (or .zip) to write")
    goal = c.add_mutually_exclusive_group()
    goal.add_argument("--target-sensitivity", type=float, default=None,
                      help="choose the threshold that reaches this sensitivity on the data (default 0.95)")
    goal.add_argument("--youden", action="store_true", help="choose the threshold with the largest sens + spec - 1")
    c.add_argument("--confidence", type=float, default=0.8,
                   help="with --target-sensitivity: probability that the site's new positives are found at the "
                        "target rate (default 0.8; 0.5 aims at the target on average)")
    c.add_argument("--backend", default="auto", type=str.lower, help="runtime to measure with (default auto)")
    c.add_argument("--sign-key", help="ECDSA private key (PEM) to sign the new bundle with; without it the new "
                                      "bundle is unsigned, even when its parent was signed")
    c.add_argument("--overwrite", action="store_true", help="replace an existing bundle at -o")
    c.add_argument("--json", action="store_true", help="print the calibration record as JSON")


def cmd_calibrate(args) -> int:
    from medexport.engine import open_bundle
    from medexport.engine.calibrate import Goal, calibrate, write_calibrated

    target = None if args.youden else (args.target_sensitivity if args.target_sensitivity is not None else 0.95)
    goal = Goal(target, args.confidence)
    with open_bundle(args.bundle, backend=args.backend) as model:
        print(f"[calibrate] {model.manifest.model_id} {model.manifest.model_version} on {model.backend} "
              f"{model.precision}; goal: {goal.describe()}", file=sys.stderr)
        result = calibrate(model, args.data, goal)
    path = write_calibrated(args.bundle, result, args.out, sign_key=args.sign_key, overwrite=args.overwrite)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        for note in result.notes:
            print(f"[calibrate] WARNING: {note}", file=sys.stderr)
    else:
        print("\n".join(result.summary_lines()))
    signed = "signed with " + args.sign_key if args.sign_key else "UNSIGNED (pass --sign-key to sign it)"
    print(f"[calibrate] wrote {path}: parent sha256 {result.parent['sha256'][:16]}, {signed}", file=sys.stderr)
    return 0


COMMANDS = {"calibrate": cmd_calibrate}
