"""The bundle manifest: typed, frozen, versioned (see docs/bundle-format.md)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .ecg_beats import DETECTOR
from .errors import BundleError

SCHEMA = "medexport.bundle/1"
PRECISIONS = ("fp32", "fp16", "int8")


def _build(cls, data: dict, where: str):
    """Make dataclass ``cls`` from ``data``, naming unknown or missing keys."""
    if not isinstance(data, dict):
        raise BundleError(f"manifest.json: {where} is {type(data).__name__}", expected="an object")
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise BundleError(f"manifest.json: unknown key(s) {sorted(unknown)} in {where}",
                          expected=f"only {sorted(names)}",
                          fix="rebuild the bundle with this medexport version")
    try:
        return cls(**data)
    except TypeError as exc:
        raise BundleError(f"manifest.json: {where} is incomplete ({exc})",
                          fix="rebuild the bundle") from None


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple  # -1 marks a free (batch) dimension
    dtype: str = "float32"

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(self.shape))


@dataclass(frozen=True)
class ImagePreprocess:
    """How a 2-D greyscale study becomes the model's input tensor, exactly as trained."""

    size: tuple  # (height, width)
    channels: int = 1
    crop: str = "center_square"  # or "none" (squash to size)
    resample: str = "box"  # box | bilinear
    mean: tuple = (0.0,)
    std: tuple = (1.0,)
    kind: str = "image"

    def __post_init__(self):
        for name in ("size", "mean", "std"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.crop not in ("center_square", "none"):
            raise BundleError(f"preprocess.crop is {self.crop!r}", expected="'center_square' or 'none'")
        if self.resample not in ("box", "bilinear"):
            raise BundleError(f"preprocess.resample is {self.resample!r}", expected="'box' or 'bilinear'")


@dataclass(frozen=True)
class TilePreprocess:
    """Segmentation at native resolution: overlapping square tiles, blended back (no resizing)."""

    tile: int = 256
    overlap: int = 32
    channels: int = 1
    mean: tuple = (0.5,)
    std: tuple = (0.25,)
    kind: str = "tiles"

    def __post_init__(self):
        for name in ("mean", "std"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not 0 <= self.overlap < self.tile // 2:
            raise BundleError(f"preprocess.overlap is {self.overlap}", expected=f"0 <= overlap < {self.tile // 2}")


@dataclass(frozen=True)
class EcgPreprocess:
    """How an ECG becomes windows of beat tokens (see engine/ecg_beats.py)."""

    fs: float = 250.0  # model's sampling rate; records are resampled to it
    lead: str = "II"  # default lead for multi-lead records
    band: tuple = (0.5, 40.0)  # band-pass in Hz
    beat_window: tuple = (-0.24, 0.40)  # seconds around each R peak
    beats: int = 32  # beats per window
    stride: int = 16  # window stride in beats
    detector: str = DETECTOR
    kind: str = "ecg"

    def __post_init__(self):
        for name in ("band", "beat_window"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.detector != DETECTOR:
            raise BundleError(f"preprocess.detector is {self.detector!r}, which this engine does not ship",
                              expected=f"{DETECTOR!r}", fix="rebuild the bundle with this version: medexport build ...")

    @property
    def beat_samples(self) -> int:
        return int(round(-self.beat_window[0] * self.fs)) + int(round(self.beat_window[1] * self.fs))


@dataclass(frozen=True)
class Postprocess:
    """Scores from outputs; decisions from thresholds on the listed labels."""

    activation: str  # softmax | sigmoid
    thresholds: dict  # label -> operating threshold on its score
    score_output: str = "logits"
    heatmap_output: str | None = None  # class activation maps (N, classes, h, w)

    def __post_init__(self):
        if self.activation not in ("softmax", "sigmoid"):
            raise BundleError(f"postprocess.activation is {self.activation!r}",
                              expected="'softmax' or 'sigmoid'")


@dataclass(frozen=True)
class Artifact:
    """One compiled model for one target and precision."""

    target: str
    precision: str
    files: dict  # role -> relative path, e.g. {"model": "openvino-fp32/model.xml", "weights": ...}
    tolerance: float  # largest |score difference| allowed against the source model
    report: str | None = None  # relative path of its validation report
    options: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.target}-{self.precision}"


@dataclass(frozen=True)
class Manifest:
    model_id: str
    model_version: str
    task: str
    labels: tuple
    input: TensorSpec
    outputs: tuple
    preprocess: ImagePreprocess | EcgPreprocess | TilePreprocess
    postprocess: Postprocess
    artifacts: tuple
    files: dict  # relative path -> sha256 of every file in the bundle but manifest.json
    golden: str | None = None
    card: str | None = None
    intended_use: str = ""
    medical_device: bool = False
    backend_preference: tuple = ()  # measured fastest first for this model on CPUs; empty: the engine's order
    provenance: dict = field(default_factory=dict)
    schema: str = SCHEMA

    def __post_init__(self):
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "artifacts", tuple(self.artifacts))
        object.__setattr__(self, "backend_preference", tuple(self.backend_preference))

    def artifact(self, target: str, precision: str) -> Artifact | None:
        return next((a for a in self.artifacts
                     if a.target == target and a.precision == precision), None)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict) -> "Manifest":
        schema = data.get("schema") if isinstance(data, dict) else None
        if schema != SCHEMA:
            raise BundleError(f"manifest.json has schema {schema!r}", expected=repr(SCHEMA),
                              fix="rebuild the bundle with this medexport version, or upgrade medexport")
        data = dict(data)
        data["input"] = _build(TensorSpec, data.get("input"), "input")
        data["outputs"] = [_build(TensorSpec, o, "outputs[]") for o in data.get("outputs", [])]
        pre = data.get("preprocess") or {}
        data["preprocess"] = _build(PREPROCESS_KINDS.get(pre.get("kind"), ImagePreprocess), pre, "preprocess")
        data["postprocess"] = _build(Postprocess, data.get("postprocess"), "postprocess")
        data["artifacts"] = [_build(Artifact, a, "artifacts[]") for a in data.get("artifacts", [])]
        return _build(cls, data, "the top level")

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BundleError(f"manifest.json is not valid JSON ({exc})", fix="rebuild the bundle") from None
        return cls.from_dict(data)


PREPROCESS_KINDS: dict[str, Any] = {"image": ImagePreprocess, "ecg": EcgPreprocess, "tiles": TilePreprocess}
