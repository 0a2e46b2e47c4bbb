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
    return tuple(check_intended_use(model.manifest.intended_for, meta, strict=model.strict))


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
        warnings.append(ResultWarning("out_of_distribution", f"this study is unlike the model's training data "
                                      f"(feature distance {distance:.1f} > {spec.threshold:.1f}): "
                                      "the answer may be meaningless"))
    return fields | {"ood": ood, "warnings": tuple(warnings)}
