"""Step: prove a compiled artifact agrees with its source on the golden inputs (clinical metrics:
export/guards.py)."""
from __future__ import annotations

import numpy as np

from medexport.engine.compare import max_abs_diff


def golden_agreement(reference: np.ndarray, scores: np.ndarray, per_item: np.ndarray, names: tuple,
                     tolerance: float, measure: str) -> dict:
    """Disagreement with the source model per golden input (``per_item``, the task's measure);
    every input must stay within ``tolerance`` (those that do not are listed)."""
    worst = int(per_item.argmax())
    over = [{"item": names[i], "disagreement": round(float(per_item[i]), 5)}
            for i in np.flatnonzero(per_item > tolerance)]
    return {"n": int(len(per_item)), "measure": measure, "max_disagreement": round(float(per_item.max()), 6),
            "max_abs_score_diff": max_abs_diff(reference, scores),
            "mean_abs_score_diff": float(np.abs(reference - scores).mean()), "worst_item": names[worst],
            "tolerance": tolerance, "over_tolerance": over, "passed": not over}


def heatmap_correlation(reference: np.ndarray, maps: np.ndarray, scores: np.ndarray) -> dict:
    """Pearson correlation of each golden item's map for its top label, artifact vs source."""
    top = scores.argmax(axis=1)
    values = []
    for i, k in enumerate(top):
        a, b = reference[i, k].ravel(), maps[i, k].ravel()
        values.append(float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 1.0)
    return {"mean": round(float(np.mean(values)), 4), "min": round(float(np.min(values)), 4)}


def borderline_band(tolerance: float, thresholds: dict, verdict) -> float:
    """Half-width of the band around each threshold where an artifact's decision may differ from
    the float model's: its stated tolerance, widened to the farthest validation flip."""
    band = tolerance
    for flip in ([] if verdict is None else verdict.data.get("decision_flips", [])):
        if flip.get("label") in thresholds and "source_score" in flip:
            band = max(band, abs(flip["source_score"] - thresholds[flip["label"]]))
    return round(min(band, 1.0), 4)


# studies decoded at reduced resolution when asked (engine/io/dicom/pixels.py): uncompressed and JPEG 2000
REDUCED_DECODE_STUDIES = ("RG1_UNCR.dcm", "RG1_J2KR.dcm", "RG1_J2KI.dcm", "RG3_UNCR.dcm", "RG3_J2KR.dcm", "RG3_J2KI.dcm",
                          "MR2_UNCR.dcm", "MR2_J2KR.dcm", "MR2_J2KI.dcm")


DECODE_MARGINS = (1, 2)  # tried smallest first: the largest reduction whose scores stay within tolerance wins


def reduced_decode_paths(kind: str, work) -> list[str]:
    """The golden studies that are files, pydicom-data's uncompressed and JPEG 2000 images, and
    RG1 re-encoded as 8-bit baseline JPEG into ``work`` (the DCT-scaling path)."""
    from pathlib import Path

    from medexport.models.data import pydicom_data

    from ..reencode import jpeg_baseline_copy
    from ..golden import _unlike_paths

    if kind != "image":
        return []
    root = pydicom_data()
    extra = [str(root / n) for n in REDUCED_DECODE_STUDIES if root and (root / n).is_file()]
    if root and (root / "RG1_UNCR.dcm").is_file():
        extra.append(str(Path(work) / "RG1_jpeg_baseline.dcm"))
        jpeg_baseline_copy(root / "RG1_UNCR.dcm", extra[-1])
    return list(dict.fromkeys(_unlike_paths(kind) + extra))


def reduced_decode_inputs(task, paths: list[str], margin: int) -> list[tuple]:
    """(study name, how it was decoded, full-decode input, reduced-decode input) per study the
    task reads, the reduced one keeping ``margin`` x the model's input (read once per build;
    studies it refuses are left out)."""
    from medexport.engine.errors import MedError
    from medexport.engine.io.dicom import full_resolution, reduced_resolution

    out, kept = [], task.decode_margin
    task.decode_margin = margin
    try:
        for path in paths:
            try:
                opts = task.options()
                with reduced_resolution():
                    study = task.read(path, opts)
                with full_resolution():
                    full = task.read(path, opts)
                inputs = [task.preprocess(s, opts)[0][task.input_name] for s in (full, study)]
            except MedError:
                continue
            out.append((path.rsplit("/", 1)[-1], study.meta.get("decoded", "full"), *inputs))
    finally:
        task.decode_margin = kept
    return out


def reduced_decode_agreement(task, run, inputs: list[tuple], tolerance: float) -> dict:
    """Scores of each study read at reduced resolution (as on target) vs read in full, through
    the artifact ``run``; a study read in full both ways differs by 0."""
    items, worst = [], 0.0
    for name, decoded, full, reduced in inputs:
        if decoded == "full":
            continue
        scores = [task.scores(run(x)) for x in (full, reduced)]
        diff = float(np.max(task.disagreement(scores[0], scores[1])))
        worst = max(worst, diff)
        items.append({"study": name, "decoded": decoded, "disagreement": round(diff, 6)})
    return {"n": len(inputs), "reduced": len(items), "max_disagreement": round(worst, 6), "tolerance": tolerance,
            "passed": worst <= tolerance, "studies": items}


def reduced_decode_choice(task, run, checks: dict, tolerance: float) -> dict:
    """The reduced decode an artifact may use: each margin's agreement (``checks``: margin ->
    reduced_decode_inputs), and ``decode_margin``, the smallest margin that stays within the
    artifact's tolerance on every study (0: none does; this artifact always decodes in full)."""
    tried = {str(m): reduced_decode_agreement(task, run, inputs, tolerance) for m, inputs in sorted(checks.items())}
    chosen = next((int(m) for m, a in tried.items() if a["passed"] and a["reduced"]), 0)
    return {"decode_margin": chosen, "tolerance": tolerance, "margins": tried}
