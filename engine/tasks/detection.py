"""Object detection: a colour study -> labelled, scored boxes on the source pixel grid.

The graph has one output, (N, classes + 4, h, w) on a grid of stride ``input / h``: per class a
centre-heatmap logit, then four box distances r (left, top, right, bottom from the cell's
centre, ``exp(r) * stride`` input pixels). The engine decodes it (numpy): sigmoid, 3 x 3 local
maxima as candidates, boxes, non-maximum suppression per class, the letterbox undone.
"""
from __future__ import annotations

import numpy as np

from ..compare import box_iou, sigmoid
from ..errors import ConfigurationError
from ..io.image import ImageStudy, read_image
from ..preprocess import Letterbox, check_colour_image, letterbox
from ..results import Detection, DetectionResult
from .base import ImageOptions, Task

NMS_IOU = 0.5  # a box overlapping a higher-scored box of its class this much is the same object
MAX_DETECTIONS = 300  # candidates per image, best first (BCCD holds up to ~40 cells)
CANDIDATE_SCORE = 0.05  # lowest score decoded for metrics (mAP needs the low end of the curve)
MAX_LOG_DISTANCE = 8.0  # exp(8) * stride is far outside any image: clipping only guards overflow


def local_peaks(heat: np.ndarray) -> np.ndarray:
    """(C, h, w) bool: cells that are the maximum of their 3 x 3 neighbourhood in their class."""
    padded = np.pad(heat, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    h, w = heat.shape[1:]
    neighbours = np.max([padded[:, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)], axis=0)
    return heat >= neighbours


def nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_max: float = NMS_IOU) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression within each class, highest score first."""
    keep = []
    for k in np.unique(labels):
        idx = np.flatnonzero(labels == k)
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        while len(idx):
            best, idx = idx[0], idx[1:]
            keep.append(best)
            if len(idx):
                idx = idx[box_iou(boxes[best:best + 1], boxes[idx])[0] <= iou_max]
    keep = np.asarray(keep, np.int64)
    return keep[np.argsort(-scores[keep], kind="stable")]


def decode(grid: np.ndarray, n_classes: int, input_size: tuple, min_score: float = CANDIDATE_SCORE,
           iou_max: float = NMS_IOU) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One item's scores (classes + 4, h, w), heatmaps already probabilities -> (boxes on the
    input grid (N, 4), labels (N,), scores (N,)), after per-class NMS, best first."""
    heat, dist = grid[:n_classes], grid[n_classes:n_classes + 4]
    stride_y, stride_x = input_size[0] / heat.shape[1], input_size[1] / heat.shape[2]
    cand = local_peaks(heat) & (heat >= min_score)
    labels, ys, xs = np.nonzero(cand)
    scores = heat[labels, ys, xs].astype(np.float64)
    top = np.argsort(-scores, kind="stable")[:MAX_DETECTIONS]
    labels, ys, xs, scores = labels[top], ys[top], xs[top], scores[top]
    d = np.exp(np.clip(dist[:, ys, xs].astype(np.float64), -MAX_LOG_DISTANCE, MAX_LOG_DISTANCE))
    cx, cy = (xs + 0.5) * stride_x, (ys + 0.5) * stride_y
    boxes = np.stack([cx - d[0] * stride_x, cy - d[1] * stride_y, cx + d[2] * stride_x, cy + d[3] * stride_y], 1)
    keep = nms(boxes, scores, labels, iou_max)
    return boxes[keep].reshape(-1, 4), labels[keep], scores[keep]


def above_thresholds(labels: np.ndarray, scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Bool per detection: its score reaches its class's operating threshold."""
    return scores >= thresholds[labels]


class DetectionTask(Task):
    name = "detection"
    study_kind = "image"
    options_type = ImageOptions
    result_type = DetectionResult
    metrics = ("map",)
    agreement_measure = "largest box score difference (unmatched boxes: margin over threshold)"
    # in score units like the classifiers' measure (see disagreement)
    golden_tolerance = {"fp32": 1e-3, "fp16": 2e-2, "int8": 1e-1}
    viewer_rank = 2

    def options(self, **given) -> ImageOptions:
        options = super().options(**given)
        if options.explain:
            raise ConfigurationError("explain does not apply to a detection bundle",
                                     expected="the boxes themselves show what the model found",
                                     fix="drop explain / --explain")
        return options

    def read(self, source, options: ImageOptions) -> ImageStudy:
        return read_image(source, frame=options.frame, colour=True)

    def preprocess(self, study: ImageStudy, options: ImageOptions) -> tuple[dict, dict]:
        check_colour_image(study.pixels, self.spec)
        tensor, geometry = letterbox(study.pixels, self.spec)
        return {self.input_name: tensor}, {"geometry": geometry}

    def postprocess(self, outputs: dict, meta: dict, index: int = 0) -> dict:
        grid = self.scores({k: v[index:index + 1] for k, v in outputs.items()})[0]
        thresholds = self.threshold_array()
        boxes, labels, scores = decode(grid, len(self.manifest.labels), self.spec.size, float(thresholds.min()))
        keep = above_thresholds(labels, scores, thresholds)
        geometry: Letterbox = meta["geometry"]
        boxes = geometry.to_source(boxes[keep])
        names = self.manifest.labels
        detections = tuple(Detection(names[k], round(float(s), 6), tuple(round(float(v), 2) for v in b))
                           for b, k, s in zip(boxes, labels[keep], scores[keep]))
        return {"detections": detections, "thresholds": dict(self.manifest.postprocess.thresholds),
                "labels": tuple(names), "image_shape": tuple(geometry.source_shape)}

    def scores(self, outputs: dict) -> np.ndarray:
        """(N, classes + 4, h, w): heatmap probabilities, then the raw log box distances."""
        raw = np.asarray(outputs[self.manifest.postprocess.score_output], np.float32)
        n = len(self.manifest.labels)
        out = raw.copy()
        out[:, :n] = sigmoid(raw[:, :n].astype(np.float64))
        return out

    def threshold_array(self) -> np.ndarray:
        t = self.manifest.postprocess.thresholds
        return np.array([t.get(k, 0.5) for k in self.manifest.labels])

    def disagreement(self, reference: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Per golden input: the largest score difference over the boxes either model reports.

        Boxes above their threshold are matched one to one (same label, IoU >= 0.5, highest score
        first); a matched pair counts |score difference|, a box the other model does not report
        counts its margin over the threshold (the least its score must have moved). So a box
        hovering at the threshold that appears in one model only counts ~0, while a confident box
        lost by a quantized model counts fully: the measure reads in score units like the
        classifiers' and is as strict where a reader would see the difference."""
        thresholds = self.threshold_array()
        n = len(self.manifest.labels)
        out = np.zeros(len(scores))
        for i in range(len(scores)):
            a = decode(reference[i], n, self.spec.size, float(thresholds.min()))
            b = decode(scores[i], n, self.spec.size, float(thresholds.min()))
            a = [x[above_thresholds(a[1], a[2], thresholds)] for x in a]
            b = [x[above_thresholds(b[1], b[2], thresholds)] for x in b]
            out[i] = _box_disagreement(a, b, thresholds)
        return out


def _box_disagreement(a: list, b: list, thresholds: np.ndarray) -> float:
    worst = 0.0
    claimed_b = np.zeros(len(b[1]), bool)
    overlaps = box_iou(a[0], b[0]) if len(a[1]) and len(b[1]) else np.zeros((len(a[1]), len(b[1])))
    for i in np.argsort(-a[2], kind="stable"):
        candidates = np.flatnonzero((b[1] == a[1][i]) & ~claimed_b & (overlaps[i] >= 0.5))
        if len(candidates):
            j = candidates[overlaps[i, candidates].argmax()]
            claimed_b[j] = True
            worst = max(worst, abs(float(a[2][i] - b[2][j])))
        else:
            worst = max(worst, float(a[2][i] - thresholds[a[1][i]]))
    for j in np.flatnonzero(~claimed_b):
        worst = max(worst, float(b[2][j] - thresholds[b[1][j]]))
    return worst
