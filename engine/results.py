"""Frozen result records with provenance: what was found, by which model, on which runtime."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

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


@dataclass(frozen=True)
class ClassificationResult:
    """Scores per label, decisions at the bundle's operating thresholds, optional heatmap."""

    provenance: Provenance
    source: str
    input_sha256: str
    scores: dict  # label -> probability
    thresholds: dict  # label -> operating threshold
    timings_ms: dict  # read, preprocess, infer, postprocess, total
    heatmap: np.ndarray | None = None  # (H, W) on the source pixel grid, in [0, 1]
    heatmap_label: str | None = None
    heatmap_method: str | None = None
    input_meta: dict = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    # provenance shortcuts (public API)
    model_id = property(lambda self: self.provenance.model_id)
    model_version = property(lambda self: self.provenance.model_version)
    bundle_sha256 = property(lambda self: self.provenance.bundle_sha256)
    backend = property(lambda self: self.provenance.backend)
    precision = property(lambda self: self.provenance.precision)

    @property
    def positive(self) -> list[str]:
        """Labels whose score reaches their operating threshold."""
        return [k for k, t in self.thresholds.items() if self.scores[k] >= t]

    @property
    def top_label(self) -> str:
        return max(self.scores, key=self.scores.get)

    @property
    def disclaimer(self) -> str:
        return "" if self.provenance.medical_device else DISCLAIMER

    def to_dict(self) -> dict:
        """JSON-ready summary (the heatmap is summarised, not embedded)."""
        out = {
            "source": self.source, "input_sha256": self.input_sha256,
            "scores": {k: round(float(v), 6) for k, v in self.scores.items()},
            "thresholds": self.thresholds, "positive": self.positive,
            "model_id": self.model_id, "model_version": self.model_version,
            "bundle_sha256": self.bundle_sha256, "backend": self.backend,
            "precision": self.precision, "device": self.provenance.device,
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
            "created": self.created, "disclaimer": self.disclaimer,
        }
        if self.heatmap is not None:
            out["heatmap"] = {"label": self.heatmap_label, "method": self.heatmap_method,
                              "shape": list(self.heatmap.shape),
                              "note": "where the model looked; not a localisation"}
        return out
