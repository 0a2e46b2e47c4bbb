"""Image classification: greyscale study -> scores per label (+ class activation map)."""
from __future__ import annotations

import numpy as np

from ..compare import activate
from ..io.image import ImageStudy, read_image
from ..preprocess import check_image, decode_size, image_to_tensor
from ..results import ClassificationResult
from .base import ImageOptions, Task

CAM_METHOD = "class activation map computed in the compiled graph (where the model looked; not a localisation)"
OCCLUSION_METHOD = ("occlusion sensitivity on the compiled model: {n} extra inferences, slower "
                    "(where the model looked; not a localisation)")
OCCLUSION_GRID = 8


class ClassificationTask(Task):
    name = "classification"
    study_kind = "image"
    options_type = ImageOptions
    result_type = ClassificationResult
    metrics = ("auroc", "f1")
    from_onnx = True
    thresholded_scores = True

    def read(self, source, options: ImageOptions) -> ImageStudy:
        return read_image(source, frame=options.frame, min_size=decode_size(self.spec, self.decode_margin))

    def preprocess(self, study: ImageStudy, options: ImageOptions) -> tuple[dict, dict]:
        check_image(study.pixels, self.manifest.preprocess)
        tensor, geometry = image_to_tensor(study.pixels, self.manifest.preprocess, study.reduction)
        return {self.input_name: tensor}, {"geometry": geometry}

    def postprocess(self, outputs: dict, meta: dict, index: int = 0) -> dict:
        post = self.manifest.postprocess
        probs = activate(outputs[post.score_output][index], post.activation, post.temperature)
        scores = {label: float(p) for label, p in zip(self.manifest.labels, probs)}
        fields = {"scores": scores, "thresholds": dict(post.thresholds), "heatmap_geometry": meta["geometry"]}
        if post.heatmap_output and post.heatmap_output in outputs:
            label = self._heatmap_label(scores)
            cam = outputs[post.heatmap_output][index][self.manifest.labels.index(label)]
            fields.update(heatmap_grid=cam, heatmap_label=label, heatmap_method=CAM_METHOD)
        return fields

    def margins(self, fields: dict) -> dict:
        return {k: float(fields["scores"][k]) - float(t) for k, t in fields["thresholds"].items()}

    def explains(self, options: ImageOptions) -> bool:
        return options.explain

    def explain(self, run, feeds: dict, fields: dict) -> dict:
        """Fallback for graphs without CAM: occlude each cell of a grid, measure the score drop."""
        if fields.get("heatmap_grid") is not None:
            return fields
        tensor = feeds[self.input_name]
        label = self._heatmap_label(fields["scores"])
        k = self.manifest.labels.index(label)
        _, c, h, w = tensor.shape
        g = OCCLUSION_GRID
        ys, xs = np.linspace(0, h, g + 1).astype(int), np.linspace(0, w, g + 1).astype(int)
        batch = np.repeat(tensor, g * g, axis=0)
        for i in range(g):
            for j in range(g):
                batch[i * g + j, :, ys[i]:ys[i + 1], xs[j]:xs[j + 1]] = 0.0  # the normalised mean
        occluded = self.scores(run(batch))[:, k]
        drop = np.maximum(fields["scores"][label] - occluded, 0).reshape(g, g)
        return fields | {"heatmap_grid": drop.astype(np.float32), "heatmap_label": label,
                         "heatmap_method": OCCLUSION_METHOD.format(n=g * g)}

    @classmethod
    def default_metric(cls, postprocess) -> str:
        """AUROC of the thresholded findings; a classifier without thresholds decides by argmax: F1."""
        return "auroc" if postprocess.thresholds else "f1"

    def _heatmap_label(self, scores: dict) -> str:
        """The finding the map explains: the top positive label, else the top score."""
        thresholds = self.manifest.postprocess.thresholds
        positive = [k for k in scores if k in thresholds and scores[k] >= thresholds[k]]
        pool = positive or list(thresholds) or list(scores)
        return max(pool, key=scores.get)
