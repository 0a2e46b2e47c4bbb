"""Numpy-only comparisons and clinical metrics, shared by build-time validation and on-target checks."""
from __future__ import annotations

import numpy as np


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = np.exp(x - x.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def activate(logits: np.ndarray, activation: str, temperature: float = 1.0) -> np.ndarray:
    """Scores from logits: ``activation(logits / temperature)`` (temperature 1: the model as trained)."""
    z = np.asarray(logits, np.float64) / temperature
    return softmax(z) if activation == "softmax" else sigmoid(z)


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) if np.size(a) else 0.0


def score_disagreement(reference: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per input: the largest |score difference| over its labels (classification, ECG)."""
    return np.abs(np.asarray(reference, np.float64) - scores).reshape(len(scores), -1).max(axis=1)


def mask_disagreement(reference: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Per input: the share of pixels whose mask decision differs (segmentation). Per-pixel
    probabilities of a quantized model move everywhere a little; what a clinician sees is the mask."""
    changed = (np.asarray(reference) >= threshold) != (np.asarray(scores) >= threshold)
    return changed.reshape(len(scores), -1).mean(axis=1)


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tie correction)."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, np.float64)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = scores[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def sens_spec(labels: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[float, float]:
    labels = np.asarray(labels).astype(bool)
    pred = np.asarray(scores) >= threshold
    sens = float((pred & labels).sum() / max(labels.sum(), 1))
    spec = float((~pred & ~labels).sum() / max((~labels).sum(), 1))
    return sens, spec


def bootstrap_ci(metric, *arrays, n: int = 1000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap CI of ``metric(*arrays)`` resampling cases with replacement."""
    rng = np.random.default_rng(seed)
    size = len(arrays[0])
    values = []
    for _ in range(n):
        idx = rng.integers(0, size, size)
        v = metric(*(a[idx] for a in arrays))
        if np.isfinite(v):
            values.append(v)
    if not values:
        return float("nan"), float("nan")
    return float(np.quantile(values, alpha / 2)), float(np.quantile(values, 1 - alpha / 2))


Z95 = 1.959963984540054  # standard normal quantile for a two-sided 95 % interval


def wilson_ci(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n``: honest at small ``n`` and at 0 or 1 (a
    bootstrap of 20 hits in 20 gives [1, 1]; Wilson gives [0.839, 1]). ``n = 0``: [0, 1]."""
    if n == 0:
        return 0.0, 1.0
    p, z2 = k / n, z * z
    centre, half = (p + z2 / (2 * n)) / (1 + z2 / n), z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return float(max(centre - half, 0.0)), float(min(centre + half, 1.0))


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float, *, n_boot: int = 1000) -> dict:
    """AUROC (95 % percentile-bootstrap CI) and sensitivity, specificity and accuracy at
    ``threshold`` (95 % Wilson score CIs: proportions keep an honest interval at small samples)."""
    labels, scores = np.asarray(labels).astype(bool), np.asarray(scores, np.float64)
    pred = scores >= threshold
    counts = {"sensitivity": ((pred & labels).sum(), labels.sum()),
              "specificity": ((~pred & ~labels).sum(), (~labels).sum()),
              "accuracy": ((pred == labels).sum(), len(labels))}
    out = {"n": int(len(labels)), "n_positive": int(labels.sum()), "threshold": threshold}
    lo, hi = bootstrap_ci(auroc, labels, scores, n=n_boot)
    out["auroc"] = {"value": round(auroc(labels, scores), 4), "ci95": [round(lo, 4), round(hi, 4)]}
    for name, (k, n) in counts.items():
        lo, hi = wilson_ci(int(k), int(n))
        out[name] = {"value": round(float(k / max(n, 1)), 4), "ci95": [round(lo, 4), round(hi, 4)]}
    return out


def chance_problem(metrics: dict, label: str) -> str | None:
    """What is wrong when ``binary_metrics`` show no better than chance ranking (the AUROC 95 % CI
    reaches 0.5), or worse (wholly below 0.5: labels swapped?); None when the model separates."""
    value, (lo, hi) = metrics["auroc"]["value"], metrics["auroc"]["ci95"]
    if not lo <= 0.5:
        return None
    found = f"on these {metrics['n']} studies the AUROC for '{label}' is {value:.3f} [95 % CI {lo:.3f}, {hi:.3f}]"
    if hi < 0.5:
        return f"{found}: the model ranks them in reverse (are the labels swapped?)"
    return f"{found}: the interval includes 0.5, so the model is no better than chance on them"


def f1_per_class(labels: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """F1 of each class (NaN for a class absent from both truth and prediction)."""
    out = np.full(n_classes, np.nan)
    for k in range(n_classes):
        tp = np.sum((pred == k) & (labels == k))
        denom = np.sum(pred == k) + np.sum(labels == k)
        if denom:
            out[k] = 2 * tp / denom
    return out


def macro_f1(labels: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    return float(np.nanmean(f1_per_class(labels, pred, n_classes)))


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice overlap of two boolean masks (1.0 when both are empty)."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    denom = pred.sum() + truth.sum()
    return float(2 * (pred & truth).sum() / denom) if denom else 1.0


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    union = (pred | truth).sum()
    return float((pred & truth).sum() / union) if union else 1.0


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) intersection over union of x0, y0, x1, y1 boxes ``a`` (N, 4) and ``b`` (M, 4)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    wh = np.clip(np.minimum(a[:, None, 2:], b[None, :, 2:]) - np.maximum(a[:, None, :2], b[None, :, :2]), 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def match_boxes(boxes: np.ndarray, scores: np.ndarray, truth: np.ndarray, iou_min: float = 0.5) -> np.ndarray:
    """Greedy VOC matching of one image's detections of one class: highest score first, each to
    the unclaimed truth box of highest IoU (>= ``iou_min``). Returns a bool per detection (TP)."""
    tp = np.zeros(len(boxes), bool)
    if not len(boxes) or not len(truth):
        return tp
    overlaps = box_iou(boxes, truth)
    claimed = np.zeros(len(truth), bool)
    for i in np.argsort(-np.asarray(scores), kind="stable"):
        j = int(overlaps[i].argmax())
        if overlaps[i, j] >= iou_min and not claimed[j]:
            tp[i] = claimed[j] = True
    return tp


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC all-point interpolated AP: the area under the precision envelope (VOC 2010+)."""
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def class_matches(detections: list, truths: list, label: int, iou_min: float = 0.5) -> list:
    """Per image, for class ``label``: (TP flag per detection, its scores, number of truth boxes).
    ``detections[i]`` = (boxes (N, 4), labels (N,), scores (N,)), ``truths[i]`` = (boxes, labels)."""
    out = []
    for (boxes, labels, score), (t_boxes, t_labels) in zip(detections, truths):
        mine, theirs = np.asarray(labels) == label, np.asarray(t_labels) == label
        out.append((match_boxes(np.asarray(boxes)[mine], np.asarray(score)[mine], np.asarray(t_boxes)[theirs], iou_min),
                    np.asarray(score, np.float64)[mine], int(theirs.sum())))
    return out


def ap_from_matches(matches: list) -> float:
    """AP (VOC all-point) from :func:`class_matches` of some images; NaN without truth boxes."""
    n_truth = sum(m[2] for m in matches)
    if n_truth == 0:
        return float("nan")
    tp = np.concatenate([m[0] for m in matches])
    score = np.concatenate([m[1] for m in matches])
    hits = np.cumsum(tp[np.argsort(-score, kind="stable")])
    return voc_ap(hits / n_truth, hits / np.arange(1, len(hits) + 1))


def average_precision(detections: list, truths: list, label: int, iou_min: float = 0.5) -> float:
    """AP at IoU ``iou_min`` for class ``label`` over images (see :func:`class_matches`)."""
    return ap_from_matches(class_matches(detections, truths, label, iou_min))


def mean_average_precision(detections: list, truths: list, n_classes: int, iou_min: float = 0.5, *,
                           n_boot: int = 0, seed: int = 0) -> dict:
    """AP at IoU ``iou_min`` per class and their mean ("mean"; classes without truth left out),
    each ``{"value", "ci95"}`` with a percentile bootstrap over images when ``n_boot``."""
    per = [class_matches(detections, truths, k, iou_min) for k in range(n_classes)]
    values = np.array([ap_from_matches(m) for m in per])
    boot = np.full((max(n_boot, 0), n_classes), np.nan)
    rng = np.random.default_rng(seed)
    for b in range(n_boot):
        idx = rng.integers(0, len(truths), len(truths))
        boot[b] = [ap_from_matches([m[i] for i in idx]) for m in per]

    def summary(value, samples):
        finite = samples[np.isfinite(samples)]
        ci = np.quantile(finite, [0.025, 0.975]).tolist() if len(finite) else [float("nan")] * 2
        return {"value": round(float(value), 4), "ci95": [round(float(c), 4) for c in ci]}

    out = {k: summary(values[k], boot[:, k]) for k in range(n_classes)}
    with np.errstate(all="ignore"):
        mean_boot = np.nanmean(boot, axis=1) if n_boot else boot[:, 0]
    out["mean"] = summary(np.nanmean(values) if not np.all(np.isnan(values)) else float("nan"), mean_boot)
    return out


def detection_f1(a_boxes: np.ndarray, a_labels: np.ndarray, b_boxes: np.ndarray, b_labels: np.ndarray,
                 iou_min: float = 0.5) -> float:
    """F1 of two box sets matched one to one by label at IoU ``iou_min`` (1.0 when both are empty)."""
    a_labels, b_labels = np.asarray(a_labels), np.asarray(b_labels)
    if len(a_labels) + len(b_labels) == 0:
        return 1.0
    tp = sum(int(match_boxes(np.asarray(a_boxes)[a_labels == k], np.zeros(int((a_labels == k).sum())),
                             np.asarray(b_boxes)[b_labels == k], iou_min).sum())
             for k in np.unique(a_labels))
    return 2 * tp / (len(a_labels) + len(b_labels))
