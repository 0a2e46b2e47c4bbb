"""Warnings a result carries: a stable ``code`` a program tests, and a ``message`` a person reads.

Every consumer (CLI, viewer banner, PDF, SR, batch CSV) shows them; none is ever dropped. The
codes are a fixed vocabulary so that a clinic's scripts and the audit log can count them.
"""
from __future__ import annotations

from dataclasses import dataclass

# code -> what it means, in one line (shown by `medexport inspect` and the README)
CODES = {
    "outside_intended_use": "the study's header contradicts what the bundle is for (modality, body part, view, age), "
                            "or a volume's extent or voxel size is outside the bundle's stated range",
    "no_intended_use_check": "a picture without a DICOM header: intended use could not be checked",
    "out_of_distribution": "the model's own features are unlike anything in its training data",
    "no_ood_reference": "the bundle has no out-of-distribution reference: unusual inputs are not flagged",
    "low_signal_quality": "an ECG lead is flat, clipped, noisy or has too few beats",
    "borderline": "the score lies within the band where quantization or a small change flips the decision",
    "no_pixel_spacing": "no pixel size known: measurements stay in pixels",
    "no_measurement": "no outline could be measured on this image",
    "outside_formula_range": "a measurement lies outside the range its formula is valid for",
    "header_corrected": "a source header value was malformed or absent: corrected or left empty in the result objects",
    "answered_at_fp32": "a quantized artifact's screening flagged the study, so the bundle's fp32 artifact answered it",
}

# the flags under which a model does not vouch for its answer: every headline says "Not assessed: ..."
# (the scores stay visible below it), and the SR qualifies the finding
NOT_ASSESSED = {"outside_intended_use": "outside the model's intended use",
                "out_of_distribution": "unlike the model's training data"}


@dataclass(frozen=True)
class ResultWarning:
    """One warning on one result."""

    code: str
    message: str

    def __post_init__(self):
        if self.code not in CODES:
            raise ValueError(f"unknown warning code {self.code!r}; known: {', '.join(CODES)}")

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message}

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


def join_warnings(warnings) -> str:
    """One text cell for a CSV row: 'code: message; code: message'."""
    return "; ".join(f"{w.code}: {w.message}" for w in warnings)
