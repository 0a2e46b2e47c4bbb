"""Step: what the build proves of a quantized artifact, which answers only the studies its own
screening passes (the precision ladder, engine/screening.py):

- in distribution, its tolerance holds on every study the build reads of the model's own kind
  (the validation studies and the golden studies not marked unlike the training data);
- coverage: on every other study (unlike the training data, other kinds of study, perturbed
  validation studies) each input beyond the tolerance is flagged by the artifact's own screening
  (its OOD reference, the borderline band, or the header against the intended use), so that
  answer never reaches a user. One unflagged disagreement refuses the artifact.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from medexport.engine.errors import MedError
from medexport.engine.intended_use import check_intended_use
from medexport.engine.screening import flagged_rows

from ..datasets import Dataset, load_dataset
from ..golden import UNLIKE_PREFIX, _concat_named, _unlike_paths
from .ood_fit import other_kinds

PERTURBED_STUDIES = 40  # validation studies read under each perturbation for the coverage check
LISTED = 10  # items listed per failing check in the report


def coverage_set(source, task, val_spec: str | None, perturbed: int = PERTURBED_STUDIES) -> tuple[Dataset, np.ndarray]:
    """The other studies, every row of each, and per row whether its header is outside the
    intended use (a picture has none: only the artifact's OOD and borderline flags can cover it)."""
    paths = _unlike_paths(task.study_kind) + [p for _, ps in other_kinds(source).values() for p in ps]
    parts, header = [], []
    for path in dict.fromkeys(paths):
        try:
            data = load_dataset(path, source.preprocess)
        except MedError:  # refused by the reader: never answered
            continue
        parts.append(Dataset(data.inputs, None, tuple(f"{UNLIKE_PREFIX}{n}" for n in data.names), data.groups))
        header.append(np.full(len(data.inputs), _outside_intended_use(source, task, path)))
    if val_spec:
        from ..robustness import Perturb, perturbations_for

        for p in perturbations_for(task.study_kind):
            data = load_dataset(val_spec, source.preprocess, labels=source.labels, limit=perturbed, perturb=Perturb(p))
            parts.append(Dataset(data.inputs, None, tuple(f"{p.name}:{n}" for n in data.names), data.groups))
            header.append(np.zeros(len(data.inputs), bool))
    return _concat_named(parts), np.concatenate(header)


def _outside_intended_use(source, task, path: str) -> bool:
    if ".npz:" in path or Path(path).suffix.lower() != ".dcm":
        return False  # a picture or an array: no header to check
    try:
        study = task.read(path, task.options())
    except MedError:
        return False
    return any(w.code == "outside_intended_use" for w in
               check_intended_use(source.intended_for, study.meta, strict=False, study_kind=task.study_kind))


def row_flags(source, task, outputs: dict, scores: np.ndarray, ood_spec, ood, band: float) -> np.ndarray:
    """The engine's own header-free screening of each row (screening.flagged_rows)."""
    return flagged_rows(outputs, scores, ood_spec=ood_spec if task.ood_applies else None, ood=ood, band=band,
                        thresholds=source.postprocess.thresholds, labels=tuple(source.labels),
                        thresholded=task.thresholded_scores)


def prove(tolerance: float, *, golden_names: tuple, golden_diff: np.ndarray, golden_flags: np.ndarray,
          golden_header: np.ndarray, stored: np.ndarray, val_diff: np.ndarray, val_flags: np.ndarray, other_names: tuple,
          other_diff: np.ndarray, other_flags: np.ndarray, fp32_ood: dict | None = None,
          own_ood: dict | None = None, val_names: tuple | None = None) -> dict:
    """The proof's report; ``problems`` lists what refuses the artifact (empty: it ships).

    ``*_diff``: per row disagreement with the source; ``*_flags``: the artifact's screening per
    row (``golden_flags`` without the header, ``golden_header`` that alone; ``other_flags`` both); ``fp32_ood`` / ``own_ood``: per set
    ("agreement_set", "validation") the OOD decisions of the fp32 rung and of this artifact."""
    unlike = np.array([n.startswith(UNLIKE_PREFIX) for n in golden_names], bool)
    own = ~unlike
    inside = np.r_[golden_diff[own], val_diff]
    val_names = val_names or tuple(f"#{i}" for i in range(len(val_diff)))
    inside_names = [n for n, u in zip(golden_names, unlike) if not u] + [f"validation {n}" for n in val_names]
    over = np.flatnonzero(inside > tolerance)
    worst = int(inside.argmax()) if len(inside) else 0
    in_dist = {"n": int(len(inside)), "golden": int(own.sum()), "validation": int(len(val_diff)),
               "max_disagreement": round(float(inside.max(initial=0.0)), 6),
               "worst_item": inside_names[worst] if len(inside) else "", "tolerance": tolerance,
               "over_tolerance": [{"item": inside_names[i], "disagreement": round(float(inside[i]), 5)}
                                  for i in over[:LISTED]], "n_over": int(len(over)), "passed": not len(over)}
    names = [n for n, u in zip(golden_names, unlike) if u] + list(other_names)
    diff = np.r_[golden_diff[unlike], other_diff]
    answered = ~(golden_flags | golden_header)
    flags = np.r_[~answered[unlike], other_flags]
    beyond = diff > tolerance
    loose = np.flatnonzero(beyond & ~flags)
    coverage = {"n": int(len(diff)), "beyond_tolerance": int(beyond.sum()), "flagged": int((beyond & flags).sum()),
                "unflagged": [{"item": names[i], "disagreement": round(float(diff[i]), 5)} for i in loose[:LISTED]],
                "n_unflagged": int(len(loose)), "passed": not len(loose)}
    report = {"tolerance": tolerance, "in_distribution": in_dist, "coverage": coverage,
              "answered_itself": {"agreement_set": round(float(answered.mean()), 4) if len(answered) else None,
                                  "validation": round(float(1 - val_flags.mean()), 4) if len(val_flags) else None}}
    if fp32_ood and own_ood:
        report["ood_agreement"] = {k: round(float(np.mean(fp32_ood[k] == own_ood[k])), 4)
                                   for k in fp32_ood if k in own_ood and len(fp32_ood[k])}
    problems = []
    if over.size:
        problems.append(f"{len(over)} of {len(inside)} in-distribution studies disagree with the source model beyond "
                        f"the tolerance (up to {inside.max():.2e}, tolerance {tolerance:.0e}, worst "
                        f"{in_dist['worst_item']})")
    if loose.size:
        problems.append(f"{len(loose)} of {int(beyond.sum())} studies beyond the tolerance elsewhere are not flagged by "
                        f"the artifact's own screening, so its answer would reach a user (worst "
                        f"{names[loose[diff[loose].argmax()]]}: {diff[loose].max():.2e})")
    header_free = np.flatnonzero((golden_diff[stored] > tolerance) & ~golden_flags[stored] & unlike[stored])
    if header_free.size:  # the on-target self-test has arrays, not headers: only OOD and borderline move a row
        problems.append(f"{len(header_free)} stored golden rows beyond the tolerance are flagged only by their header, "
                        "so the on-target self-test would fail")
    report["problems"] = problems
    return report
