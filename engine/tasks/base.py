"""What a task is: one typed object that owns its behaviour in every layer.

A task reads a study, preprocesses it into the model's feeds, turns the runtime's outputs into
a :class:`~medexport.engine.results.Result`, and knows how its golden inputs are compared with
the source model and which metrics can guard it. Adding a task is one module here (registered
in ``tasks/__init__.py``), one result class, one guard in ``export/guards.py`` and, if it draws,
one overlay painter in the desktop (see docs/architecture.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import ClassVar

import numpy as np

from ..compare import activate, score_disagreement
from ..errors import ConfigurationError


@dataclass(frozen=True)
class ImageOptions:
    """Per-study options of image tasks."""

    frame: int | None = None  # which frame of a multi-frame DICOM
    explain: bool = False  # occlusion map when the graph has no CAM output (slower)

    def __post_init__(self):
        if self.frame is not None and (isinstance(self.frame, bool) or not isinstance(self.frame, int)
                                       or self.frame < 0):
            raise ConfigurationError(f"frame is {self.frame!r}", expected="a frame number >= 0")


@dataclass(frozen=True)
class EcgOptions:
    """Per-study options of ECG tasks."""

    lead: str | None = None  # the lead to analyse (default: the bundle's)
    fs: float | None = None  # sampling rate of a CSV or an array that does not state one

    def __post_init__(self):
        if self.fs is not None and (isinstance(self.fs, bool) or not isinstance(self.fs, (int, float))
                                    or not math.isfinite(self.fs) or self.fs <= 0):
            raise ConfigurationError(f"fs is {self.fs!r}", expected="a sampling rate in Hz, e.g. fs=500")


@dataclass(frozen=True)
class MeasureOptions:
    """Per-study options of measuring image tasks: the frame, and the pixel size of a picture
    (a DICOM states its own: PixelSpacing or the ultrasound region calibration)."""

    frame: int | None = None
    pixel_size_mm: float | None = None  # mm per pixel, square pixels

    def __post_init__(self):
        ImageOptions(frame=self.frame)  # the same check of the frame
        p = self.pixel_size_mm
        if p is not None and (isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p)
                              or not 0 < p <= 10):
            raise ConfigurationError(f"pixel_size_mm is {p!r}", expected="mm per pixel in (0, 10], e.g. 0.12",
                                     fix="give the picture's pixel size (--pixel-size 0.12)")


class Task:
    """Base of every task; subclasses set the class attributes and the four steps."""

    name: ClassVar[str]
    study_kind: ClassVar[str]  # "image" | "ecg": which studies it reads
    options_type: ClassVar[type]
    result_type: ClassVar[type]
    metrics: ClassVar[tuple]  # metric names a build can guard it with, default first
    agreement_measure: ClassVar[str] = "largest |score difference|"
    # largest disagreement with the source model allowed on any golden input, by precision
    golden_tolerance: ClassVar[dict] = {"fp32": 1e-3, "fp16": 1e-2, "int8": 5e-2}
    from_onnx: ClassVar[bool] = False  # a user's ONNX file can be built as this task (export/source.py)
    viewer_rank: ClassVar[int] = 0  # lower first when the viewer picks a default model for a study kind
    ood_applies: ClassVar[bool] = True  # False: signal quality plays the out-of-distribution role (ECG)
    thresholded_scores: ClassVar[bool] = False  # each row's scores are per-label probabilities with thresholds

    def __init__(self, manifest, decode_margin: int = 0):
        self.manifest = manifest
        self.spec = manifest.preprocess
        self.input_name = manifest.input.name
        self.decode_margin = decode_margin  # the artifact's checked reduced decode (Artifact.decode_margin)

    # -- options ---------------------------------------------------------------------
    def options(self, **given):
        """Typed options from keywords; ``None`` / ``False`` count as not given (the CLI passes
        every flag). Options this task does not take are refused, never dropped."""
        given = {k: v for k, v in given.items() if v is not None and v is not False}
        names = [f.name for f in fields(self.options_type)]
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise ConfigurationError(f"option(s) {', '.join(unknown)} do not apply to a {self.name} bundle",
                                     expected=f"only {', '.join(names) or 'none'}", fix=f"drop {', '.join(unknown)}")
        return self.options_type(**given)

    # -- the four steps ----------------------------------------------------------------
    def read(self, source, options):
        raise NotImplementedError

    def preprocess(self, study, options) -> tuple[dict, dict]:
        """(feeds, meta): the model's input and what postprocess needs to map outputs back."""
        raise NotImplementedError

    def postprocess(self, outputs: dict, meta: dict) -> dict:
        """The result's task fields (provenance and timings are added by the model)."""
        raise NotImplementedError

    def screen(self, study, strict: bool) -> list:
        """Intended-use warnings from the study itself, beyond its header (a volume's extent);
        raises OutsideIntendedUseError in strict mode. Nothing to check here."""
        return []

    def margins(self, fields: dict) -> dict:
        """label -> score minus its operating threshold (empty: no thresholded decision)."""
        return {}

    def explains(self, options) -> bool:
        """Whether ``explain`` will run for these options (the model then keeps the feeds)."""
        return False

    def explain(self, run, feeds: dict, fields: dict) -> dict:
        """Extra explanation at the caller's request; most tasks have nothing to add."""
        return fields

    # -- batches: validation, benchmarks, golden checks -------------------------------
    def scores(self, outputs: dict) -> np.ndarray:
        """(N, ...) scores of a batch of model outputs (probabilities)."""
        post = self.manifest.postprocess
        return activate(outputs[post.score_output], post.activation, post.temperature)

    @staticmethod
    def row_weights(inputs: np.ndarray) -> np.ndarray:
        """How much each input row counts when rows of one study are averaged (equal here)."""
        return np.ones(len(inputs))

    def disagreement(self, reference: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Per golden input: how far ``scores`` are from the source model's ``reference``."""
        return score_disagreement(reference, scores)

    @classmethod
    def default_metric(cls, postprocess) -> str:
        return cls.metrics[0]


def item_scores(scores: np.ndarray, groups: np.ndarray | None, weights: np.ndarray, n_items: int) -> np.ndarray:
    """Per-study scores from per-row scores: the rows of one study averaged with ``weights``."""
    if groups is None:
        return scores
    weights = np.maximum(np.asarray(weights, np.float64), 1e-6)
    out = np.zeros((n_items, scores.shape[1]))
    np.add.at(out, groups, scores * weights[:, None])
    total = np.zeros(n_items)
    np.add.at(total, groups, weights)
    return out / total[:, None]
