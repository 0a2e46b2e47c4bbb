"""Numpy-only comparisons and clinical metrics, shared by build-time validation and on-target checks."""
from __future__ import annotations

import numpy as np


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = np.exp(x - x.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def activate(logits: np.ndarray, activation: str) -> np.ndarray:
    return softmax(logits.astype(np.float64)) if activation == "softmax" else sigmoid(logits.astype(np.float64))


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


def accuracy(labels: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    return float(((np.asarray(scores) >= threshold) == np.asarray(labels).astype(bool)).mean())


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


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float, *, n_boot: int = 1000) -> dict:
    """AUROC, sensitivity, specificity and accuracy at ``threshold``, each with a 95 % CI."""
    labels, scores = np.asarray(labels), np.asarray(scores, np.float64)
    fns = {
        "auroc": auroc,
        "sensitivity": lambda y, s: sens_spec(y, s, threshold)[0],
        "specificity": lambda y, s: sens_spec(y, s, threshold)[1],
        "accuracy": lambda y, s: accuracy(y, s, threshold),
    }
    out = {"n": int(len(labels)), "n_positive": int(np.asarray(labels).astype(bool).sum()), "threshold": threshold}
    for name, fn in fns.items():
        lo, hi = bootstrap_ci(fn, labels, scores, n=n_boot)
        out[name] = {"value": round(fn(labels, scores), 4), "ci95": [round(lo, 4), round(hi, 4)]}
    return out


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
