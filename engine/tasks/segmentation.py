"""Segmentation: a greyscale image -> overlapping tiles -> probabilities -> mask on the source grid."""
from __future__ import annotations

import numpy as np

from ..compare import activate, mask_disagreement
from ..io.image import ImageStudy, read_image
from ..preprocess import blend_tiles, check_image, image_to_tiles
from ..results import SegmentationResult


class SegmentationTask:
    result_type = SegmentationResult
    predict_options = ("frame",)

    def __init__(self, manifest):
        self.manifest = manifest
        self.spec = manifest.preprocess
        self.input_name = manifest.input.name

    def read(self, source, **options) -> ImageStudy:
        return read_image(source, frame=options.get("frame"))

    def preprocess(self, study: ImageStudy) -> tuple[dict, dict]:
        check_image(study.pixels, self.spec)
        tiles, origins = image_to_tiles(study.pixels, self.spec)
        return {self.input_name: tiles}, {"origins": origins, "shape": study.pixels.shape}

    def postprocess(self, outputs: dict, meta: dict) -> dict:
        logits = outputs[self.manifest.postprocess.score_output]
        # a few tiles at a time: the (float64) activation of all ~400 tiles of a 4096^2 image took 600 MB
        probs = np.concatenate([self.scores({self.manifest.postprocess.score_output: logits[i:i + 16]})[:, 0]
                                for i in range(0, len(logits), 16)])
        probability = blend_tiles(probs, meta["origins"], meta["shape"], self.spec.overlap)
        return {"probability": probability, "thresholds": dict(self.manifest.postprocess.thresholds),
                "tiles": len(meta["origins"])}

    def scores(self, outputs: dict) -> np.ndarray:
        """(N, 1, h, w) probabilities per tile."""
        post = self.manifest.postprocess
        return activate(outputs[post.score_output], post.activation).astype(np.float32)

    agreement_measure = "share of mask pixels changed"

    def disagreement(self, reference: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Per golden tile, against the source model: the share of pixels whose mask decision differs."""
        return mask_disagreement(reference, scores, next(iter(self.manifest.postprocess.thresholds.values())))
