"""Step: prove a compiled artifact agrees with its source, on golden inputs and clinical metrics."""
from __future__ import annotations

import numpy as np

from medexport.engine.compare import binary_metrics, max_abs_diff


def golden_agreement(reference: np.ndarray, scores: np.ndarray, names: tuple, tolerance: float | None) -> dict:
    """Largest and mean |score difference| per golden input against the source model."""
    per_item = np.abs(reference - scores).max(axis=1)
    worst = int(per_item.argmax())
    return {"n": int(len(per_item)), "max_abs_score_diff": max_abs_diff(reference, scores),
            "mean_abs_score_diff": float(np.abs(reference - scores).mean()), "worst_item": names[worst],
            "tolerance": tolerance, "passed": tolerance is None or bool(per_item.max() <= tolerance)}


def metric_report(val_labels: np.ndarray, source_scores: np.ndarray, scores: np.ndarray, labels: tuple,
                  thresholds: dict, names: tuple, *, max_drop: float | None, n_boot: int = 1000) -> dict:
    """Source vs artifact AUROC / sensitivity / specificity (95 % CIs) per thresholded label, and flips."""
    per_label, flips, drops = {}, [], []
    for label, threshold in thresholds.items():
        k = labels.index(label)
        truth = (val_labels == k).astype(int)
        src = binary_metrics(truth, source_scores[:, k], threshold, n_boot=n_boot)
        art = binary_metrics(truth, scores[:, k], threshold, n_boot=n_boot)
        drop = round(src["auroc"]["value"] - art["auroc"]["value"], 4)
        drops.append(drop)
        per_label[label] = {"source": src, "artifact": art, "auroc_drop": drop}
        changed = (source_scores[:, k] >= threshold) != (scores[:, k] >= threshold)
        flips += [{"item": names[i], "label": label, "source_score": round(float(source_scores[i, k]), 4),
                   "artifact_score": round(float(scores[i, k]), 4), "truth": int(truth[i])}
                  for i in np.flatnonzero(changed)]
    worst = max(drops) if drops else 0.0
    return {"metric": "auroc", "n": int(len(val_labels)), "per_label": per_label, "auroc_drop": worst,
            "max_drop": max_drop, "passed": max_drop is None or worst <= max_drop,
            "decision_flips": flips, "n_flips": len(flips)}
