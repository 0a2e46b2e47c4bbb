"""Checks every result passes through, whatever its task: is the study one the bundle is for
(intended use, before inference), does the model recognise it (out of distribution), is the
answer too close to call (borderline). Each adds :class:`~.cautions.ResultWarning` items."""
from __future__ import annotations

import os
from dataclasses import replace

import numpy as np

from .cautions import ResultWarning
from .errors import BundleError
from .intended_use import check_intended_use
from .ood import OodReference, OodScore

# the flags under which a quantized artifact does not answer: the bundle's fp32 artifact does (the ladder)
LADDER_FLAGS = ("outside_intended_use", "out_of_distribution", "borderline")
STRICT_ENV = "MEDEXPORT_STRICT"  # "1": a clinic setting that refuses studies outside intended use


def strict_default() -> bool:
    """Strict mode unless told otherwise: ``$MEDEXPORT_STRICT`` = 1 / true / yes."""
    return os.environ.get(STRICT_ENV, "").strip().lower() in ("1", "true", "yes")


def load_ood_reference(manifest, root, artifact=None) -> tuple:
    """(OodSpec, OodReference) of an artifact: its own reference when the build fitted one
    (``artifact.options["ood"]``: a quantized network's features are not the fp32 network's),
    else the bundle's; (None, None) without any."""
    own = {} if artifact is None else artifact.options.get("ood") or {}
    spec = manifest.ood
    if spec is None or not own:
        return spec, None if spec is None else OodReference.from_file(root / spec.file)
    rel, threshold = own.get("file"), own.get("threshold")
    if rel not in manifest.files or not isinstance(threshold, (int, float)) or not threshold > 0:
        raise BundleError(f"artifact {artifact.key}: its OOD reference {rel!r} (threshold {threshold!r}) is not "
                          "a listed file with a positive threshold", expected="options.ood = {file, threshold}",
                          fix="rebuild the bundle")
    return replace(spec, file=rel, threshold=float(threshold)), OodReference.from_file(root / rel)


def screen_study(model, meta: dict) -> tuple[ResultWarning, ...]:
    """Before inference: the header against the bundle's intended use (refused in strict mode)."""
    return tuple(check_intended_use(model.manifest.intended_for, meta, strict=model.strict,
                                    study_kind=model.task.study_kind))


def screen_answer(model, outputs: dict, fields: dict) -> dict:
    """After inference: the result's fields with the out-of-distribution score and its warning."""
    warnings = list(fields["warnings"])
    if not model.task.ood_applies:
        return fields
    spec = model.ood_spec
    if spec is None:
        warnings.append(ResultWarning("no_ood_reference", "this bundle has no out-of-distribution reference "
                                      "(built without --calib): unusual studies are not flagged"))
        return fields | {"warnings": tuple(warnings)}
    distance = model.ood.study_distance(outputs[spec.feature_output])
    ood = OodScore(distance, spec.threshold, distance > spec.threshold)
    if ood.flagged:
        warnings.append(ResultWarning("out_of_distribution", "this study is unlike anything the model was trained on, "
                                      "so its answer may be meaningless (feature distance "
                                      f"{distance:.1f}, threshold {spec.threshold:.1f})"))
    return fields | {"ood": ood, "warnings": tuple(warnings)}


def screen_borderline(model, fields: dict) -> dict:
    """A decision within the artifact's borderline band of its threshold gets ``borderline``
    (a quantized artifact's answer then climbs the ladder: see :func:`climb`)."""
    band = model.artifact.borderline
    close = {k: m for k, m in model.task.margins(fields).items() if abs(m) <= band}
    if not close:
        return fields
    label, margin = min(close.items(), key=lambda kv: abs(kv[1]))
    threshold = fields["thresholds"][label]
    text = (f"{label} score {fields['scores'][label]:.3f} is within {band:.3f} of its threshold {threshold:.3f} "
            f"(the band where {model.precision} and the float model may decide differently)")
    return fields | {"warnings": tuple(fields["warnings"]) + (ResultWarning("borderline", text),)}


def ladder_flags(model, fields: dict) -> tuple[str, ...]:
    """The flags that move a quantized artifact's answer to the fp32 artifact (none at fp32)."""
    if model.precision == "fp32":
        return ()
    return tuple(dict.fromkeys(w.code for w in fields["warnings"] if w.code in LADDER_FLAGS))


def climbed(model, rung, flags: tuple, quantized: dict, answered: dict) -> dict:
    """The fp32 rung's screened fields, saying which flags moved the study there and keeping the
    quantized answer that was not used (``second_opinion``)."""
    scores = quantized.get("scores", {})  # a segmentation's fields have thresholds but no scores
    thresholds = {k: t for k, t in quantized.get("thresholds", {}).items() if k in scores}
    hit = [k for k, t in thresholds.items() if scores[k] >= t]
    unused = {"backend": model.backend, "precision": model.precision, "flags": list(flags),
              "scores": {k: round(float(v), 6) for k, v in scores.items()}, "positive": hit}
    text = (f"the {model.precision} artifact flagged this study ({', '.join(flags)}), so the bundle's fp32 artifact "
            f"on {rung.backend} answered it")
    label = next((k for k, t in thresholds.items()
                  if k in answered.get("scores", {}) and (scores[k] >= t) != (answered["scores"][k] >= t)), None)
    if label is not None:
        text += f"; the {model.precision} answer would have decided {label} differently"
    warning = ResultWarning("answered_at_fp32", text)
    return answered | {"warnings": tuple(answered["warnings"]) + (warning,), "second_opinion": unused}


def flagged_rows(outputs: dict, scores: np.ndarray, *, ood_spec, ood, band: float, thresholds: dict,
                 labels: tuple, thresholded: bool) -> np.ndarray:
    """Per row of a preprocessed batch: whether the artifact's own screening flags it without a
    header (out of distribution on the row's features, or a score within ``band`` of its threshold).
    The build's coverage proof and ``Model.scores`` use the same rule."""
    flags = np.zeros(len(scores), bool)
    if ood is not None and ood_spec is not None and ood_spec.feature_output in outputs:
        feats = np.asarray(outputs[ood_spec.feature_output])
        flags |= ood.distances(feats.reshape(len(feats), -1)) > ood_spec.threshold
    if thresholded and thresholds and np.ndim(scores) == 2 and np.shape(scores)[1] == len(labels):
        for label, t in thresholds.items():
            if label in labels:
                flags |= np.abs(np.asarray(scores)[:, labels.index(label)] - t) <= band
    return flags
