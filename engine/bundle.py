"""Open a bundle: verify every checksum, choose a backend, run studies through it."""
from __future__ import annotations

import hashlib
import os
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .backends import choose_artifact
from .backends.base import default_cache_dir
from .checksums import sha256_file
from .compare import max_abs_diff
from .errors import BundleError, ConfigurationError, InvalidInputError
from .manifest import Manifest
from .results import Provenance
from .tasks import task_for

MANIFEST = "manifest.json"


def read_manifest(path, *, verify: bool = True) -> tuple[Manifest, str, Path]:
    """Return (manifest, bundle sha256, bundle dir) after checking every file's SHA-256.

    The bundle's identity is the SHA-256 of its manifest, which lists every other file's hash.
    """
    root = _bundle_dir(Path(path))
    raw = (root / MANIFEST).read_bytes()
    manifest = Manifest.from_json(raw.decode("utf-8"))
    referenced = [p for a in manifest.artifacts for p in a.files.values()]
    referenced += [p for p in (manifest.golden, manifest.card) if p]
    referenced += [a.report for a in manifest.artifacts if a.report]
    unlisted = sorted(set(referenced) - set(manifest.files))
    if unlisted:
        raise BundleError(f"{root}: manifest references files without a checksum: {unlisted}",
                          fix="rebuild the bundle")
    if verify:
        for rel, expected in manifest.files.items():
            file = root / rel
            if not file.is_file():
                raise BundleError(f"{root}: file {rel} listed in the manifest is missing",
                                  fix="copy the whole bundle folder again")
            actual = sha256_file(file)
            if actual != expected:
                raise BundleError(f"{root}: {rel} has SHA-256 {actual[:12]}..., the manifest says {expected[:12]}...",
                                  expected="an unmodified bundle",
                                  fix="the file was changed or corrupted: copy the bundle again or rebuild it")
    return manifest, hashlib.sha256(raw).hexdigest(), root


def _bundle_dir(path: Path) -> Path:
    if path.is_dir():
        if not (path / MANIFEST).is_file():
            raise BundleError(f"{path} has no {MANIFEST}", expected="a bundle folder written by 'medexport build'",
                              fix="point to the bundle folder itself")
        return path
    if path.is_file() and zipfile.is_zipfile(path):
        return _unpack_zip(path)
    raise BundleError(f"bundle {path} does not exist", expected="a bundle folder or .zip",
                      fix="build one with 'medexport build' or check the path")


def _unpack_zip(path: Path) -> Path:
    """Unpack a zipped bundle once into the cache (keyed by the zip's hash); never in place."""
    target = Path(default_cache_dir()) / "bundles" / sha256_file(path)[:16]
    if not (target / MANIFEST).is_file():
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if name.startswith("/") or ".." in Path(name).parts:
                    raise BundleError(f"{path}: unsafe path {name!r} in zip", fix="rebuild the bundle")
            zf.extractall(tmp)
        inner = [p for p in tmp.iterdir()]
        src = inner[0] if len(inner) == 1 and inner[0].is_dir() else tmp
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, target)
    return target


@dataclass(frozen=True)
class SelfTest:
    """Golden inputs run on this machine against the float source model's scores stored at build
    time (not against the artifact's own earlier outputs: that would hide a bad artifact)."""

    model_id: str
    backend: str
    precision: str
    max_disagreement: float  # the task's measure against the source model, worst golden input
    tolerance: float  # the artifact's stated tolerance for that measure
    measure: str
    worst_item: str
    n: int
    ms_per_item: float
    drift: float | None = None  # largest |score difference| against this artifact's build-time outputs

    @property
    def passed(self) -> bool:
        return self.max_disagreement <= self.tolerance

    def line(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        drift = "" if self.drift is None else f", drift from build time {self.drift:.1e}"
        return (f"{verdict} {self.model_id} [{self.backend} {self.precision}] {self.n} golden inputs vs the source "
                f"model: {self.measure} {self.max_disagreement:.2e} (tolerance {self.tolerance:.0e}, worst "
                f"{self.worst_item}){drift}, {self.ms_per_item:.2f} ms/item")


def in_chunks(run, inputs: np.ndarray, fixed_batch: int = -1, chunk: int = 32) -> dict[str, np.ndarray]:
    """Run ``run(array) -> {name: array}`` over ``inputs`` in chunks (of the model's fixed batch, if any)."""
    size = fixed_batch if fixed_batch > 0 else chunk
    parts = [run(inputs[i:i + size]) for i in range(0, len(inputs), size)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


class Model:
    """An opened bundle bound to one backend and artifact. Use as a context manager."""

    def __init__(self, path, backend: str = "auto", precision: str = "auto", *,
                 threads: int | None = None, verify: bool = True, **backend_options):
        self.manifest, self.sha256, self.path = read_manifest(path, verify=verify)
        cls, self.artifact = choose_artifact(self.manifest, backend, precision)
        files = {role: self.path / rel for role, rel in self.artifact.files.items()}
        self.runtime = cls(files, precision=self.artifact.precision, threads=threads, **backend_options)
        self.task = task_for(self.manifest)
        self.runtime.load()
        self.provenance = Provenance(self.manifest.model_id, self.manifest.model_version, self.sha256,
                                     cls.name, self.artifact.precision, self.runtime.device,
                                     self.manifest.medical_device)

    backend = property(lambda self: self.provenance.backend)
    precision = property(lambda self: self.provenance.precision)

    def predict(self, source, **options):
        """Run one study end to end and return its result.

        Images: a path (DICOM, PNG, JPEG) or a 2-D array; ``frame=`` for multi-frame DICOM;
        ``explain=True`` computes an occlusion map when the graph has no CAM output (slower).
        ECGs: a path (DICOM waveform, WFDB, aECG, CSV) or an array with ``fs=``; ``lead=`` to choose.
        """
        options = {k: v for k, v in options.items() if v is not None and v is not False}  # frame=0 counts
        unknown = sorted(set(options) - set(self.task.predict_options))
        if unknown:
            raise ConfigurationError(f"option(s) {', '.join(unknown)} do not apply to a {self.manifest.task} bundle",
                                     expected=f"only {', '.join(self.task.predict_options) or 'none'}",
                                     fix=f"drop {', '.join(unknown)}")
        t0 = time.perf_counter()
        study = self.task.read(source, **options)
        t1 = time.perf_counter()
        feeds, meta = self.task.preprocess(study, **({"lead": options["lead"]} if "lead" in options else {}))
        t2 = time.perf_counter()
        outputs = self.runtime.infer(feeds)
        t3 = time.perf_counter()
        fields = self.task.postprocess(outputs, meta)
        if options.get("explain") and hasattr(self.task, "explain"):
            fields = self.task.explain(self.infer, feeds, fields)
        t4 = time.perf_counter()
        timings = {"read": (t1 - t0) * 1e3, "preprocess": (t2 - t1) * 1e3, "infer": (t3 - t2) * 1e3,
                   "postprocess": (t4 - t3) * 1e3, "total": (t4 - t0) * 1e3}
        return self.task.result_type(self.provenance, study.source, study.sha256, timings_ms=timings,
                                     input_meta=study.meta, **fields)

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Raw outputs for an already-preprocessed (N, ...) float32 batch."""
        expected = self.manifest.input.shape[1:]
        if tuple(batch.shape[1:]) != tuple(expected):
            raise InvalidInputError(f"batch has shape {batch.shape}", expected=f"(N, {', '.join(map(str, expected))})",
                                    fix="preprocess inputs with the bundle's preprocessing (model.predict does)")
        name = self.manifest.input.name
        return in_chunks(lambda x: self.runtime.infer({name: x}), np.ascontiguousarray(batch, np.float32),
                         self.manifest.input.shape[0])

    def scores(self, batch: np.ndarray) -> np.ndarray:
        return self.task.scores(self.infer(batch))

    def self_test(self) -> SelfTest:
        """Run the bundle's golden inputs here and compare with the source model's stored scores."""
        if not self.manifest.golden:
            raise BundleError(f"bundle {self.manifest.model_id} carries no golden inputs", fix="rebuild the bundle")
        golden = np.load(self.path / self.manifest.golden)
        if "scores_source" not in golden:
            raise BundleError("golden.npz has no source-model reference scores", fix="rebuild the bundle")
        inputs, reference = golden["inputs"], golden["scores_source"]
        names = golden["names"].tolist() if "names" in golden else [f"#{i}" for i in range(len(inputs))]
        self.scores(inputs[:1])  # warm-up
        start = time.perf_counter()
        scores = np.concatenate([self.scores(inputs[i:i + 1]) for i in range(len(inputs))])
        ms = (time.perf_counter() - start) * 1e3 / len(inputs)
        per_item = self.task.disagreement(reference, scores)
        own = golden.get(f"scores_{self.artifact.key}")
        return SelfTest(self.manifest.model_id, self.backend, self.precision, float(per_item.max()),
                        self.artifact.tolerance, self.task.agreement_measure, names[int(per_item.argmax())],
                        len(inputs), ms, None if own is None else max_abs_diff(scores, own))

    def close(self) -> None:
        self.runtime.close()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_bundle(path, backend: str = "auto", precision: str = "auto", **options) -> Model:
    """Open a bundle folder (or .zip), verifying every checksum before anything is loaded."""
    return Model(path, backend, precision, **options)
