"""Site calibration: re-fit a classifier's temperature and operating threshold on a clinic's own
labelled studies, and write a new bundle version that records where it came from.

Runs in the clinic app (numpy + the engine's backends; no torch, no scipy). The studies go
through the bundle's own reading and preprocessing and its ``auto`` artifact; the temperature is
fitted by minimising the negative log-likelihood of the labels on the logits, then the threshold
for the stated goal on the temperature-scaled scores. The new bundle keeps every artifact, the
card and the build reports byte-identical; the manifest gains ``postprocess.temperature``, the new
threshold, a version with a local ``+site.<data hash>`` suffix and ``provenance.calibration``
(parent bundle SHA-256, data hash and size, goal, before/after metrics with 95 % CIs);
``golden.npz`` keeps its inputs and has its reference scores re-expressed at the new temperature
so that the self-test still compares each artifact with the float source model.
"""
from __future__ import annotations

import hashlib
import math
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from . import bundle_write
from .checksums import sha256_file
from .compare import activate, binary_metrics, bootstrap_ci, chance_problem
from .errors import ConfigurationError, MedError, ValidationError
from .labelled import folder_studies, study_labels
from .manifest import Manifest
from .tasks.base import ImageOptions
from .tasks.classification import ClassificationTask

MIN_PER_CLASS = 20  # below this a threshold moves by whole cases and its CI spans most of [0, 1]
TEMPERATURE_RANGE = (0.05, 20.0)
CHUNK = 8
REPORT = "reports/calibration.json"


@dataclass(frozen=True)
class Goal:
    """What the threshold is chosen for: a sensitivity to reach on the site's *new* positives, with
    a stated confidence, or Youden's J (sens + spec - 1)."""

    target_sensitivity: float | None = None  # None: Youden
    confidence: float = 0.8  # probability that new positives are found at the target rate (or better)

    def __post_init__(self):
        t, c = self.target_sensitivity, self.confidence
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.5 <= t < 1.0):
            raise ConfigurationError(f"target sensitivity is {t!r}", expected="a number in [0.5, 1), e.g. 0.95",
                                     fix="--target-sensitivity 0.95, or --youden")
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not 0.0 <= c < 1.0:
            raise ConfigurationError(f"confidence is {c!r}", expected="a number in [0, 1), e.g. 0.8",
                                     fix="--confidence 0.8 (0.5: the target on average)")

    def describe(self) -> str:
        if self.target_sensitivity is None:
            return "Youden's J (largest sensitivity + specificity - 1)"
        return (f"sensitivity >= {self.target_sensitivity:g} on new positives with {self.confidence:.0%} confidence, "
                "then the highest specificity")

    def to_dict(self) -> dict:
        return {"kind": "youden" if self.target_sensitivity is None else "target_sensitivity",
                "target_sensitivity": self.target_sensitivity, "confidence": self.confidence}


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(Binomial(n, p) <= k)."""
    return float(sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k + 1)))


def sensitivity_confidence(found: int, n_positive: int, target: float) -> float:
    """Probability that a threshold at the ``found``-th highest of ``n_positive`` positive scores
    finds at least ``target`` of new positives from the same site. Distribution-free: the share of
    positives above the k-th highest of n is Beta(k, n - k + 1), i.e. P = P(Binomial(n, target) <= k - 1)."""
    return binom_cdf(found - 1, n_positive, target) if found > 0 else 0.0


@dataclass(frozen=True)
class SiteData:
    """A site's labelled studies: files, whether each is positive for the finding, and identity."""

    folder: Path
    files: tuple
    classes: np.ndarray  # label index per study
    positive: np.ndarray  # bool per study: the thresholded finding is present
    sha256: str  # over every study's relative path and SHA-256, and the label file
    n_bytes: int
    negative_name: str  # the other label of a two-label model, else "not <finding>"
    label_source: str = "labels.csv"  # the label file's name, or "sub-folders"
    notes: tuple = ()  # what the reader left out (label rows without a study)

    def counts(self, label: str) -> dict:
        return {label: int(self.positive.sum()), self.negative_name: int((~self.positive).sum())}


@dataclass(frozen=True)
class Calibration:
    """What ``calibrate`` measured and chose (nothing written yet)."""

    label: str
    goal: Goal
    temperature: float
    threshold: float
    parent: dict  # model_id, model_version, sha256, temperature, threshold, artifact
    data: dict  # folder name, sha256, studies, bytes, per class
    before: dict  # metrics of the parent's postprocess on the site data
    after: dict
    confidence_reached: float | None = None  # sensitivity goal: P(new positives found at the target rate)
    notes: tuple = ()  # warnings about the data (label rows without a study)

    def to_dict(self) -> dict:
        return {"label": self.label, "goal": self.goal.to_dict(), "temperature": self.temperature,
                "threshold": self.threshold, "confidence_reached": self.confidence_reached,
                "parent": self.parent, "data": self.data, "notes": list(self.notes),
                "metrics_on": "the calibration studies themselves (in-sample: the 'after' figures are optimistic)",
                "before": self.before, "after": self.after}

    def summary_lines(self) -> list[str]:
        lines = [f"{self.data['studies']} studies ({', '.join(f'{k}: {v}' for k, v in self.data['per_class'].items())}), "
                 f"data sha256 {self.data['sha256'][:16]}",
                 f"goal: {self.goal.describe()}",
                 f"temperature {self.parent['temperature']:g} -> {self.temperature:.3f}; "
                 f"threshold on '{self.label}' {self.parent['threshold']:.4f} -> {self.threshold:.4f}",
                 "metric         before                    after   (on these studies, 95 % CI)"]
        if self.confidence_reached is not None and self.confidence_reached < self.goal.confidence:
            lines.insert(2, f"WARNING: with {self.data['per_class'][self.label]} '{self.label}' studies the goal is "
                            f"reached with {self.confidence_reached:.0%} confidence only (asked {self.goal.confidence:.0%}): "
                            f"every positive is kept above the threshold; add positive studies")
        lines[2:2] = [f"WARNING: {note}" for note in self.notes]
        for name in ("sensitivity", "specificity", "accuracy", "auroc", "nll", "ece"):
            b, a = self.before[name], self.after[name]
            lines.append(f"{name:<12} {_fmt(b):<25} {_fmt(a)}")
        return lines


def _fmt(m: dict) -> str:
    return f"{m['value']:.3f} [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]"


# -- the data ----------------------------------------------------------------------------------
def read_site_data(folder, manifest: Manifest, label: str) -> SiteData:
    """Studies of ``folder`` with their labels (``labels.csv``: ``file,label``, or one sub-folder
    per label), hashed."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigurationError(f"calibration data {folder} is not a folder",
                                 expected="a folder of studies with labels.csv (file,label) or one sub-folder per label")
    files = folder_studies(folder)
    labels = study_labels(folder, files, manifest.labels)
    if labels is None:
        raise ConfigurationError(f"{folder} has no labels.csv and no sub-folder named after a label",
                                 expected="a 'file,label' row for every study, or one sub-folder per label "
                                          f"named {list(manifest.labels)} (any case)",
                                 fix=f"add labels.csv with labels from {list(manifest.labels)}")
    classes = np.array([labels.table[f] for f in files], np.int64)
    digest, n_bytes = hashlib.sha256(), 0
    for f in files:  # relative paths: with sub-folder labels they hold the labels
        digest.update(f"{f.relative_to(folder).as_posix()}\0{sha256_file(f)}\n".encode())
        n_bytes += f.stat().st_size
    if labels.source.is_file():
        digest.update(f"{labels.source.name}\0{sha256_file(labels.source)}\n".encode())
    others = [x for x in manifest.labels if x != label]
    return SiteData(folder, tuple(files), classes, classes == manifest.labels.index(label), digest.hexdigest(), n_bytes,
                    others[0] if len(others) == 1 else f"not {label}",
                    labels.source.name if labels.source.is_file() else "sub-folders", tuple(labels.notes()))


def check_counts(data: SiteData, label: str, minimum: int = MIN_PER_CLASS) -> None:
    """Refuse too few cases of either class, saying how many more of which are needed."""
    short = {name: minimum - n for name, n in data.counts(label).items() if n < minimum}
    if short:
        found = ", ".join(f"{n} {name}" for name, n in data.counts(label).items())
        more = " and ".join(f"{k} more '{name}' studies" for name, k in short.items())
        raise ConfigurationError(f"{data.folder} holds {found}: too few to calibrate on",
                                 expected=f"at least {minimum} studies of each class",
                                 fix=f"add {more} with their labels.csv rows")


def site_logits(model, data: SiteData, progress=None) -> np.ndarray:
    """(N, classes) raw logits of the site studies through the model's own reading,
    preprocessing and runtime. ``progress(i, n)`` is called after each chunk (it may raise to stop)."""
    task, options, name = model.task, ImageOptions(), model.manifest.postprocess.score_output
    out, batch = [], []
    for i, f in enumerate(data.files, 1):
        try:
            feeds, _ = task.preprocess(task.read(f, options), options)
        except MedError as exc:
            raise ConfigurationError(f"calibration study {f} cannot be used: {exc}",
                                     fix="remove it (and its labels.csv row) from the folder") from None
        batch.append(feeds[task.input_name])
        if len(batch) == CHUNK or i == len(data.files):
            out.append(model.infer(np.concatenate(batch))[name].astype(np.float64))
            batch = []
            if progress is not None:
                progress(i, len(data.files))
    return np.concatenate(out)


# -- fitting -----------------------------------------------------------------------------------
def nll(logits: np.ndarray, classes: np.ndarray, column: int, activation: str, temperature: float) -> np.ndarray:
    """Per-study negative log-likelihood of the labels at ``temperature``."""
    z = np.asarray(logits, np.float64) / temperature
    if activation == "softmax":
        z = z - z.max(axis=1, keepdims=True)
        return np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(z)), classes]
    y, x = (classes == column).astype(np.float64), z[:, column]
    return np.logaddexp(0.0, x) - y * x  # binary cross-entropy of the finding's logit


def fit_temperature(logits: np.ndarray, classes: np.ndarray, column: int, activation: str) -> float:
    """The temperature minimising the mean NLL: golden-section search on log T (the NLL is convex
    in 1/T, so unimodal in log T), within TEMPERATURE_RANGE."""
    f = lambda log_t: float(nll(logits, classes, column, activation, math.exp(log_t)).mean())  # noqa: E731
    lo, hi = (math.log(t) for t in TEMPERATURE_RANGE)
    r = (math.sqrt(5) - 1) / 2
    a, b = hi - r * (hi - lo), lo + r * (hi - lo)
    fa, fb = f(a), f(b)
    for _ in range(80):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - r * (hi - lo)
            fa = f(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + r * (hi - lo)
            fb = f(b)
    return math.exp((lo + hi) / 2)


def fit_threshold(scores: np.ndarray, positive: np.ndarray, goal: Goal) -> float:
    """Threshold on the finding's scores (decision: score >= threshold) for ``goal``, placed
    midway between the deciding score and the next lower one. A sensitivity goal keeps the
    fewest positives above it that reach the target with the goal's confidence (all of them when
    the data are too few for that confidence: ``sensitivity_confidence`` says what was reached)."""
    scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
    if goal.target_sensitivity is not None:
        pos = np.sort(scores[positive])[::-1]
        n, target = len(pos), goal.target_sensitivity
        k = max(math.ceil(target * n - 1e-9), 1)
        while k < n and sensitivity_confidence(k, n, target) < goal.confidence:
            k += 1
        top = pos[k - 1]  # the k-th highest positive score: at or above it, k positives are found
        below = scores[scores < top]
        return float((top + below.max()) / 2) if len(below) else float(top)
    values = np.unique(scores)
    cuts = np.concatenate([[values[0]], (values[1:] + values[:-1]) / 2])  # each cut keeps values >= it
    sens = np.array([(scores[positive] >= c).mean() for c in cuts])
    spec = np.array([(scores[~positive] < c).mean() for c in cuts])
    return float(cuts[int(np.argmax(sens + spec - 1))])


def ece(positive: np.ndarray, scores: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of the finding's score (equal-width bins)."""
    idx = np.minimum((np.asarray(scores) * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        inside = idx == b
        if inside.any():
            total += inside.mean() * abs(np.asarray(positive)[inside].mean() - np.asarray(scores)[inside].mean())
    return float(total)


def site_metrics(logits, classes, column, activation, temperature, threshold, n_boot: int = 1000) -> dict:
    """Sensitivity, specificity, accuracy (Wilson 95 % CIs), AUROC at ``threshold`` plus NLL and ECE
    (percentile-bootstrap 95 % CIs over studies)."""
    scores = activate(logits, activation, temperature)[:, column]
    positive = classes == column
    out = binary_metrics(positive, scores, threshold, n_boot=n_boot)
    per_nll = nll(logits, classes, column, activation, temperature)
    for name, fn, arrays in (("nll", np.mean, (per_nll,)), ("ece", ece, (positive, scores))):
        lo, hi = bootstrap_ci(lambda *a: float(fn(*a)), *arrays, n=n_boot)
        out[name] = {"value": round(float(fn(*arrays)), 4), "ci95": [round(lo, 4), round(hi, 4)]}
    return out


# -- the whole step --------------------------------------------------------------------------
def finding(manifest: Manifest, task) -> tuple[str, int]:
    """The one thresholded finding of a classification bundle (refuses other tasks)."""
    if not isinstance(task, ClassificationTask):
        raise ConfigurationError(f"{manifest.model_id} is a {manifest.task} model; site calibration re-fits the "
                                 "threshold and temperature of an image classifier's finding",
                                 expected="a classification bundle with one thresholded finding",
                                 fix="calibrate a classification bundle (e.g. pneumonia-cxr)")
    if len(manifest.postprocess.thresholds) != 1:
        raise ConfigurationError(f"{manifest.model_id} has thresholds on {sorted(manifest.postprocess.thresholds)}",
                                 expected="exactly one thresholded finding", fix="calibrate a single-finding classifier")
    label = next(iter(manifest.postprocess.thresholds))
    return label, manifest.labels.index(label)


def calibrate(model, data_folder, goal: Goal, *, progress=None, minimum: int = MIN_PER_CLASS,
              n_boot: int = 1000) -> Calibration:
    """Measure and fit on an opened ``model`` (``open_bundle``); writes nothing."""
    manifest, post = model.manifest, model.manifest.postprocess
    label, column = finding(manifest, model.task)
    data = read_site_data(data_folder, manifest, label)
    check_counts(data, label, minimum)
    logits = site_logits(model, data, progress)
    before = site_metrics(logits, data.classes, column, post.activation, post.temperature, post.thresholds[label], n_boot)
    problem = chance_problem(before, label)
    if problem:  # temperature and threshold cannot fix ranking; swapped or wrong labels are likelier
        raise ConfigurationError(f"{data.folder}: {problem} (before any calibration)",
                                 expected="a model that separates this site's classes: AUROC 95 % CI above 0.5",
                                 fix="check the labels (swapped or shifted rows?) and that the studies are the kind "
                                     "the model was made for; a model that cannot rank them needs retraining, "
                                     "not calibration")
    temperature = fit_temperature(logits, data.classes, column, post.activation)
    scores = activate(logits, post.activation, temperature)[:, column]
    threshold = fit_threshold(scores, data.positive, goal)
    found = int((scores[data.positive] >= threshold).sum())
    reached = sensitivity_confidence(found, int(data.positive.sum()), goal.target_sensitivity or 0.5)
    parent = {"model_id": manifest.model_id, "model_version": manifest.model_version, "sha256": model.sha256,
              "temperature": post.temperature, "threshold": post.thresholds[label], "artifact": model.artifact.key,
              "backend": model.backend}
    info = {"folder": data.folder.name, "sha256": data.sha256, "studies": len(data.files), "bytes": data.n_bytes,
            "per_class": data.counts(label), "labels": data.label_source}
    after = site_metrics(logits, data.classes, column, post.activation, temperature, threshold, n_boot)
    return Calibration(label, goal, round(temperature, 6), threshold, parent, info, before, after,
                       None if goal.target_sensitivity is None else round(reached, 4), data.notes)


def rescale_scores(scores: np.ndarray, activation: str, ratio: float) -> np.ndarray:
    """Scores at temperature T0 re-expressed at T1 (``ratio`` = T0 / T1) without the logits:
    softmax p_i^r / sum_j p_j^r, sigmoid p^r / (p^r + (1 - p)^r); exact limits at 0 and 1."""
    p = np.asarray(scores, np.float64)
    if activation == "softmax":
        q = p ** ratio
        return q / q.sum(axis=-1, keepdims=True)
    return p ** ratio / (p ** ratio + (1 - p) ** ratio)


def calibrated_version(version: str, data_sha256: str) -> str:
    return f"{version.split('+', 1)[0]}+site.{data_sha256[:8]}"


def write_calibrated(parent_path, calibration: Calibration, out, *, sign_key=None, overwrite: bool = False) -> Path:
    """Write the calibrated bundle at ``out`` (a folder or .zip): the parent's files, re-checksummed
    manifest, self-tested through the engine before it is put in place; signed only with ``sign_key``."""
    from .bundle_read import read_manifest
    from .open import self_test_bundle
    from .signing import sign_bundle, signing_key

    if sign_key:
        signing_key(sign_key)  # a wrong key fails before anything is written
    manifest, sha, root = read_manifest(parent_path)
    if sha != calibration.parent["sha256"]:
        raise ConfigurationError(f"{parent_path} changed since it was measured (sha256 {sha[:12]}...)",
                                 fix="run the calibration again")
    out = Path(out)
    stage = bundle_write.staging_dir(out, overwrite)
    try:
        for rel in manifest.files:
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / rel, stage / rel)
        if manifest.golden:
            _rescale_golden(stage / manifest.golden, manifest.postprocess.activation,
                            manifest.postprocess.temperature / calibration.temperature)
        bundle_write.write_json(stage / REPORT, calibration.to_dict())
        record = calibration.to_dict() | {"report": REPORT}
        if "calibration" in manifest.provenance:
            record["parent_calibration"] = manifest.provenance["calibration"]
        post = replace(manifest.postprocess, temperature=calibration.temperature,
                       thresholds={calibration.label: calibration.threshold})
        draft = replace(manifest, model_version=calibrated_version(manifest.model_version, calibration.data["sha256"]),
                        postprocess=post, provenance=manifest.provenance | {"calibration": record})
        new = replace(draft, files=bundle_write.checksums(stage))
        bundle_write.write_manifest(stage, new.to_json())
        for check in self_test_bundle(stage, trust=[]):
            if not check.passed and not check.skipped:
                raise ValidationError(f"the calibrated bundle failed its own self-test: {check.line()}")
        if sign_key:
            sign_bundle(stage, sign_key)
        return bundle_write.finish(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _rescale_golden(path: Path, activation: str, ratio: float) -> None:
    """Golden inputs kept; every stored score array re-expressed at the new temperature."""
    with np.load(path) as golden:
        arrays = {k: rescale_scores(v, activation, ratio).astype(v.dtype) if k.startswith("scores_") else v
                  for k, v in golden.items()}
    np.savez_compressed(path, **arrays)


__all__ = ["Calibration", "Goal", "MIN_PER_CLASS", "SiteData", "calibrate", "check_counts", "fit_temperature",
           "fit_threshold", "read_site_data", "rescale_scores", "site_logits", "site_metrics", "write_calibrated"]
