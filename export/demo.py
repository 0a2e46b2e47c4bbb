"""``medexport demo``: build the demo bundles from the shipped weights, then open the viewer
(or, with no display, run the same pipeline headless and print the results)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from medexport.engine.bundle_read import read_manifest
from medexport.engine.checksums import sha256_file
from medexport.engine.errors import MedError
from medexport.engine.signing import check_signature, signing_key

from .build import BuildOptions, build

# the committed demo key (export/demo_keys/README.md: NOT for clinical use); the viewer trusts its public half
DEMO_SIGN_KEY = Path(__file__).parent / "demo_keys" / "medexport-demo-not-for-clinical-use.key.pem"

# model -> build options of its demo bundle (nothing is trained here: shipped weights only)
DEMOS = {
    # INT8 ships on both backends (OpenVINO with NNCF's full bias correction, ONNX Runtime with per-channel
    # weights: within 0.035 of FP32 on all 1,052 in-distribution studies); --keep-passing records a refusal
    "pneumonia-cxr": dict(targets=["openvino", "onnxruntime"], precisions=["fp32", "int8"], keep_passing=True),
    # INT8 buys nothing measurable for this 38 k-parameter model; ONNX Runtime INT8 fails its F1 guard
    # and OpenVINO's accuracy-controlled INT8 passes but takes minutes to search: FP32 for the demo
    "ecg-rhythm": dict(targets=["onnxruntime", "openvino"], precisions=["fp32"]),
    # INT8 guarded by mAP@0.5 on the 87 BCCD val smears and the proof; mixed precision: the stride-4 stem and
    # the output convolution stay in float (models/zoo.py int8_float_layers); one that misses is left out
    "blood-cell-det": dict(targets=["openvino", "onnxruntime"], precisions=["fp32", "int8"], keep_passing=True),
    "fetal-head-us": dict(targets=["openvino", "onnxruntime"], precisions=["fp32", "int8"], keep_passing=True),
    # INT8 guarded by Dice and the total-volume error on the 40 held-out volumes (VolumeDiceGuard)
    # ONNX Runtime's INT8 3-D convolutions run slower than its FP32 here (618 vs 451 ms per volume in the
    # build's self-test): that artifact is not shipped, though the build makes and proves it within budget
    # (`medexport build hippocampus-mr --target onnxruntime --precision int8 ...`); OpenVINO INT8 is the fastest
    "hippocampus-mr": dict(targets=["openvino", "onnxruntime"], precisions=["fp32", "int8"], keep_passing=True,
                           skip=("onnxruntime-int8",)),
}


def demo_studies() -> dict[str, list[str]]:
    """Real studies per demo model: chest X-rays (NIH PNGs, pydicom-data CR DICOMs), ECGs
    (CinC 2017 records, pydicom's 12-lead DICOM), and held-out EM slices."""
    from pydicom.data import get_testdata_file

    from medexport.models.data import pydicom_data, shared_data

    root = shared_data()
    images = [str(p) for p in sorted((root / "images" / "cxr-nih").glob("*.png"))]
    dicom = pydicom_data()
    if dicom:
        images += [str(dicom / n) for n in ("RG1_UNCI.dcm", "RG3_J2KR.dcm") if (dicom / n).is_file()]
    ecg = [str(root / "ecg" / "cinc2017-af" / f"{r}.hea") for r in ("A00001", "A00004")]
    ecg.append(get_testdata_file("waveform_ecg.dcm"))
    em = [str(root / "segmentation" / "isbi2012-em" / "image" / "24.png")]
    smears = [str(root / "detection" / "bccd" / "JPEGImages" / f"{i}.jpg")  # BCCD val split: held out
              for i in ("BloodImage_00000", "BloodImage_00014")]
    
    # a held-out HC18 frame (the recipe's split by pregnancy); a PNG states no pixel size: lengths in pixels
    fetal = [str(root / "segmentation" / "hc18" / "images" / "033_2HC.png")]
    # hippocampus crops: a real DICOM MR series (no labels) and a held-out NIfTI volume (the recipe's
    # validation split: hippocampus-mr.val.csv)
    hippo = root / "volumes" / "hippocampus-mr"
    volumes = [str(hippo / "dicom" / "Study1" / "13_HCropVolume"), str(hippo / "images" / "hippocampus_001.nii.gz")]
    return {"pneumonia-cxr": images, "ecg-rhythm": ecg, "em-membrane-seg": em, "blood-cell-det": smears,
            "fetal-head-us": fetal, "hippocampus-mr": volumes}


def is_current(bundle: Path, model: str, options: dict) -> bool:
    """True when the bundle holds the wanted artifacts, built from the shipped weights by this version."""
    from importlib.metadata import version

    from medexport.engine.tasks import task_class
    from medexport.models.registry import get_config

    try:
        manifest, _, root = read_manifest(bundle, verify=True)
        signed_by_demo_key = check_signature(root, [signing_key(DEMO_SIGN_KEY)]).trusted
    except MedError:
        return False
    config = get_config(model)
    refused = {r["artifact"] for r in manifest.provenance.get("refused_artifacts", [])}
    want = {f"{t}-{p}" for t in options["targets"] for p in options["precisions"]} - refused - set(options.get("skip", ()))
    return (signed_by_demo_key and want <= {a.key for a in manifest.artifacts}
            and manifest.provenance.get("source_sha256") == sha256_file(config.weights_path)
            and manifest.provenance.get("tools", {}).get("medexport") == version("medexport")
            and (manifest.ood is not None) == task_class(manifest.task).ood_applies)  # built before OOD: rebuild


def build_demos(folder: Path, emit=print) -> list[Path]:
    paths = []
    for model, opts in DEMOS.items():
        out = folder / model
        if is_current(out, model, opts):
            emit(f"[demo] {out} is up to date")
        else:
            from medexport.models.data import default_data
            from medexport.models.registry import get_config

            config = get_config(model)
            # calibration studies also fit the out-of-distribution reference; validation guards int8
            data = {"calib": default_data(config, "calib")} | \
                ({"val": default_data(config, "val")} if "int8" in opts["precisions"] else {})
            build(model, out, BuildOptions(overwrite=True, sign_key=str(DEMO_SIGN_KEY), **opts, **data), emit=emit)
        paths.append(out)
    return paths


def run_headless(bundles: list[Path], studies: dict[str, list[str]]) -> int:
    from medexport.engine import open_bundle

    from .render import render_result

    failures = 0
    for path in bundles:
        with open_bundle(path, trust=[signing_key(DEMO_SIGN_KEY)]) as model:  # the demo key's public half
            print(model.self_test().line() + f"  ({model.signature.describe()})")
            for study in studies.get(model.manifest.model_id, []):
                try:
                    print(render_result(model.predict(study)))
                except MedError as exc:
                    failures += 1
                    print(f"{study}: error: {exc}")
    return 1 if failures else 0


def has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) or sys.platform in ("win32", "darwin")


def main(folder: str, build_only: bool = False, headless: bool = False) -> int:
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    bundles = build_demos(Path(folder), emit=log)
    if build_only:
        return 0
    if has_display() and not headless:
        import subprocess

        studies = demo_studies()  # the viewer is its own program: export never imports the desktop
        return subprocess.call([sys.executable, "-m", "medexport.desktop.app", "--bundles", folder,
                                studies["pneumonia-cxr"][0], studies["ecg-rhythm"][0]])
    log("[demo] no display: running the viewer's pipeline headless")
    return run_headless(bundles, demo_studies())
