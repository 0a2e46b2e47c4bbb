"""Checks every result passes through, whatever its task: is the study one the bundle is for
(intended use, before inference), does the model recognise it (out of distribution), is the
answer too close to call (borderline). Each adds :class:`~.cautions.ResultWarning` items."""
from __future__ import annotations

import os

from .cautions import ResultWarning
from .intended_use import check_intended_use
from .ood import OodReference, OodScore

STRICT_ENV = "MEDEXPORT_STRICT"  # "1": a clinic setting that refuses studies outside intended use


def strict_default() -> bool:
    """Strict mode unless told otherwise: ``$MEDEXPORT_STRICT`` = 1 / true / yes."""
    return os.environ.get(STRICT_ENV, "").strip().lower() in ("1", "true", "yes")


def load_ood_reference(manifest, root) -> OodReference | None:
    return None if manifest.ood is None else OodReference.from_file(root / manifest.ood.file)


def screen_study(model, meta: dict) -> tuple[ResultWarning, ...]:
    """Before inference: the header against the bundle's intended use (refused in strict mode)."""
    return tuple(check_intended_use(model.manifest.intended_for, meta, strict=model.strict,
                                    study_kind=model.task.study_kind))


def screen_answer(model, outputs: dict, fields: dict) -> dict:
    """After inference: the result's fields with the out-of-distribution score and its warning."""
    warnings = list(fields["warnings"])
    if not model.task.ood_applies:
        return fields
    spec = model.manifest.ood
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


def screen_borderline(model, feeds: dict, meta: dict, fields: dict) -> dict:
    """A decision within the artifact's borderline band of its threshold gets ``borderline``;
    a quantized artifact's answer is then re-run on the bundle's fp32 artifact and both are kept."""
    band = model.artifact.borderline
    close = {k: m for k, m in model.task.margins(fields).items() if abs(m) <= band}
    if not close:
        return fields
    label, margin = min(close.items(), key=lambda kv: abs(kv[1]))
    threshold = fields["thresholds"][label]
    text = (f"{label} score {fields['scores'][label]:.3f} is within {band:.3f} of its threshold {threshold:.3f} "
            f"(the band where {model.precision} and the float model may decide differently)")
    second = None
    float_model = model.float_model()
    if float_model is not None:
        again = model.task.postprocess(float_model._run(feeds), meta)
        hit = {k: again["scores"][k] >= t for k, t in again["thresholds"].items()}
        second = {"backend": float_model.backend, "precision": "fp32",
                  "scores": {k: round(float(v), 6) for k, v in again["scores"].items()},
                  "positive": [k for k, v in hit.items() if v]}
        decided = "positive" if hit[label] else "negative"
        text += f"; the fp32 model scores {label} {again['scores'][label]:.3f} ({decided})"
    warning = ResultWarning("borderline", text)
    return fields | {"warnings": tuple(fields["warnings"]) + (warning,), "second_opinion": second}
