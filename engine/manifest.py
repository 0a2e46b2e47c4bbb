"""The bundle manifest: typed, frozen, versioned (see docs/bundle-format.md)."""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .ecg_beats import DETECTOR
from .errors import BundleError

SCHEMA = "medexport.bundle/1"
PRECISIONS = ("fp32", "fp16", "int8")
DTYPES = ("float32", "float16", "int64", "int32", "uint8", "bool")
MAX_MANIFEST_BYTES = 1 << 20  # a real manifest is ~5-20 kB
RESERVED = ("manifest.json", "bundle.sig")  # never listed in ``files``: the manifest and its signature
_SHA256 = re.compile(r"[0-9a-f]{64}")


# -- value checks: every refusal names the field ---------------------------------------------------
def _bad(where: str, value, expected: str):
    raise BundleError(f"manifest.json: {where} is {value!r}", expected=expected,
                      fix="rebuild the bundle with 'medexport build' (a hand-edited or damaged manifest is refused)")


def _text(where: str, value, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value.strip()):
        _bad(where, value, "a string" if empty else "a non-empty string")
    return value


def _int(where: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        _bad(where, value, f"a whole number in {lo}..{hi}")
    return value


def _real(where: str, value, lo: float = -math.inf, hi: float = math.inf, *, above: float | None = None) -> float:
    """A finite number in [lo, hi] (and > ``above`` when given); bools and NaN/inf refused."""
    ok = (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
          and lo <= value <= hi and (above is None or value > above))
    if not ok:
        if above is not None:
            bound = f" > {above:g}"
        elif math.isfinite(lo) and math.isfinite(hi):
            bound = f" in [{lo:g}, {hi:g}]"
        else:
            bound = f" >= {lo:g}" if math.isfinite(lo) else ""
        _bad(where, value, "a finite number" + bound)
    return value


def _reals(where: str, values, n_ok: tuple, **bounds) -> tuple:
    if not isinstance(values, (list, tuple)) or len(values) not in n_ok:
        _bad(where, values, f"a list of {' or '.join(map(str, n_ok))} numbers")
    return tuple(_real(f"{where}[{i}]", v, **bounds) for i, v in enumerate(values))


def relative_path(where: str, value) -> str:
    """A bundle-relative POSIX path that cannot leave the bundle: no absolute, '..', '\\' or empty parts."""
    parts = value.split("/") if isinstance(value, str) else []
    if (not parts or value.startswith("/") or "\\" in value or ":" in value or "\0" in value
            or any(p in ("", ".", "..") for p in parts)):
        _bad(where, value, "a relative path inside the bundle (no '..', no absolute path, '/' separators)")
    return value


def _optional_path(where: str, value) -> str | None:
    return None if value is None else relative_path(where, value)


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
        _text("tensor name", self.name)
        if not isinstance(self.shape, (list, tuple)) or not 1 <= len(self.shape) <= 8:
            _bad(f"{self.name}.shape", self.shape, "a list of 1 to 8 dimensions")
        object.__setattr__(self, "shape", tuple(self.shape))
        for i, d in enumerate(self.shape):
            if d != -1:
                _int(f"{self.name}.shape[{i}]", d, 1, 1 << 20)
        if self.dtype not in DTYPES:
            _bad(f"{self.name}.dtype", self.dtype, f"one of {', '.join(DTYPES)}")


def _normalisation(mean, std, channels: int) -> tuple:
    """(mean, std) per channel or one for all: finite, std > 0."""
    n_ok = (1, channels) if channels > 1 else (1,)
    return _reals("preprocess.mean", mean, n_ok), _reals("preprocess.std", std, n_ok, above=0.0)


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
        if not isinstance(self.size, (list, tuple)) or len(self.size) != 2:
            _bad("preprocess.size", self.size, "[height, width]")
        object.__setattr__(self, "size", tuple(_int(f"preprocess.size[{i}]", v, 8, 4096) for i, v in enumerate(self.size)))
        _int("preprocess.channels", self.channels, 1, 4)
        mean, std = _normalisation(self.mean, self.std, self.channels)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        if self.crop not in ("center_square", "none"):
            raise BundleError(f"preprocess.crop is {self.crop!r}", expected="'center_square' or 'none'")
        if self.resample not in ("box", "bilinear"):
            raise BundleError(f"preprocess.resample is {self.resample!r}", expected="'box' or 'bilinear'")

    def describe(self) -> str:
        return (f"greyscale display [0,1] -> crop {self.crop} -> {self.resample} resize to {self.size[0]}x{self.size[1]} "
                f"-> (x - {list(self.mean)}) / {list(self.std)}")


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
        _int("preprocess.tile", self.tile, 8, 4096)
        _int("preprocess.channels", self.channels, 1, 4)
        mean, std = _normalisation(self.mean, self.std, self.channels)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        if isinstance(self.overlap, bool) or not isinstance(self.overlap, int) or not 0 <= self.overlap < self.tile // 2:
            raise BundleError(f"preprocess.overlap is {self.overlap}", expected=f"0 <= overlap < {self.tile // 2}")

    def describe(self) -> str:
        return (f"greyscale display [0,1] -> tiles {self.tile}x{self.tile} overlapping {self.overlap} px (no resizing) "
                f"-> (x - {list(self.mean)}) / {list(self.std)}; tiles blended back onto the source grid")


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
        _real("preprocess.fs", self.fs, 50.0, 10000.0)
        _text("preprocess.lead", self.lead)
        band = _reals("preprocess.band", self.band, (2,), lo=0.0, hi=self.fs / 2)
        if band[0] >= band[1]:
            _bad("preprocess.band", list(self.band), f"[low, high] Hz with low < high <= {self.fs / 2:g} (Nyquist)")
        window = _reals("preprocess.beat_window", self.beat_window, (2,), lo=-2.0, hi=2.0)
        if not window[0] < 0 < window[1]:
            _bad("preprocess.beat_window", list(self.beat_window), "[before, after] seconds with before < 0 < after")
        object.__setattr__(self, "band", band)
        object.__setattr__(self, "beat_window", window)
        _int("preprocess.beats", self.beats, 1, 4096)
        _int("preprocess.stride", self.stride, 1, self.beats)
        if self.detector != DETECTOR:
            raise BundleError(f"preprocess.detector is {self.detector!r}, which this engine does not ship",
                              expected=f"{DETECTOR!r}", fix="rebuild the bundle with this version: medexport build ...")

    @property
    def beat_samples(self) -> int:
        return int(round(-self.beat_window[0] * self.fs)) + int(round(self.beat_window[1] * self.fs))

    def describe(self) -> str:
        return (f"leads: the best by signal quality (up to 3 pooled; {self.lead} when asked for) -> resample {self.fs:g} Hz -> band-pass {self.band[0]}-{self.band[1]} Hz -> "
                f"R peaks ({self.detector}) -> beats {self.beat_window[0]}..{self.beat_window[1]} s + RR features -> "
                f"windows of {self.beats} beats (stride {self.stride})")


@dataclass(frozen=True)
class DetectionPreprocess:
    """Colour detection: an RGB study letterboxed (aspect kept, padded) or squashed to ``size``."""

    size: tuple  # (height, width) of the model's input
    channels: int = 3
    letterbox: bool = True  # keep the aspect ratio and pad; False: squash to size
    mean: tuple = (0.5, 0.5, 0.5)
    std: tuple = (0.25, 0.25, 0.25)
    kind: str = "detect"

    def __post_init__(self):
        if not isinstance(self.size, (list, tuple)) or len(self.size) != 2:
            _bad("preprocess.size", self.size, "[height, width]")
        object.__setattr__(self, "size", tuple(_int(f"preprocess.size[{i}]", v, 8, 4096) for i, v in enumerate(self.size)))
        if self.channels != 3 or isinstance(self.channels, bool):
            _bad("preprocess.channels", self.channels, "3 (detection reads colour studies)")
        if not isinstance(self.letterbox, bool):
            _bad("preprocess.letterbox", self.letterbox, "true or false")
        mean, std = _normalisation(self.mean, self.std, self.channels)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def describe(self) -> str:
        fit = "letterbox (aspect kept, padded with the mean)" if self.letterbox else "squash"
        return (f"colour RGB [0,1] -> {fit} bilinear to {self.size[0]}x{self.size[1]} "
                f"-> (x - {list(self.mean)}) / {list(self.std)}; boxes mapped back to source pixels")


@dataclass(frozen=True)
class VolumePreprocess:
    """3-D segmentation on the source voxel grid: axes turned to ``orientation`` by the affine, each
    volume z-scored (its own mean and standard deviation), padded to at least ``patch`` (centred,
    0 once normalised) and read in ``patch`` windows overlapping by ``overlap`` (a fraction),
    blended with a Gaussian importance map (sigma = ``sigma_scale`` x patch), as MONAI's
    sliding_window_inference; nothing is resampled."""

    patch: tuple = (48, 64, 48)  # window (array axes after reorientation)
    overlap: float = 0.5
    sigma_scale: float = 0.125
    orientation: str = "RAS"  # nibabel axis codes the arrays are turned to before the model
    normalize: str = "zscore"
    kind: str = "volume"

    def __post_init__(self):
        if not isinstance(self.patch, (list, tuple)) or len(self.patch) != 3:
            _bad("preprocess.patch", self.patch, "[depth, height, width] of the network's window")
        object.__setattr__(self, "patch", tuple(_int(f"preprocess.patch[{i}]", v, 8, 512) for i, v in enumerate(self.patch)))
        object.__setattr__(self, "overlap", _real("preprocess.overlap", self.overlap, 0.0, 0.9))
        object.__setattr__(self, "sigma_scale", _real("preprocess.sigma_scale", self.sigma_scale, 0.01, 1.0))
        code = self.orientation
        if not isinstance(code, str) or len(code) != 3 or sorted(code.translate(str.maketrans("LPI", "RAS"))) != ["A", "R", "S"]:
            _bad("preprocess.orientation", code, "three axis codes, one of L/R, A/P, S/I each (e.g. 'RAS')")
        if self.normalize != "zscore":
            _bad("preprocess.normalize", self.normalize, "'zscore'")

    def describe(self) -> str:
        p = "x".join(str(v) for v in self.patch)
        return (f"volume turned to {self.orientation} axes -> z-score per volume -> padded to at least {p} (0) -> "
                f"{p} windows overlapping {self.overlap:g}, Gaussian blending (sigma {self.sigma_scale:g} x window); "
                "labels mapped back onto the source voxel grid")


@dataclass(frozen=True)
class Postprocess:
    """Scores from outputs; decisions from thresholds on the listed labels."""

    activation: str  # softmax | sigmoid
    thresholds: dict  # label -> operating threshold on its score
    score_output: str = "logits"
    heatmap_output: str | None = None  # class activation maps (N, classes, h, w)
    temperature: float = 1.0  # logits are divided by it before the activation (site calibration)

    def __post_init__(self):
        if self.activation not in ("softmax", "sigmoid"):
            raise BundleError(f"postprocess.activation is {self.activation!r}",
                              expected="'softmax' or 'sigmoid'")
        if not isinstance(self.thresholds, dict):
            _bad("postprocess.thresholds", self.thresholds, "an object: label -> threshold")
        for label, value in self.thresholds.items():
            _real(f"postprocess.thresholds[{label!r}]", value, 0.0, 1.0)
        _text("postprocess.score_output", self.score_output)
        _real("postprocess.temperature", self.temperature, 0.01, 100.0)
        if self.heatmap_output is not None:
            _text("postprocess.heatmap_output", self.heatmap_output)


@dataclass(frozen=True)
class IntendedUse:
    """The studies a bundle is for, as DICOM header values (empty: not restricted). A study whose
    header contradicts one of them gets ``outside_intended_use`` (or is refused in strict mode)."""

    modalities: tuple = ()  # (0008,0060) Modality, e.g. ["CR", "DX"]
    body_parts: tuple = ()  # (0018,0015) Body Part Examined, e.g. ["CHEST"]
    view_positions: tuple = ()  # (0018,5101) View Position, e.g. ["AP"]
    age_years: tuple | None = None  # [min, max] from (0010,1010) Patient's Age, inclusive
    note: str = ""  # what the card says beyond the header (population, site, device)
    # volumes: [[min, max]] mm covered along each of the model's axes (preprocess.orientation), and
    # [min, max] mm of any voxel side; measured on the training volumes, with a margin
    extent_mm: tuple | None = None
    spacing_mm: tuple | None = None

    def __post_init__(self):
        for name in ("modalities", "body_parts", "view_positions"):
            values = getattr(self, name)
            if not isinstance(values, (list, tuple)):
                _bad(f"intended_for.{name}", values, "a list of DICOM code strings")
            object.__setattr__(self, name, tuple(_text(f"intended_for.{name}[]", v).upper() for v in values))
        if self.age_years is not None:
            lo, hi = _reals("intended_for.age_years", self.age_years, (2,), lo=0.0, hi=150.0)
            if lo > hi:
                _bad("intended_for.age_years", list(self.age_years), "[min, max] with min <= max")
            object.__setattr__(self, "age_years", (lo, hi))
        _text("intended_for.note", self.note, empty=True)
        if self.extent_mm is not None:
            if not isinstance(self.extent_mm, (list, tuple)) or len(self.extent_mm) != 3:
                _bad("intended_for.extent_mm", self.extent_mm, "three [min, max] ranges in mm, one per model axis")
            object.__setattr__(self, "extent_mm", tuple(_range_mm(f"intended_for.extent_mm[{i}]", r)
                                                        for i, r in enumerate(self.extent_mm)))
        if self.spacing_mm is not None:
            object.__setattr__(self, "spacing_mm", _range_mm("intended_for.spacing_mm", self.spacing_mm))

    @property
    def restricted(self) -> bool:
        return bool(self.modalities or self.body_parts or self.view_positions or self.age_years is not None
                    or self.extent_mm is not None or self.spacing_mm is not None)

    def describe(self) -> str:
        parts = [f"{label} {', '.join(values)}" for label, values in
                 (("modality", self.modalities), ("body part", self.body_parts), ("view", self.view_positions)) if values]
        if self.age_years is not None:
            parts.append(f"age {self.age_years[0]:g}-{self.age_years[1]:g} years")
        if self.extent_mm is not None:
            parts.append("extent " + " x ".join(f"{lo:g}-{hi:g}" for lo, hi in self.extent_mm) + " mm")
        if self.spacing_mm is not None:
            parts.append(f"voxels of {self.spacing_mm[0]:g}-{self.spacing_mm[1]:g} mm")
        return "; ".join(parts) or "any study (not restricted by header)"


def _range_mm(where: str, values) -> tuple:
    lo, hi = _reals(where, values, (2,), above=0.0)
    if lo > hi:
        _bad(where, list(values), "[min, max] with min <= max")
    return (lo, hi)


@dataclass(frozen=True)
class OodSpec:
    """The out-of-distribution reference: which output holds the features, the fitted reference
    file (engine/ood.py), the threshold on its distance and how it was set and checked."""

    feature_output: str
    file: str
    threshold: float
    method: str = "class-conditional Mahalanobis distance, shared Ledoit-Wolf covariance"
    fitted_on: str = ""
    threshold_rule: str = ""
    report: dict = field(default_factory=dict)  # flag rates: in-distribution, per other kind of study

    def __post_init__(self):
        _text("ood.feature_output", self.feature_output)
        relative_path("ood.file", self.file)
        _real("ood.threshold", self.threshold, 0.0)
        for name in ("method", "fitted_on", "threshold_rule"):
            _text(f"ood.{name}", getattr(self, name), empty=True)
        if not isinstance(self.report, dict):
            _bad("ood.report", self.report, "an object")


@dataclass(frozen=True)
class Artifact:
    """One compiled model for one target and precision."""

    target: str
    precision: str
    files: dict  # role -> relative path, e.g. {"model": "openvino-fp32/model.xml", "weights": ...}
    tolerance: float  # largest |score difference| allowed against the source model
    report: str | None = None  # relative path of its validation report
    options: dict = field(default_factory=dict)
    # half-width of the score band around each threshold where this artifact's decision may differ
    # from the float model's: its tolerance, widened to where validation saw decisions flip
    borderline: float = 0.0
    # a reduced decode this artifact was checked for (engine/io/dicom/pixels.py): sources are decoded
    # at no less than ``decode_margin`` x the model's input where the syntax allows; 0: in full
    decode_margin: int = 0

    def __post_init__(self):
        _text("artifacts[].target", self.target)
        if self.precision not in PRECISIONS:
            _bad(f"artifacts[{self.target}].precision", self.precision, f"one of {', '.join(PRECISIONS)}")
        if not isinstance(self.files, dict) or not self.files:
            _bad(f"artifacts[{self.key}].files", self.files, "an object: role -> relative path")
        for role, rel in self.files.items():
            relative_path(f"artifacts[{self.key}].files[{role!r}]", rel)
        _real(f"artifacts[{self.key}].tolerance", self.tolerance, 0.0, 1.0)
        _optional_path(f"artifacts[{self.key}].report", self.report)
        _real(f"artifacts[{self.key}].borderline", self.borderline, 0.0, 1.0)
        _int(f"artifacts[{self.key}].decode_margin", self.decode_margin, 0, 8)
        if not isinstance(self.options, dict):
            _bad(f"artifacts[{self.key}].options", self.options, "an object")

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
    intended_for: IntendedUse = field(default_factory=IntendedUse)
    medical_device: bool = False
    backend_preference: tuple = ()  # measured fastest first for this model on CPUs; empty: the engine's order
    ood: OodSpec | None = None  # None: the bundle has no out-of-distribution reference
    provenance: dict = field(default_factory=dict)
    schema: str = SCHEMA

    def __post_init__(self):
        for name in ("labels", "outputs", "artifacts", "backend_preference"):
            if not isinstance(getattr(self, name), (list, tuple)):
                _bad(name, getattr(self, name), "a list")
            object.__setattr__(self, name, tuple(getattr(self, name)))
        self._check()

    def _check(self) -> None:
        for name in ("model_id", "model_version", "task"):
            _text(name, getattr(self, name))
        _text("intended_use", self.intended_use, empty=True)
        if not isinstance(self.medical_device, bool):
            _bad("medical_device", self.medical_device, "true or false")
        for i, label in enumerate(self.labels):
            _text(f"labels[{i}]", label)
        if not self.labels or len(set(self.labels)) != len(self.labels):
            _bad("labels", list(self.labels), "a non-empty list of distinct labels")
        unknown = sorted(set(self.postprocess.thresholds) - set(self.labels))
        if unknown:
            _bad("postprocess.thresholds", self.postprocess.thresholds, f"thresholds only on labels {list(self.labels)}")
        if not self.outputs:
            _bad("outputs", [], "at least one output")
        names = [o.name for o in self.outputs]
        for where, name in (("postprocess.score_output", self.postprocess.score_output),
                            ("postprocess.heatmap_output", self.postprocess.heatmap_output)):
            if name is not None and name not in names:
                _bad(where, name, f"one of the outputs {names}")
        if not isinstance(self.files, dict):
            _bad("files", self.files, "an object: relative path -> SHA-256")
        for rel, digest in self.files.items():
            relative_path(f"files[{rel!r}]", rel)
            if rel in RESERVED:
                _bad(f"files[{rel!r}]", rel, f"no entry for {' or '.join(RESERVED)} (they cannot list themselves)")
            if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
                _bad(f"files[{rel!r}]", digest, "a SHA-256 as 64 lowercase hex digits")
        _optional_path("golden", self.golden)
        _optional_path("card", self.card)
        for i, name in enumerate(self.backend_preference):
            _text(f"backend_preference[{i}]", name)
        keys = [a.key for a in self.artifacts]
        if len(set(keys)) != len(keys):
            _bad("artifacts", keys, "each target-precision once")
        if not isinstance(self.provenance, dict):
            _bad("provenance", self.provenance, "an object")
        if self.ood is not None and self.ood.feature_output not in names:
            _bad("ood.feature_output", self.ood.feature_output, f"one of the outputs {names}")

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
        for name in ("outputs", "artifacts"):
            if not isinstance(data.get(name, []), list):
                _bad(name, data[name], "a list")
        data["input"] = _build(TensorSpec, data.get("input"), "input")
        data["outputs"] = [_build(TensorSpec, o, "outputs[]") for o in data.get("outputs", [])]
        pre = data.get("preprocess") or {}
        kind = pre.get("kind", "image") if isinstance(pre, dict) else None
        if isinstance(pre, dict) and kind not in PREPROCESS_KINDS:
            _bad("preprocess.kind", kind, f"one of {', '.join(PREPROCESS_KINDS)}")
        data["preprocess"] = _build(PREPROCESS_KINDS.get(kind, ImagePreprocess), pre, "preprocess")
        data["postprocess"] = _build(Postprocess, data.get("postprocess"), "postprocess")
        if data.get("ood") is not None:
            data["ood"] = _build(OodSpec, data["ood"], "ood")
        if "intended_for" in data:
            data["intended_for"] = _build(IntendedUse, data["intended_for"], "intended_for")
        data["artifacts"] = [_build(Artifact, a, "artifacts[]") for a in data.get("artifacts", [])]
        return _build(cls, data, "the top level")

    @classmethod
    def from_json(cls, text: str | bytes) -> "Manifest":
        """Parse manifest.json: UTF-8, at most 1 MB, no duplicate keys, no deep nesting."""
        if len(text) > MAX_MANIFEST_BYTES:
            raise BundleError(f"manifest.json is {len(text)} bytes", expected=f"at most {MAX_MANIFEST_BYTES} bytes",
                              fix="rebuild the bundle")
        try:
            if isinstance(text, bytes):
                text = text.decode("utf-8")
            data = json.loads(text, object_pairs_hook=_no_duplicates)
        except UnicodeDecodeError as exc:
            raise BundleError(f"manifest.json is not UTF-8 text ({exc.reason} at byte {exc.start})",
                              fix="rebuild the bundle") from None
        except json.JSONDecodeError as exc:
            raise BundleError(f"manifest.json is not valid JSON ({exc})", fix="rebuild the bundle") from None
        except RecursionError:
            raise BundleError("manifest.json is nested too deeply to be a manifest", fix="rebuild the bundle") from None
        return cls.from_dict(data)


def _no_duplicates(pairs: list) -> dict:
    """JSON objects with a key twice are refused (json keeps the last one silently)."""
    counts = Counter(k for k, _ in pairs)
    dup = sorted(k for k, n in counts.items() if n > 1)
    if dup:
        raise BundleError(f"manifest.json: key(s) {dup} appear twice in one object", fix="rebuild the bundle")
    return dict(pairs)


PREPROCESS_KINDS: dict[str, Any] = {"image": ImagePreprocess, "ecg": EcgPreprocess, "tiles": TilePreprocess,
                                    "detect": DetectionPreprocess, "volume": VolumePreprocess}
