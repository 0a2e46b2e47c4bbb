"""Checks every result passes through, whatever its task: is the study one the bundle is for
(intended use, before inference), does the model recognise it (out of distribution), is the
answer too close to call (borderline). Each adds :class:`~.cautions.ResultWarning` items."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from .cautions import ResultWarning
from .errors import BundleError
from .intended_use import check_intended_use
from .ood import OodReference, OodScore

# the flags under which a quantized artifact does not answer: the bundle's fp32 artifact does (the ladder)
LADDER_FLAGS = ("outside_intended_use", "out_of_distribution", "borderline")
STRICT_ENV = "MEDEXPORT_STRICT"  # "1": a clinic setting that refuses studies outside intended use


@dataclass(frozen=True)
class Screen:
    """What screening reads of one opened artifact (``Model.screen``), and nothing else of it."""

    task: object  # the bundle's Task: screen, study_kind, ood_applies, margins, thresholded_scores
    intended_for: dict  # the manifest's intended use
    strict: bool  # refuse studies outside intended use
    ood_spec: object  # this artifact's OodSpec (load_ood_reference), None without a reference
    ood: OodReference | None
    band: float  # the artifact's borderline band around each threshold
    precision: str
    backend: str


class Rung(Protocol):
    """A runnable artifact as the precision ladder sees it (``engine.model.Model`` is one)."""

    screen: Screen
    provenance: object  # the result's provenance when this rung answers

    def run(self, feeds: dict) -> dict:
        """The runtime's outputs for prepared feeds (input name -> rows)."""

    def answer(self, prepared, outputs: dict) -> dict:
        """This artifact's screened result fields for its outputs of ``prepared``."""

    def float_model(self) -> "Rung | None":
        """The fp32 rung above this one (None at fp32, or when the bundle has none that runs here)."""


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


def screen_study(screen: Screen, meta: dict, study=None) -> tuple[ResultWarning, ...]:
    """Before inference: what the task checks of the study itself (a volume's extent: a NIfTI has
    no header), then the header, against the bundle's intended use (refused in strict mode)."""
    own = () if study is None else tuple(screen.task.screen(study, screen.strict))
    return own + tuple(check_intended_use(screen.intended_for, meta, strict=screen.strict,
                                          study_kind=screen.task.study_kind))


def screen_answer(screen: Screen, outputs: dict, fields: dict) -> dict:
    """After inference: the result's fields with the out-of-distribution score and its warning."""
    warnings = list(fields["warnings"])
    if not screen.task.ood_applies:
        return fields
    spec = screen.ood_spec
    if spec is None:
        warnings.append(ResultWarning("no_ood_reference", "this bundle has no out-of-distribution reference "
                                      "(built without --calib): unusual studies are not flagged"))
        return fields | {"warnings": tuple(warnings)}
    distance = screen.ood.study_distance(outputs[spec.feature_output])
    ood = OodScore(distance, spec.threshold, distance > spec.threshold)
    if ood.flagged:
        warnings.append(ResultWarning("out_of_distribution", "this study is unlike anything the model was trained on, "
                                      "so its answer may be meaningless (feature distance "
                                      f"{distance:.1f}, threshold {spec.threshold:.1f})"))
    return fields | {"ood": ood, "warnings": tuple(warnings)}


def screen_borderline(screen: Screen, fields: dict) -> dict:
    """A decision within the artifact's borderline band of its threshold gets ``borderline``
    (a quantized artifact's answer then climbs the ladder: see :func:`climb`)."""
    band = screen.band
    close = {k: m for k, m in screen.task.margins(fields).items() if abs(m) <= band}
    if not close:
        return fields
    label, margin = min(close.items(), key=lambda kv: abs(kv[1]))
    threshold = fields["thresholds"][label]
    text = (f"{label} score {fields['scores'][label]:.3f} is within {band:.3f} of its threshold {threshold:.3f} "
            f"(the band where {screen.precision} and the float model may decide differently)")
    return fields | {"warnings": tuple(fields["warnings"]) + (ResultWarning("borderline", text),)}


def ladder_flags(screen: Screen, fields: dict) -> tuple[str, ...]:
    """The flags that move a quantized artifact's answer to the fp32 artifact (none at fp32)."""
    if screen.precision == "fp32":
        return ()
    return tuple(dict.fromkeys(w.code for w in fields["warnings"] if w.code in LADDER_FLAGS))


def climb(model: Rung, prepared, outputs: dict) -> tuple[dict, Rung, float]:
    """The precision ladder: ``model``'s screened answer to its outputs of ``prepared``, or, when
    its screening flags the study (``LADDER_FLAGS``), the fp32 rung's answer to the same prepared
    feeds (one more runtime pass). Returns (fields, the rung that answered, ms of that pass)."""
    fields = model.answer(prepared, outputs)
    flags = ladder_flags(model.screen, fields)
    rung = model.float_model() if flags else None
    if rung is None:
        return fields, model, 0.0
    t0 = time.perf_counter()
    again = rung.run(prepared.feeds)
    rerun = (time.perf_counter() - t0) * 1e3
    return climbed(model.screen, rung.screen, flags, fields, rung.answer(prepared, again)), rung, rerun


def climbed(screen: Screen, rung: Screen, flags: tuple, quantized: dict, answered: dict) -> dict:
    """The fp32 rung's screened fields, saying which flags moved the study there and keeping the
    quantized answer that was not used (``second_opinion``)."""
    scores = quantized.get("scores", {})  # a segmentation's fields have thresholds but no scores
    thresholds = {k: t for k, t in quantized.get("thresholds", {}).items() if k in scores}
    hit = [k for k, t in thresholds.items() if scores[k] >= t]
    unused = {"backend": screen.backend, "precision": screen.precision, "flags": list(flags),
              "scores": {k: round(float(v), 6) for k, v in scores.items()}, "positive": hit}
    text = (f"the {screen.precision} artifact flagged this study ({', '.join(flags)}), so the bundle's fp32 artifact "
            f"on {rung.backend} answered it")
    label = next((k for k, t in thresholds.items()
                  if k in answered.get("scores", {}) and (scores[k] >= t) != (answered["scores"][k] >= t)), None)
    if label is not None:
        text += f"; the {screen.precision} answer would have decided {label} differently"
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
