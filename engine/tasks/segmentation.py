"""Segmentation: a greyscale image -> overlapping tiles -> probabilities -> mask on the source grid."""
from __future__ import annotations

import numpy as np

from ..compare import mask_disagreement
from ..errors import ConfigurationError
from ..io.image import ImageStudy, read_image
from ..preprocess import blend_tiles, check_image, image_to_tiles
from ..results import SegmentationResult
from .base import ImageOptions, Task


class SegmentationTask(Task):
    name = "segmentation"
    study_kind = "image"
    options_type = ImageOptions
    result_type = SegmentationResult
    metrics = ("dice",)
    agreement_measure = "share of mask pixels changed"
    golden_tolerance = {"fp32": 1e-3, "fp16": 5e-3, "int8": 2e-2}
    viewer_rank = 1  # a classifier first, where both read the same studies

    def options(self, **given) -> ImageOptions:
        options = super().options(**given)
        if options.explain:
            raise ConfigurationError("explain does not apply to a segmentation bundle",
                                     expected="the mask itself shows where the model found the structure",
                                     fix="drop explain / --explain")
        return options

    def read(self, source, options: ImageOptions) -> ImageStudy:
        return read_image(source, frame=options.frame)

    def preprocess(self, study: ImageStudy, options: ImageOptions) -> tuple[dict, dict]:
        check_image(study.pixels, self.spec)
        tiles, origins = image_to_tiles(study.pixels, self.spec)
        return {self.input_name: tiles}, {"origins": origins, "shape": study.pixels.shape}

    def postprocess(self, outputs: dict, meta: dict) -> dict:
        name = self.manifest.postprocess.score_output
        logits = outputs[name]
        # a few tiles at a time, blended as they come: the (float64) activation of all ~400 tiles
        # of a 4096^2 image took 600 MB, and holding all their probabilities another 115 MB
        probs = (p for i in range(0, len(logits), 16) for p in self.scores({name: logits[i:i + 16]})[:, 0])
        probability = blend_tiles(probs, meta["origins"], meta["shape"], self.spec.overlap, logits.shape[-1])
        return {"probability": probability, "thresholds": dict(self.manifest.postprocess.thresholds),
                "tiles": len(meta["origins"])}

    def scores(self, outputs: dict) -> np.ndarray:
        """(N, 1, h, w) probabilities per tile."""
        return super().scores(outputs).astype(np.float32)

    def disagreement(self, reference: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Per golden tile, against the source model: the share of pixels whose mask decision differs."""
        return mask_disagreement(reference, scores, next(iter(self.manifest.postprocess.thresholds.values())))
