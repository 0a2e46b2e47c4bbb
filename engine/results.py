"""Frozen result records with provenance: what was found, by which model, on which runtime."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property

import numpy as np

DISCLAIMER = "Demo model, not a medical device: not for diagnosis or treatment decisions."


@dataclass(frozen=True)
class Provenance:
    model_id: str
    model_version: str
    bundle_sha256: str
    backend: str
    precision: str
    device: str
    medical_device: bool = False


class _Provenanced:
    """Shortcuts from a result to its provenance (public API names)."""

    model_id = property(lambda self: self.provenance.model_id)
    model_version = property(lambda self: self.provenance.model_version)
    bundle_sha256 = property(lambda self: self.provenance.bundle_sha256)
    backend = property(lambda self: self.provenance.backend)
    precision = property(lambda self: self.provenance.precision)

    @property
    def disclaimer(self) -> str:
        return "" if self.provenance.medical_device else DISCLAIMER

    @property
    def top_label(self) -> str:
        return max(self.scores, key=self.scores.get)

    def _common(self) -> dict:
        return {"source": self.source, "input_sha256": self.input_sha256,
                "scores": {k: round(float(v), 6) for k, v in self.scores.items()},
                "model_id": self.model_id, "model_version": self.model_version,
                "bundle_sha256": self.bundle_sha256, "backend": self.backend,
                "precision": self.precision, "device": self.provenance.device,
                "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
                "created": self.created, "disclaimer": self.disclaimer}


@dataclass(frozen=True)
class ClassificationResult(_Provenanced):
    """Scores per label, decisions at the bundle's operating thresholds, optional heatmap."""

    provenance: Provenance
    source: str
    input_sha256: str
    scores: dict  # label -> probability
    thresholds: dict  # label -> operating threshold
    timings_ms: dict  # read, preprocess, infer, postprocess, total
    heatmap_grid: np.ndarray | None = None  # (h, w) map on the model's input grid
    heatmap_geometry: object = None  # preprocess.Geometry, to map it back onto the source
    heatmap_label: str | None = None
    heatmap_method: str | None = None
    input_meta: dict = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @cached_property
    def heatmap(self) -> np.ndarray | None:
        """Where the model looked, (H, W) on the source pixel grid in [0, 1]; computed on first use."""
        if self.heatmap_grid is None:
            return None
        from .preprocess import map_to_source

        cam = np.maximum(map_to_source(self.heatmap_grid, self.heatmap_geometry), 0)
        top = float(cam.max())
        return (cam / top).astype(np.float32) if top > 0 else cam.astype(np.float32)

    @property
    def positive(self) -> list[str]:
        """Labels whose score reaches their operating threshold."""
        return [k for k, t in self.thresholds.items() if self.scores[k] >= t]

    def to_dict(self) -> dict:
        """JSON-ready summary (the heatmap is summarised, not embedded)."""
        out = self._common() | {"thresholds": self.thresholds, "positive": self.positive}
        if self.heatmap_grid is not None:
            out["heatmap"] = {"label": self.heatmap_label, "method": self.heatmap_method,
                              "shape": list(self.heatmap_geometry.source_shape),
                              "note": "where the model looked; not a localisation"}
        return out


@dataclass(frozen=True)
class EcgRhythmResult(_Provenanced):
    """Rhythm class per record, beats and rhythm statistics, and where along the signal the model looked."""

    provenance: Provenance
    source: str
    input_sha256: str
    scores: dict  # label -> probability (mean over beat windows)
    timings_ms: dict
    lead: str  # the lead that was analysed
    fs: float  # the source's sampling rate
    beats: np.ndarray  # R-peak sample indices on the source's time base
    stats: dict  # heart rate, RR CV, normalised RMSSD, pNN50, number of beats
    saliency: np.ndarray  # one weight in [0, 1] per beat: where the model looked
    windows: int = 1
    input_meta: dict = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def label(self) -> str:
        return self.top_label

    @property
    def heart_rate(self) -> float | None:
        return self.stats.get("heart_rate_bpm")

    def to_dict(self) -> dict:
        return self._common() | {"label": self.label, "lead": self.lead, "fs": self.fs, "stats": self.stats,
                                 "beats_s": [round(b / self.fs, 3) for b in self.beats.tolist()],
                                 "saliency": [round(float(v), 3) for v in self.saliency], "windows": self.windows,
                                 "saliency_note": "where the model looked, per beat; not a localisation"}


@dataclass(frozen=True)
class SegmentationResult(_Provenanced):
    """A mask on the source pixel grid, with the probability map it was thresholded from."""

    provenance: Provenance
    source: str
    input_sha256: str
    probability: np.ndarray  # (H, W) float32 in [0, 1], source grid
    thresholds: dict  # label -> threshold applied to the probability
    timings_ms: dict
    tiles: int = 1
    input_meta: dict = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def label(self) -> str:
        return next(iter(self.thresholds))

    @cached_property
    def mask(self) -> np.ndarray:
        """(H, W) bool: probability at or above the bundle's threshold."""
        return self.probability >= self.thresholds[self.label]

    @property
    def scores(self) -> dict:
        """Share of the image in the mask (for tables and the audit log)."""
        return {f"{self.label}_fraction": float(self.mask.mean())}

    def dice(self, reference: np.ndarray) -> float:
        from .compare import dice

        return dice(self.mask, reference)

    def to_dict(self) -> dict:
        return self._common() | {"label": self.label, "threshold": self.thresholds[self.label],
                                 "mask_shape": list(self.mask.shape), "mask_fraction": round(float(self.mask.mean()), 5),
                                 "tiles": self.tiles}
