"""Frozen result records with provenance: what was found, by which model, on which runtime.

Every result is a :class:`Result`. The CLI, the viewer, the PDF and the SR writers call its
methods (``headline``, ``score_rows``, ``detail_lines``, ``overlay``, ``finding_labels``,
``to_dict``, ``save_outputs``) and never test which attributes a result happens to have.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import ClassVar

import numpy as np

from .cautions import NOT_ASSESSED, ResultWarning
from .ood import OodScore
from .codes import BLOOD_CELLS, ECG_RHYTHMS, HIPPOCAMPUS_PARTS, IMAGE_FINDINGS

DISCLAIMER = "Demo model, not a medical device: not for diagnosis or treatment decisions."
OWN_MODEL_DISCLAIMER = ("Not validated by medexport: the publisher's own model, not marked as a medical device; "
                        "check its intended use and validation before relying on it.")
SHIPPED_SOURCE = "registered"  # a manifest's provenance.source for the models medexport ships (models/zoo.py)
LOOKED_NOTE = "where the model looked; not a localisation"
MAX_BOX_LINES = 60  # detection boxes listed in detail lines (a smear holds ~20-40)


@dataclass(frozen=True)
class Provenance:
    model_id: str
    model_version: str
    bundle_sha256: str
    backend: str
    precision: str
    device: str
    medical_device: bool = False
    source: str = SHIPPED_SOURCE  # the manifest's provenance.source: "registered" (shipped demo) or "onnx" (a user's)
    intended_use: str = ""  # the manifest's intended-use statement the answer was computed under (reports state it)


def disclaimer_for(medical_device: bool, source: str) -> str:
    """The stamp on every output: none for a medical device, "Demo model" for the models medexport
    ships, and "not validated by medexport" for a publisher's own model."""
    if medical_device:
        return ""
    return DISCLAIMER if source == SHIPPED_SOURCE else OWN_MODEL_DISCLAIMER


@dataclass(frozen=True)
class ScoreRow:
    """One line of a score table: the label, its score, its operating threshold (if any) and
    whether it is the decision (at or above its threshold, or the top label)."""

    label: str
    score: float
    threshold: float | None
    hit: bool


@dataclass(frozen=True)
class Overlay:
    """What a result draws over its study: ``kind`` picks the viewer's painter ("heatmap",
    "mask", "beats", "boxes"), ``data`` is on the source grid, ``note`` says what it shows."""

    kind: str
    data: object
    note: str


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True, kw_only=True)
class Result:
    """Provenance and timing every result carries, and the methods every consumer calls."""

    provenance: Provenance
    source: str  # a path, or "<array>"
    input_sha256: str
    timings_ms: dict  # read, preprocess, infer, postprocess, total
    input_meta: dict = field(default_factory=dict)
    warnings: tuple[ResultWarning, ...] = ()  # never dropped: every consumer shows them
    ood: OodScore | None = None  # out-of-distribution score; None: the bundle has no reference
    second_opinion: dict | None = None  # the quantized answer the ladder did not use: precision, flags, scores
    created: str = field(default_factory=_now)

    saves: ClassVar[tuple] = ()  # the files save_outputs() writes: "mask", "heatmap"
    # DICOM SR (TID 1500): the procedure code, and whether findings reference the source image;
    # None where the result is not an SR's kind (a mask goes to DICOM SEG)
    sr_procedure: ClassVar[tuple | None] = ("363679005", "SCT", "Imaging")
    sr_references_image: ClassVar[bool] = True
    label_codes: ClassVar[dict] = {}  # label -> standard code (engine/codes.py); others stay private
    table_kind: ClassVar[str] = "findings"  # what its score table holds: findings, detections or measurements

    model_id = property(lambda self: self.provenance.model_id)
    model_version = property(lambda self: self.provenance.model_version)
    bundle_sha256 = property(lambda self: self.provenance.bundle_sha256)
    backend = property(lambda self: self.provenance.backend)
    precision = property(lambda self: self.provenance.precision)
    intended_use = property(lambda self: self.provenance.intended_use)

    @property
    def disclaimer(self) -> str:
        return disclaimer_for(self.provenance.medical_device, self.provenance.source)

    @property
    def top_label(self) -> str:
        return max(self.scores, key=self.scores.get)

    # -- what every consumer calls ---------------------------------------------------------
    def headline(self) -> str:
        """The decision in one line a clinician reads; "Not assessed: ..." when the study is flagged
        (the model's own answer stays in ``decision()``, the score table and the details)."""
        if self.not_assessed:
            return "Not assessed: " + " and ".join(NOT_ASSESSED[c] for c in self.not_assessed)
        return self.decision()

    def decision(self) -> str:
        """The model's own answer in one line, whether or not the study is flagged."""
        raise NotImplementedError

    @property
    def not_assessed(self) -> tuple[str, ...]:
        """The warning codes under which the model does not vouch for this answer (empty: it does)."""
        codes = {w.code for w in self.warnings}
        return tuple(c for c in NOT_ASSESSED if c in codes)

    def score_rows(self) -> list[ScoreRow]:
        """The score table, highest first (the top label is the decision by default)."""
        top = self.top_label
        return [ScoreRow(k, float(v), None, k == top) for k, v in sorted(self.scores.items(), key=lambda kv: -kv[1])]

    def detail_lines(self) -> list[str]:
        """Task-specific facts beside the scores (beats, mask size, what the overlay shows)."""
        return []

    def overlay(self) -> Overlay | None:
        return None

    def finding_labels(self) -> list[str]:
        """The findings an SR records as qualitative evaluations (empty: no finding)."""
        return [self.top_label]

    def to_dict(self) -> dict:
        """JSON-ready summary (arrays are summarised, not embedded)."""
        return {"source": self.source, "input_sha256": self.input_sha256,
                "scores": {k: round(float(v), 6) for k, v in self.scores.items()},
                "decision": self.headline(), "model_decision": self.decision(),
                "not_assessed": list(self.not_assessed),
                "model_id": self.model_id, "model_version": self.model_version,
                "bundle_sha256": self.bundle_sha256, "backend": self.backend,
                "precision": self.precision, "device": self.provenance.device,
                "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
                "warnings": [w.to_dict() for w in self.warnings],
                "ood": None if self.ood is None else self.ood.to_dict(), "second_opinion": self.second_opinion,
                "created": self.created, "disclaimer": self.disclaimer}

    def save_outputs(self, folder: Path, source_path: str | None = None) -> dict[str, Path]:
        """Write this result's files (see ``saves``) into ``folder``, never overwriting."""
        return {}


@dataclass(frozen=True, kw_only=True)
class ClassificationResult(Result):
    """Scores per label, decisions at the bundle's operating thresholds, optional heatmap."""

    scores: dict  # label -> probability
    thresholds: dict  # label -> operating threshold
    heatmap_grid: np.ndarray | None = None  # (h, w) map on the model's input grid
    heatmap_geometry: object = None  # preprocess.Geometry, to map it back onto the source
    heatmap_label: str | None = None
    heatmap_method: str | None = None

    saves: ClassVar[tuple] = ("heatmap",)
    label_codes: ClassVar[dict] = IMAGE_FINDINGS

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

    def decision(self) -> str:
        if not self.thresholds:
            return self.top_label
        return ("POSITIVE: " + ", ".join(self.positive)) if self.positive else "below threshold"

    def score_rows(self) -> list[ScoreRow]:
        if not self.thresholds:
            return super().score_rows()
        return [ScoreRow(k, float(v), self.thresholds.get(k), k in self.thresholds and v >= self.thresholds[k])
                for k, v in sorted(self.scores.items(), key=lambda kv: -kv[1])]

    def detail_lines(self) -> list[str]:
        return [f"heatmap: {LOOKED_NOTE} for '{self.heatmap_label}'"] if self.heatmap_grid is not None else []

    def overlay(self) -> Overlay | None:
        if self.heatmap_grid is None:
            return None
        return Overlay("heatmap", self.heatmap, f"Overlay: {LOOKED_NOTE} for '{self.heatmap_label}'.")

    def finding_labels(self) -> list[str]:
        return self.positive if self.thresholds else [self.top_label]

    def to_dict(self) -> dict:
        out = super().to_dict() | {"thresholds": self.thresholds, "positive": self.positive}
        if self.heatmap_grid is not None:
            out["heatmap"] = {"label": self.heatmap_label, "method": self.heatmap_method,
                              "shape": list(self.heatmap_geometry.source_shape), "note": LOOKED_NOTE}
        return out

    def save_outputs(self, folder: Path, source_path: str | None = None) -> dict[str, Path]:
        if self.heatmap_grid is None:
            return {}
        from .outputs import save_heatmap_png

        return {"heatmap_file": save_heatmap_png(self, Path(folder))}


@dataclass(frozen=True, kw_only=True)
class EcgRhythmResult(Result):
    """Rhythm class per record, beats and rhythm statistics, and where along the signal the model looked."""

    scores: dict  # label -> probability (mean over beat windows)
    lead: str  # the lead that was analysed
    fs: float  # the source's sampling rate
    beats: np.ndarray  # R-peak sample indices on the source's time base
    stats: dict  # heart rate, RR CV, normalised RMSSD, pNN50, number of beats
    saliency: np.ndarray  # one weight in [0, 1] per beat: where the model looked
    windows: int = 1
    leads: tuple = ()  # the lead(s) whose mean score decided; ``lead`` is the best of them
    lead_choice: str = ""  # "signal quality", "requested" or "only lead"
    lead_scores: dict = field(default_factory=dict)  # lead -> its own scores
    quality: tuple = ()  # per checked lead: ok, reasons, QRS-to-noise, beats (engine/signal_quality.py)

    sr_procedure: ClassVar[tuple | None] = ("29303009", "SCT", "Electrocardiographic procedure")
    sr_references_image: ClassVar[bool] = False
    label_codes: ClassVar[dict] = ECG_RHYTHMS

    @property
    def label(self) -> str:
        return self.top_label

    @property
    def heart_rate(self) -> float | None:
        return self.stats.get("heart_rate_bpm")

    def decision(self) -> str:
        hr = self.heart_rate
        return f"{self.label.upper()}" + (f", {hr:.0f} bpm" if hr else "")

    def detail_lines(self) -> list[str]:
        lines = [f"lead {self.lead}, {len(self.beats)} beats, {self.windows} window(s)"]
        if self.leads:
            lines.append(f"decided by lead{'s' if len(self.leads) > 1 else ''} {', '.join(self.leads)} "
                         f"({self.lead_choice}" + (f"; {len(self.quality)} leads checked" if len(self.quality) > 1 else "")
                         + (", their windows pooled)" if len(self.leads) > 1 else ")"))
        st = self.stats
        if st.get("heart_rate_bpm"):
            lines.append(f"heart rate {st['heart_rate_bpm']:.0f} bpm; RR CV {st['rr_cv']:.3f}, "
                         f"normalised RMSSD {st['rmssd_norm']:.3f}, pNN50 {st['pnn50']:.2f}")
        return lines

    def overlay(self) -> Overlay:
        return Overlay("beats", (self.beats, self.saliency), f"Shading: {LOOKED_NOTE}, per beat.")

    def to_dict(self) -> dict:
        return super().to_dict() | {"label": self.label, "lead": self.lead, "fs": self.fs, "stats": self.stats,
                                    "beats_s": [round(b / self.fs, 3) for b in self.beats.tolist()],
                                    "saliency": [round(float(v), 3) for v in self.saliency],
                                    "windows": self.windows, "saliency_note": f"{LOOKED_NOTE}, per beat",
                                    "leads": list(self.leads), "lead_choice": self.lead_choice,
                                    "lead_scores": self.lead_scores, "signal_quality": list(self.quality)}


@dataclass(frozen=True, kw_only=True)
class SegmentationResult(Result):
    """A mask on the source pixel grid, with the probability map it was thresholded from."""

    probability: np.ndarray  # (H, W) float32 in [0, 1], source grid
    thresholds: dict  # label -> threshold applied to the probability
    tiles: int = 1

    saves: ClassVar[tuple] = ("mask",)
    sr_procedure: ClassVar[tuple | None] = None  # a mask is saved as DICOM SEG

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

    def decision(self) -> str:
        return f"{self.label}: {self.mask.mean() * 100:.1f} % of the image"

    def detail_lines(self) -> list[str]:
        return [f"{self.label}: {self.mask.mean() * 100:.1f} % of {self.mask.shape[1]} x {self.mask.shape[0]} pixels "
                f"(probability >= {self.thresholds[self.label]:.2f}; {self.tiles} tiles)"]

    def overlay(self) -> Overlay:
        return Overlay("mask", self.mask, f"Overlay: the model's mask (probability >= {self.thresholds[self.label]:.2f}).")

    def to_dict(self) -> dict:
        return super().to_dict() | {"label": self.label, "threshold": self.thresholds[self.label],
                                    "mask_shape": list(self.mask.shape),
                                    "mask_fraction": round(float(self.mask.mean()), 5), "tiles": self.tiles}

    def save_outputs(self, folder: Path, source_path: str | None = None) -> dict[str, Path]:
        """The mask as DICOM SEG for a DICOM study (referencing it), else as a PNG."""
        from . import outputs

        if self.input_meta.get("SOPInstanceUID") and source_path:
            return {"mask_file": outputs.save_dicom_seg(self, source_path, Path(folder))}
        return {"mask_file": outputs.save_mask_png(self, Path(folder))}


@dataclass(frozen=True)
class Detection:
    """One found object: its label, score and box (x0, y0, x1, y1) in source pixels."""

    label: str
    score: float
    box: tuple


@dataclass(frozen=True, kw_only=True)
class DetectionResult(Result):
    """Boxes at the bundle's operating thresholds (one per label), counted per label."""

    detections: tuple  # Detection, best score first
    thresholds: dict  # label -> operating threshold on the box score
    labels: tuple  # every label the model knows, in the bundle's order
    image_shape: tuple  # (H, W) of the source

    saves: ClassVar[tuple] = ("boxes",)
    table_kind: ClassVar[str] = "detections"
    sr_procedure: ClassVar[tuple | None] = ("363679005", "SCT", "Imaging")
    label_codes: ClassVar[dict] = BLOOD_CELLS

    @property
    def counts(self) -> dict:
        """Objects per label (every label, zeros included)."""
        out = {k: 0 for k in self.labels}
        for d in self.detections:
            out[d.label] += 1
        return out

    @property
    def scores(self) -> dict:
        """Mean box score per label (0 when none found): for tables and the audit log."""
        return {k: float(np.mean([d.score for d in self.detections if d.label == k] or [0.0])) for k in self.labels}

    def decision(self) -> str:
        return ", ".join(f"{k} {n}" for k, n in self.counts.items())

    def score_rows(self) -> list[ScoreRow]:
        counts = self.counts
        return [ScoreRow(f"{k} ({counts[k]})", self.scores[k], self.thresholds.get(k), counts[k] > 0) for k in self.labels]

    def detail_lines(self) -> list[str]:
        h, w = self.image_shape
        rule = ", ".join(f"{k} >= {t:.2f}" for k, t in self.thresholds.items())
        lines = [f"{len(self.detections)} boxes on {w} x {h} pixels (box score {rule}; score = mean per label)"]
        shown = self.detections[:MAX_BOX_LINES]
        lines += [f"{d.label} {d.score:.2f} at ({d.box[0]:.0f}, {d.box[1]:.0f})-({d.box[2]:.0f}, {d.box[3]:.0f})"
                  for d in shown]
        if len(self.detections) > len(shown):
            lines.append(f"... {len(self.detections) - len(shown)} more boxes (all in to_dict / the saved CSV)")
        return lines

    def overlay(self) -> Overlay:
        return Overlay("boxes", (self.detections, self.image_shape, self.labels),
                       f"Overlay: {len(self.detections)} boxes, coloured by label.")

    def finding_labels(self) -> list[str]:
        return [k for k, n in self.counts.items() if n]

    def to_dict(self) -> dict:
        return super().to_dict() | {"counts": self.counts, "thresholds": self.thresholds,
                                    "image_shape": list(self.image_shape),
                                    "detections": [{"label": d.label, "score": round(d.score, 4),
                                                    "box": [round(v, 1) for v in d.box]} for d in self.detections]}

    def save_outputs(self, folder: Path, source_path: str | None = None) -> dict[str, Path]:
        """The boxes as CSV (label, score, x0, y0, x1, y1 in source pixels)."""
        from .atomic import write_new

        lines = ["label,score,x0,y0,x1,y1"] + [f"{d.label},{d.score:.4f}," + ",".join(f"{v:.1f}" for v in d.box)
                                               for d in self.detections]
        name = f"{Path(self.source).stem if self.source != '<array>' else 'array'}_boxes.csv"
        return {"boxes_file": write_new(Path(folder) / name, ("\n".join(lines) + "\n").encode())}


@dataclass(frozen=True, kw_only=True)
class FetalHeadResult(SegmentationResult):
    """Fetal head biometry: the mask, the ellipse fitted to it (source pixel grid) and the
    measurements from it: HC (the ellipse's perimeter, the HC18 convention), BPD (minor axis),
    OFD (major axis) in mm and GA in weeks (Hadlock 1984, refused outside its range); in pixels,
    without GA, when the study gives no pixel spacing (``spacing_source`` == "none")."""

    table_kind: ClassVar[str] = "measurements"

    ellipse: object = None  # engine.ellipse.Ellipse, or None when none could be fitted
    measurements: dict = field(default_factory=dict)  # head_circumference_mm ... or *_px
    pixel_spacing_mm: tuple | None = None  # (row, column)
    spacing_source: str = "none"

    sr_procedure: ClassVar[tuple | None] = ("16310003", "SCT", "Ultrasonography")
    UNITS: ClassVar[dict] = {"_mm": "mm", "_px": "px", "_weeks": "wk"}
    SHORT: ClassVar[dict] = {"head_circumference": "HC", "biparietal_diameter": "BPD",
                             "occipitofrontal_diameter": "OFD", "gestational_age": "GA"}

    @property
    def in_mm(self) -> bool:
        return self.pixel_spacing_mm is not None

    @property
    def scores(self) -> dict:
        """The numeric measurements (tables, audit log, SR), and the mask's share of the image."""
        return {k: float(v) for k, v in self.measurements.items() if v is not None} | \
            {f"{self.label}_fraction": float(self.mask.mean())}

    def _parts(self) -> list[str]:
        parts = []
        for key, value in self.measurements.items():
            short = next((s for name, s in self.SHORT.items() if key.startswith(name)), key)
            unit = next(u for suffix, u in self.UNITS.items() if key.endswith(suffix))
            parts.append(f"{short} outside the formula's range" if value is None else f"{short} {value:.1f} {unit}")
        return parts

    def decision(self) -> str:
        if self.ellipse is None:
            return "no head outline found: no measurement"
        return ", ".join(self._parts()) + ("" if self.in_mm else " (no pixel spacing: lengths in pixels)")

    def score_rows(self) -> list[ScoreRow]:
        return [ScoreRow(k, float(v), None, False) for k, v in self.measurements.items() if v is not None]

    def detail_lines(self) -> list[str]:
        lines = [f"{self.label}: {self.mask.mean() * 100:.1f} % of {self.mask.shape[1]} x {self.mask.shape[0]} pixels "
                 f"(probability >= {self.thresholds[self.label]:.2f})"]
        if self.ellipse is not None:
            e = self.ellipse
            lines.append(f"ellipse: centre ({e.cx:.1f}, {e.cy:.1f}) px, axes {e.axes[0]:.1f} x {e.axes[1]:.1f} px, "
                         f"angle {e.angle_deg:.1f} deg; HC = its perimeter (HC18 convention), BPD/OFD = its axes")
        spacing = "none" if not self.in_mm else f"{self.pixel_spacing_mm[0]:.4g} x {self.pixel_spacing_mm[1]:.4g} mm"
        lines.append(f"pixel spacing: {spacing} ({self.spacing_source})")
        if self.measurements.get("gestational_age_weeks") is not None:
            from .ellipse import HADLOCK_REFERENCE

            lines.append(f"gestational age from HC: {HADLOCK_REFERENCE}")
        return lines

    def overlay(self) -> Overlay:
        return Overlay("ellipse", (self.mask, self.ellipse),
                       f"Overlay: the model's mask (probability >= {self.thresholds[self.label]:.2f}) and the fitted ellipse.")

    def finding_labels(self) -> list[str]:
        return [self.label] if self.ellipse is not None else []

    def to_dict(self) -> dict:
        return super().to_dict() | {
            "ellipse": None if self.ellipse is None else self.ellipse.to_dict(),
            "measurements": dict(self.measurements), "pixel_spacing_mm": self.pixel_spacing_mm,
            "spacing_source": self.spacing_source, "units": "mm" if self.in_mm else "pixels"}


@dataclass(frozen=True, kw_only=True)
class VolumeSegmentationResult(Result):
    """Labels on the source voxel grid (a series: slices x rows x columns in sorted order, each
    slice's SOP Instance UID in ``slice_uids``; NIfTI: nibabel's array) and each label's volume
    in mL (voxel count x the voxel volume from the affine)."""

    mask: np.ndarray  # uint8: 0 background, i + 1 for labels[i]
    labels: tuple  # the bundle's labels, in mask order from 1
    measurements: dict  # "<label>_volume_ml" for each label, "total_volume_ml"
    voxel_volume_ml: float
    spacing_mm: tuple  # along each array axis
    affine: np.ndarray  # array index -> LPS mm
    slice_uids: tuple = ()
    volume_kind: str = "nifti"  # dicom | dicom-enhanced | nifti
    windows: int = 1

    table_kind: ClassVar[str] = "measurements"
    saves: ClassVar[tuple] = ("mask", "report")  # DICOM SEG (NIfTI: a label map) and SR; the PDF report
    sr_procedure: ClassVar[tuple | None] = ("363679005", "SCT", "Imaging")  # TID 1500 volumes (engine/sr.py)
    label_codes: ClassVar[dict] = HIPPOCAMPUS_PARTS

    @property
    def scores(self) -> dict:
        """The volumes in mL (tables, audit log)."""
        return dict(self.measurements)

    def decision(self) -> str:
        return ", ".join(f"{k.removesuffix('_volume_ml')} {v:.2f} mL" for k, v in self.measurements.items())

    def score_rows(self) -> list[ScoreRow]:
        return [ScoreRow(k, float(v), None, False) for k, v in self.measurements.items()]

    def detail_lines(self) -> list[str]:
        shape = " x ".join(map(str, self.mask.shape))
        spacing = " x ".join(f"{s:.3g}" for s in self.spacing_mm)
        return [f"labels on the source grid: {shape} voxels of {spacing} mm ({self.voxel_volume_ml * 1000:.3g} mm^3 each; "
                f"{self.volume_kind}); {self.windows} window(s)",
                "volume = voxel count x voxel volume from the affine"]

    def finding_labels(self) -> list[str]:
        return [k for i, k in enumerate(self.labels) if (self.mask == i + 1).any()]

    def overlay(self) -> Overlay:
        """The labels on the voxel grid, one colour per label (the viewer's three volume views)."""
        return Overlay("labels", (self.mask, {i + 1: k for i, k in enumerate(self.labels)}),
                       "Overlay: the model's labels, one colour per label.")

    def to_dict(self) -> dict:
        return super().to_dict() | {"measurements": dict(self.measurements), "labels": list(self.labels),
                                    "mask_shape": list(self.mask.shape), "voxel_volume_ml": self.voxel_volume_ml,
                                    "spacing_mm": list(self.spacing_mm), "volume_kind": self.volume_kind,
                                    "slices": len(self.slice_uids), "windows": self.windows}

    def save_outputs(self, folder: Path, source_path: str | None = None) -> dict[str, Path]:
        """DICOM SEG and SR (TID 1500) for a DICOM series, a NIfTI label map for a NIfTI, and the PDF
        report with three orthogonal slices (engine/volume_outputs.py)."""
        from .volume_outputs import save_volume_outputs

        return save_volume_outputs(self, Path(folder), source_path or self.source)
