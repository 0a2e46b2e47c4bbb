"""Step: prove a compiled artifact agrees with its source, on golden inputs and clinical metrics."""
from __future__ import annotations

import numpy as np

from medexport.engine.compare import (auroc, binary_metrics, bootstrap_ci, dice, f1_per_class, iou, macro_f1,
                                      max_abs_diff)


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


def metric_report(val_labels: np.ndarray, source_scores: np.ndarray, scores: np.ndarray, labels: tuple,
                  thresholds: dict, names: tuple, *, max_drop: float | None,
                  max_decision_drop: float | None = None, n_boot: int = 1000) -> dict:
    """Source vs artifact AUROC / sensitivity / specificity (95 % CIs) per thresholded label, and flips.

    The guard: AUROC may drop by ``max_drop``; sensitivity and specificity at the operating
    threshold (the decisions a clinician sees) by ``max_decision_drop``.
    """
    per_label, flips, drops, decision_drops = {}, [], [], []
    for label, threshold in thresholds.items():
        k = labels.index(label)
        truth = (val_labels == k).astype(int)
        src = binary_metrics(truth, source_scores[:, k], threshold, n_boot=n_boot)
        art = binary_metrics(truth, scores[:, k], threshold, n_boot=n_boot)
        drop = round(src["auroc"]["value"] - art["auroc"]["value"], 4)
        drops.append(drop)
        decision = {m: round(src[m]["value"] - art[m]["value"], 4) for m in ("sensitivity", "specificity")}
        decision_drops += list(decision.values())
        per_label[label] = {"source": src, "artifact": art, "auroc_drop": drop, "decision_drop": decision}
        changed = (source_scores[:, k] >= threshold) != (scores[:, k] >= threshold)
        flips += [{"item": names[i], "label": label, "source_score": round(float(source_scores[i, k]), 4),
                   "artifact_score": round(float(scores[i, k]), 4), "truth": int(truth[i])}
                  for i in np.flatnonzero(changed)]
    worst = max(drops) if drops else 0.0
    worst_decision = max(decision_drops) if decision_drops else 0.0
    passed = (max_drop is None or worst <= max_drop) and (max_decision_drop is None or worst_decision <= max_decision_drop)
    return {"metric": "auroc", "n": int(len(val_labels)), "per_label": per_label, "auroc_drop": worst,
            "max_drop": max_drop, "decision_drop": worst_decision, "max_decision_drop": max_decision_drop,
            "passed": passed, "decision_flips": flips, "n_flips": len(flips)}


def mean_auroc(val_labels: np.ndarray, scores: np.ndarray, labels: tuple, thresholds: dict) -> float:
    """The guarded metric: AUROC averaged over the thresholded labels (one-vs-rest)."""
    return float(np.mean([auroc(val_labels == labels.index(k), scores[:, labels.index(k)]) for k in thresholds]))


def heatmap_correlation(reference: np.ndarray, maps: np.ndarray, scores: np.ndarray) -> dict:
    """Pearson correlation of each golden item's map for its top label, artifact vs source."""
    top = scores.argmax(axis=1)
    values = []
    for i, k in enumerate(top):
        a, b = reference[i, k].ravel(), maps[i, k].ravel()
        values.append(float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 1.0)
    return {"mean": round(float(np.mean(values)), 4), "min": round(float(np.min(values)), 4)}


def f1_report(val_labels: np.ndarray, source_scores: np.ndarray, scores: np.ndarray, labels: tuple, names: tuple,
              *, max_drop: float | None, n_boot: int = 1000) -> dict:
    """Argmax decisions: per-class and macro F1 (95 % CIs) for source and artifact, and flips."""
    n = len(labels)
    src_pred, art_pred = source_scores.argmax(1), scores.argmax(1)

    def summary(pred):
        lo, hi = bootstrap_ci(lambda y, p: macro_f1(y, p, n), val_labels, pred, n=n_boot)
        return {"macro_f1": {"value": round(macro_f1(val_labels, pred, n), 4), "ci95": [round(lo, 4), round(hi, 4)]},
                "f1": {lab: round(float(v), 4) for lab, v in zip(labels, f1_per_class(val_labels, pred, n))}}

    src, art = summary(src_pred), summary(art_pred)
    drop = round(src["macro_f1"]["value"] - art["macro_f1"]["value"], 4)
    flips = [{"item": names[i], "source": labels[src_pred[i]], "artifact": labels[art_pred[i]],
              "truth": labels[val_labels[i]]} for i in np.flatnonzero(src_pred != art_pred)]
    return {"metric": "macro_f1", "n": int(len(val_labels)), "source": src, "artifact": art, "f1_drop": drop,
            "max_drop": max_drop, "passed": max_drop is None or drop <= max_drop,
            "decision_flips": flips, "n_flips": len(flips)}


def image_masks(val, rows: np.ndarray, threshold: float, overlap: int) -> list[np.ndarray]:
    """Whole-image masks from per-tile probabilities, blended exactly as the engine does."""
    from medexport.engine.preprocess import blend_tiles

    out = []
    for k, (origins, shape) in enumerate(zip(val.extras["origins"], val.extras["shapes"])):
        probs = rows[val.groups == k][:, 0]
        out.append(blend_tiles(probs, origins, shape, overlap) >= threshold)
    return out


def dice_report(val, source_rows: np.ndarray, rows: np.ndarray, threshold: float, overlap: int, *,
                max_drop: float | None, n_boot: int = 1000) -> dict:
    """Per-image Dice / IoU against the truth for source and artifact (95 % CIs), and their agreement."""
    truth = val.extras["masks"]
    src, art = image_masks(val, source_rows, threshold, overlap), image_masks(val, rows, threshold, overlap)

    def summary(masks):
        out = {}
        for name, fn in (("dice", dice), ("iou", iou)):
            values = np.array([fn(m, t) for m, t in zip(masks, truth)])
            lo, hi = bootstrap_ci(lambda v: v.mean(), values, n=n_boot)
            out[name] = {"value": round(float(values.mean()), 4), "ci95": [round(lo, 4), round(hi, 4)]}
        return out

    s, a = summary(src), summary(art)
    drop = round(s["dice"]["value"] - a["dice"]["value"], 4)
    changed = [float((x != y).mean()) for x, y in zip(src, art)]
    return {"metric": "dice", "n": len(truth), "source": s, "artifact": a, "dice_drop": drop, "max_drop": max_drop,
            "passed": max_drop is None or drop <= max_drop,
            "agreement_dice": round(float(np.mean([dice(x, y) for x, y in zip(src, art)])), 4),
            "changed_pixels": round(float(np.mean(changed)), 5), "n_flips": int(sum(c > 0 for c in changed)),
            "decision_flips": [{"item": n, "changed_pixels": round(c, 5)} for n, c in zip(val.names, changed) if c > 0]}


def report(task: str, val, source_rows: np.ndarray, rows: np.ndarray, labels: tuple, postprocess, preprocess,
           *, max_drop, max_decision_drop) -> dict:
    """The validation section of an artifact's report, by task."""
    if task == "segmentation":
        threshold = next(iter(postprocess.thresholds.values()))
        return dice_report(val, source_rows, rows, threshold, preprocess.overlap, max_drop=max_drop)
    src, art = val.item_scores(source_rows), val.item_scores(rows)
    if postprocess.thresholds:
        return metric_report(val.labels, src, art, labels, postprocess.thresholds, val.names,
                             max_drop=max_drop, max_decision_drop=max_decision_drop)
    return f1_report(val.labels, src, art, labels, val.names, max_drop=max_drop)


def guarded_metric(task: str, val, rows: np.ndarray, labels: tuple, postprocess, preprocess) -> float:
    """The number the int8 guard protects: mean Dice, mean AUROC (thresholded labels) or macro F1."""
    if task == "segmentation":
        threshold = next(iter(postprocess.thresholds.values()))
        masks = image_masks(val, rows, threshold, preprocess.overlap)
        return float(np.mean([dice(m, t) for m, t in zip(masks, val.extras["masks"])]))
    scores = val.item_scores(rows)
    if postprocess.thresholds:
        return mean_auroc(val.labels, scores, labels, postprocess.thresholds)
    return macro_f1(val.labels, scores.argmax(1), len(labels))
