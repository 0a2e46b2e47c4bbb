"""Site calibration study: does ``medexport calibrate`` on 100 labelled studies of a new site make
the pneumonia model reach accuracy >= 0.93 with sensitivity >= 0.95 on that site's other studies?

We have no second site, so one is simulated honestly from the only labelled paediatric films the
model never trained on: the held-out validation rows of ``models/weights/pneumonia-cxr.val.csv``
(1046 films; the rest of kermany-cxr224/train trained the model). Each simulated site puts every
film through one fixed acquisition shift (another detector and processing chain: gamma, lower
contrast with an offset, blur, seeded sensor noise, JPEG), mild or strong (``SHIFTS``, fixed
before measuring). 100 shifted films (stratified by class, seeded) are the site's calibration
set; the other 946 are its test set.

The calibrated bundle is written and evaluated through the engine exactly as a clinic would run
it (no torch needed for that part; building the parent bundle, when none is given, needs it).
Extra seeds repeat only the split, on the same per-study logits, to show how much the result
depends on which 100 studies were labelled.

    .venv/bin/python -m medexport.export.site_calibration_study [--bundle B] [--out study.json]
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from medexport.engine import open_bundle
from medexport.engine.calibrate import (Goal, calibrate, finding, fit_temperature, fit_threshold,
                                        read_site_data, site_logits, write_calibrated)
from medexport.engine.compare import activate, binary_metrics, sens_spec

VAL_LIST = Path(__file__).resolve().parent.parent / "models" / "weights" / "pneumonia-cxr.val.csv"
# two acquisition shifts fixed before measuring (neither tuned on the results): another detector
# and processing chain, mildly and strongly different from the training centre's films
SHIFTS = {"mild": {"gamma": 1.5, "contrast": 0.75, "offset": 0.06, "blur_sigma": 1.0, "noise_sd": 0.015,
                   "jpeg_quality": 35, "seed": 15},
          "strong": {"gamma": 1.8, "contrast": 0.6, "offset": 0.08, "blur_sigma": 1.5, "noise_sd": 0.025,
                     "jpeg_quality": 25, "seed": 16}}
N_CALIB = 100


def shift_image(pixels: np.ndarray, rng: np.random.Generator, shift: dict) -> Image.Image:
    """One acquisition shift: [0, 1] grey -> gamma -> contrast/offset -> blur -> noise -> JPEG."""
    x = np.clip(pixels, 0, 1) ** shift["gamma"]
    x = np.clip((x - 0.5) * shift["contrast"] + 0.5 + shift["offset"], 0, 1)
    img = Image.fromarray((x * 255).round().astype(np.uint8)).filter(ImageFilter.GaussianBlur(shift["blur_sigma"]))
    x = np.asarray(img, np.float64) / 255 + rng.normal(0, shift["noise_sd"], img.size[::-1])
    buf = io.BytesIO()
    Image.fromarray((np.clip(x, 0, 1) * 255).round().astype(np.uint8)).save(buf, "JPEG", quality=shift["jpeg_quality"])
    return Image.open(io.BytesIO(buf.getvalue()))


def make_site(rows: list, root: Path, shift: dict | None) -> dict:
    """Write the films (shifted, or as they are) under ``root``; returns file name -> label."""
    from medexport.models.data import shared_data

    rng = np.random.default_rng(shift["seed"] if shift else 0)
    root.mkdir(parents=True)
    labels = {}
    for rel, label in rows:
        src = shared_data() / rel
        name = f"{label}-{Path(rel).stem}.{'jpg' if shift else 'png'}"
        grey = np.asarray(Image.open(src).convert("L"), np.float64) / 255
        (shift_image(grey, rng, shift) if shift else Image.fromarray((grey * 255).astype(np.uint8))).save(root / name)
        labels[name] = label
    return labels


def write_folder(folder: Path, source: Path, names: list, labels: dict) -> Path:
    """A study folder (hard links into ``source``) with its labels.csv."""
    folder.mkdir(parents=True)
    with open(folder / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "label"])
        for n in names:
            (folder / n).hardlink_to(source / n)
            w.writerow([n, labels[n]])
    return folder


def stratified_split(names: list, labels: dict, n: int, seed: int) -> tuple[list, list]:
    """``n`` names drawn per class in proportion to the set (seeded); the rest."""
    rng = np.random.default_rng(seed)
    picked = []
    classes = sorted(set(labels.values()))
    for c in classes:
        members = [x for x in names if labels[x] == c]
        k = round(n * len(members) / len(names)) if c != classes[-1] else n - len(picked)
        picked += list(rng.choice(members, k, replace=False))
    rest = [x for x in names if x not in set(picked)]
    return sorted(picked), rest


def evaluate(bundle: Path, folder: Path) -> dict:
    """A bundle on a labelled folder through the engine: its own temperature and threshold."""
    with open_bundle(bundle) as model:
        label, column = finding(model.manifest, model.task)
        data = read_site_data(folder, model.manifest, label)
        post = model.manifest.postprocess
        scores = model.task.scores({post.score_output: site_logits(model, data)})[:, column]
        return {"bundle_version": model.manifest.model_version, "temperature": post.temperature,
                "threshold": post.thresholds[label], "backend": model.backend,
                **binary_metrics(data.positive, scores, post.thresholds[label])}


def split_seeds(bundle: Path, folder: Path, labels: dict, seeds: range, goal: Goal) -> list:
    """The same calibration on other random 100-study splits (numpy on the same logits)."""
    with open_bundle(bundle) as model:
        label, column = finding(model.manifest, model.task)
        data = read_site_data(folder, model.manifest, label)
        logits, activation = site_logits(model, data), model.manifest.postprocess.activation
    names = [f.name for f in data.files]
    out = []
    for seed in seeds:
        calib, _ = stratified_split(names, labels, N_CALIB, seed)
        inside = np.isin(names, calib)
        t = fit_temperature(logits[inside], data.classes[inside], column, activation)
        s = activate(logits, activation, t)[:, column]
        thr = fit_threshold(s[inside], data.positive[inside], goal)
        sens, spec = sens_spec(data.positive[~inside], s[~inside], thr)
        acc = float(((s[~inside] >= thr) == data.positive[~inside]).mean())
        out.append({"seed": seed, "temperature": round(t, 4), "threshold": round(thr, 4), "sensitivity": round(sens, 4),
                    "specificity": round(spec, 4), "accuracy": round(acc, 4)})
    return out


def parent_bundle(given: str | None, work: Path) -> Path:
    if given:
        return Path(given)
    from medexport.export.build import BuildOptions, build

    return build("pneumonia-cxr", work / "pneumonia-cxr", BuildOptions(targets=["onnxruntime"], precisions=["fp32"]),
                 emit=lambda m: print(m, file=sys.stderr))


def study_site(bundle: Path, rows: list, shift: dict, work: Path, seeds: int) -> dict:
    """One simulated site: shift every film, calibrate on 100, evaluate on the rest."""
    labels = make_site(rows, work / "all", shift)
    calib, rest = stratified_split(sorted(labels), labels, N_CALIB, seed=0)
    calib_dir = write_folder(work / "calib", work / "all", calib, labels)
    test_dir = write_folder(work / "test", work / "all", rest, labels)
    everything = write_folder(work / "all-labelled", work / "all", sorted(labels), labels)
    out = {"shift": shift, "calibration_studies": len(calib), "test_studies": len(rest),
           "parent_on_site_test": evaluate(bundle, test_dir), "goals": {}}
    for name, goal in (("sensitivity_0.95", Goal(0.95)), ("sensitivity_0.95_conf_0.5", Goal(0.95, 0.5)),
                       ("youden", Goal(None))):
        with open_bundle(bundle) as model:
            result = calibrate(model, calib_dir, goal)
        new = write_calibrated(bundle, result, work / f"calibrated-{name}")
        out["goals"][name] = {"calibration": result.to_dict(), "calibrated_on_site_test": evaluate(new, test_dir),
                              "other_splits": split_seeds(bundle, everything, labels, range(1, seeds + 1), goal)}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", help="pneumonia-cxr bundle (default: build one, ONNX Runtime fp32)")
    p.add_argument("--out", default="calibration-study.json", help="where to write the numbers (JSON)")
    p.add_argument("--seeds", type=int, default=20, help="extra calibration splits to repeat (default 20)")
    args = p.parse_args(argv)
    with open(VAL_LIST, newline="") as fh:
        rows = [r for r in csv.reader(fh) if r and r[0] != "file"]
    with tempfile.TemporaryDirectory(prefix="medexport-site-") as tmp:
        work = Path(tmp)
        bundle = parent_bundle(args.bundle, work)
        plain = make_site(rows, work / "plain", None)
        report = {"val_list": VAL_LIST.name, "parent": str(bundle),
                  "parent_on_unshifted": evaluate(bundle, write_folder(work / "plain-all", work / "plain", sorted(plain),
                                                                       plain)),
                  "sites": {level: study_site(bundle, rows, shift, work / level, args.seeds)
                            for level, shift in SHIFTS.items()}}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(render(report))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def render(report: dict) -> str:
    def cell(m, key):
        v = m[key]
        return f"{v['value']:.3f} [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}]"

    def row(name, m):
        return (f"{name:<44} " + " ".join(f"{cell(m, k):<22}" for k in ("accuracy", "sensitivity", "specificity"))
                + f" {m['auroc']['value']:.3f}  T {m['temperature']:.3f}, threshold {m['threshold']:.4f}")

    lines = [f"{'':44} {'accuracy':<22} {'sensitivity':<22} {'specificity':<22} AUROC",
             row(f"parent, all {report['parent_on_unshifted']['n']} unshifted films", report["parent_on_unshifted"])]
    for level, site in report["sites"].items():
        lines.append(f"-- {level} shift: calibrate on {site['calibration_studies']}, test on {site['test_studies']}")
        lines.append(row("parent", site["parent_on_site_test"]))
        for k, g in site["goals"].items():
            lines.append(row(f"calibrated, {k}", g["calibrated_on_site_test"]))
        for k, g in site["goals"].items():
            splits = g["other_splits"]
            met = sum(x["accuracy"] >= 0.93 and x["sensitivity"] >= 0.95 for x in splits)
            lines.append(f"   {k}: {len(splits)} other splits: sensitivity {min(x['sensitivity'] for x in splits):.3f}-"
                         f"{max(x['sensitivity'] for x in splits):.3f}, accuracy {min(x['accuracy'] for x in splits):.3f}-"
                         f"{max(x['accuracy'] for x in splits):.3f}; goal met in {met}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
