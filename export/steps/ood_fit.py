"""Step: fit the out-of-distribution reference (engine/ood.py) and check it.

Fit on the calibration studies (the model's training data), threshold on half of the held-out
in-distribution studies (``--val``, else a quarter of the calibration studies kept out of the
fit), in-distribution flag rate reported on the other half, and the flag rate on each other kind
of real study the shared data and pydicom hold (ultrasound, microscopy, MR, CT, nuclear
medicine) whose modality the bundle is not for.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np

from medexport.engine.compare import auroc
from medexport.engine.errors import ConfigurationError, MedError
from medexport.engine.manifest import OodSpec, TensorSpec
from medexport.engine.ood import fit_reference

from ..datasets import Dataset, concat, load_dataset, subset
from .features import FEATURES, add_feature_output

OOD_FILE = "ood.npz"
OOD_FIT_STUDIES = 600  # calibration studies the reference is fitted on, at most
PERCENTILE = 97.5  # of in-distribution distances: the threshold
MIN_STUDIES = 20  # calibration studies the reference needs (a quarter is held out for its threshold)
PER_KIND = 40  # studies read per other kind, at most
NOT_IN_SHARED_DATA = ("endoscopy", "photographs")


def with_features(source, work: Path):
    """The source with a ``features`` output added to a copy of its ONNX file (never the user's file)."""
    copy = Path(work) / "source-features.onnx"
    shutil.copyfile(source.onnx_path, copy)
    width = add_feature_output(copy, source.postprocess.score_output, tuple(source.input.shape[1:]))
    if width is None:
        return source
    return dataclasses.replace(source, onnx_path=copy, outputs=(*source.outputs, TensorSpec(FEATURES, (-1, width))))


def study_features(source, data: Dataset, run=None) -> tuple[np.ndarray, np.ndarray]:
    """Per-study mean features and scores: of ``run`` (an artifact's runtime: outputs for a batch),
    else of the float source graph (ONNX Runtime)."""
    if run is None:
        import onnxruntime as ort

        session = ort.InferenceSession(str(source.onnx_path), providers=["CPUExecutionProvider"])
        names = [FEATURES, source.postprocess.score_output]

        def run(x):
            return dict(zip(names, session.run(names, {source.input.name: x})))
    feats, scores = [], []
    for i in range(0, len(data.inputs), 16):
        out = run(data.inputs[i:i + 16])
        f, s = out[FEATURES], out[source.postprocess.score_output]
        feats.append(f.reshape(len(f), -1))
        scores.append(s.reshape(len(s), -1))
    return data.item_scores(np.concatenate(feats)), data.item_scores(np.concatenate(scores))


def fit_ood(source, calib: Dataset, val: Dataset | None, log, run=None, file: str = OOD_FILE,
            label: str = "") -> tuple[OodSpec, bytes]:
    """The reference fitted on ``calib``, its threshold and its report: in the float source's
    features, or with ``run`` in an artifact's own (a quantized network's features differ)."""
    feats, scores = study_features(source, calib, run)
    if len(feats) < MIN_STUDIES:
        raise ConfigurationError(f"--calib gave {len(feats)} studies, too few to fit the out-of-distribution "
                                 "reference (it holds a quarter out to set its threshold)",
                                 expected=f"at least {MIN_STUDIES} real studies of the kind the model reads",
                                 fix="pass a larger --calib folder or .npz split (a few hundred studies is typical)")
    if val is None:
        held = np.zeros(len(feats), bool)
        held[subset(len(feats), len(feats) // 4, seed=1)] = True
        fit_f, fit_s, id_f, id_from = feats[~held], scores[~held], feats[held], "a quarter of the calibration studies"
    else:
        fit_f, fit_s = feats, scores
        id_f, id_from = study_features(source, val, run)[0], "the validation studies"
    reference = fit_reference(fit_f, _classes(fit_s, source))
    id_d = reference.distances(id_f)
    half = np.arange(len(id_d)) % 2 == 0
    threshold = float(np.percentile(id_d[half], PERCENTILE))
    report = {"in_distribution": {"from": id_from, "threshold_set_on": int(half.sum()), "checked_on": int((~half).sum()),
                                  "flag_rate": round(float(np.mean(id_d[~half] > threshold)), 4)},
              "other_kinds": {}, "not_available": list(NOT_IN_SHARED_DATA)}
    others = []
    for kind, (modality, paths) in other_kinds(source).items():
        data, refused = _readable(paths, source.preprocess)
        d = np.zeros(0) if data is None else reference.distances(study_features(source, data, run)[0])
        others.append(d)
        report["other_kinds"][kind] = {"modality": modality, "n": len(d) + refused, "refused_by_reader": refused,
                                       "flag_rate": round(float((np.sum(d > threshold) + refused) / (len(d) + refused)), 4)}
    other = np.concatenate(others) if others else np.zeros(0)
    if len(other):
        report["detection_auroc"] = round(auroc(np.r_[np.zeros(len(id_d)), np.ones(len(other))],
                                                np.r_[id_d, other]), 4)
    if report["other_kinds"]:
        caught = sum(v["flag_rate"] * v["n"] for v in report["other_kinds"].values())
        report["other_flag_rate"] = round(caught / sum(v["n"] for v in report["other_kinds"].values()), 4)
    spec = OodSpec(FEATURES, file, threshold, fitted_on=f"{len(fit_f)} calibration studies",
                   threshold_rule=f"{PERCENTILE} th percentile of {int(half.sum())} of {id_from}", report=report)
    log.emit(f"[build]   OOD{label}: threshold {threshold:.2f}; in-distribution flagged "
             f"{report['in_distribution']['flag_rate']:.1%} of {int((~half).sum())}; "
             + ", ".join(f"{k} {v['flag_rate']:.0%} of {v['n']}" for k, v in report["other_kinds"].items()))
    return spec, reference.to_bytes()


def _classes(scores: np.ndarray, source) -> np.ndarray:
    """Each study's class for the class-conditional fit. A volume's scores are a voxel map, not one
    decision per study: one class (its windows' features are averaged per study)."""
    if source.preprocess.kind == "volume":
        return np.zeros(len(scores), int)
    return scores.argmax(1) if scores.shape[1] > 1 else (scores[:, 0] > 0).astype(int)


def other_kinds(source) -> dict[str, tuple[str, list[str]]]:
    """Real studies of other kinds, by kind: (modality, files); the bundle's own modalities left out.
    A volume model reads volumes only: a whole-brain MR series (its own modality, another extent)
    and a chest CT."""
    from medexport.models.data import pydicom_data, shared_data

    own = set(source.intended_for.modalities)
    dicom, root = pydicom_data(), shared_data()
    if source.preprocess.kind == "volume":
        volumes = root / "volumes"
        table = {"whole-brain MR": ("MR", [volumes / "hippocampus-mr" / "dicom" / "Study1" / "12-T1post-05670"]),
                 "chest CT": ("CT", [volumes / "chest-ct" / "ct.nii.gz"])}
        return {k: (m, [str(p) for p in paths if p.exists()]) for k, (m, paths) in table.items()
                if any(p.exists() for p in paths)}
    hc18 = sorted((root / "segmentation" / "hc18" / "images").glob("*_HC.png"))[::20][:PER_KIND]
    bccd = sorted((root / "detection" / "bccd" / "JPEGImages").glob("*.jpg"))[::7][:PER_KIND]
    em = sorted((root / "segmentation" / "isbi2012-em" / "image").glob("*.png"))
    table = {
        "ultrasound": ("US", [*map(str, hc18), *_in(dicom, "US1_UNCR.dcm", "gdcm-US-ALOKA-16.dcm", "OBXXXX1A.dcm",
                                                  "JPGLosslessP14SV1_1s_1f_8b.dcm")]),
        "microscopy": ("SM", [*map(str, bccd), *map(str, em)]),
        "MR": ("MR", _in(dicom, "MR2_UNCR.dcm", "MR-SIEMENS-DICOM-WithOverlays.dcm", "emri_small.dcm")),
        "CT": ("CT", _in(dicom, "693_UNCR.dcm", "eCT_Supplemental.dcm", "explicit_VR-UN.dcm", "bad_sequence.dcm")),
        "nuclear medicine": ("NM", _in(dicom, "JPEG2000_UNC.dcm")),
    }
    return {k: v for k, v in table.items() if v[0] not in own and v[1]}


def _in(folder, *names) -> list[str]:
    return [str(folder / n) for n in names if folder is not None and (folder / n).is_file()]


_READ: dict = {}  # (paths, preprocessing) -> what _readable gave: each artifact's own fit reads them again


def _readable(paths: list[str], preprocess) -> tuple[Dataset | None, int]:
    """The studies the engine reads, and how many it refuses (colour for a grey model, too small):
    a refused study never gets an answer, so it counts as caught."""
    key = (tuple(paths), repr(preprocess))
    if key not in _READ:
        if len(_READ) >= 16:  # a few kinds of one model's studies at a time
            _READ.clear()
        _READ[key] = _read(paths, preprocess)
    return _READ[key]


def _read(paths: list[str], preprocess) -> tuple[Dataset | None, int]:
    parts, refused = [], 0
    for p in paths:
        try:
            parts.append(load_dataset(p, preprocess))
        except MedError:
            refused += 1
    return (concat(parts) if parts else None), refused
