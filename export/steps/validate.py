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
