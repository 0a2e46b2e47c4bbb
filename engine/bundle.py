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
    """Golden inputs run on this machine against the reference outputs stored at build time."""

    model_id: str
    backend: str
    precision: str
    max_score_diff: float
    tolerance: float
    n: int
    ms_per_item: float

    @property
    def passed(self) -> bool:
        return self.max_score_diff <= self.tolerance

    def line(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return (f"{verdict} {self.model_id} [{self.backend} {self.precision}] {self.n} golden inputs, "
                f"max score diff {self.max_score_diff:.2e} (tolerance {self.tolerance:.0e}), "
                f"{self.ms_per_item:.2f} ms/item")


# Most inputs one runtime call takes (tiles of a large image, ECG windows, occluded copies): the
# runtime's working memory grows with the batch, and a 4096 x 4096 image is ~440 tiles of 256^2
# (all in one call took 3.75 GB on em-membrane-seg; in calls of 8 the whole predict peaks at ~0.9 GB).
MAX_BATCH = 8


def in_chunks(run, inputs: np.ndarray, fixed_batch: int = -1, chunk: int = 32) -> dict[str, np.ndarray]:
    """Run ``run(array) -> {name: array}`` over ``inputs`` in chunks (of the model's fixed batch, if any).

    Each chunk's outputs are copied into arrays for all inputs as they come (no second copy
    from concatenating at the end).
    """
    size = fixed_batch if fixed_batch > 0 else chunk
    n, out = len(inputs), None
    for i in range(0, n, size):
        part = run(inputs[i:i + size])
        if n <= size:
            return part
        if out is None:
            out = {k: np.empty((n, *v.shape[1:]), v.dtype) for k, v in part.items()}
        for k, v in part.items():
            if len(v) != len(inputs[i:i + size]):
                raise BundleError(f"output {k!r} has {len(v)} rows for {len(inputs[i:i + size])} inputs",
                                  expected="one output row per input (batch first)", fix="rebuild the bundle")
            out[k][i:i + len(v)] = v
    return out


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
        outputs = self._run(feeds)
        t3 = time.perf_counter()
        if not options.get("explain"):
            feeds = None  # a large image's tiles need not outlive the run
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
        return self._run({self.manifest.input.name: np.ascontiguousarray(batch, np.float32)})

    def _run(self, feeds: dict) -> dict[str, np.ndarray]:
        """The runtime over a preprocessed input, at most MAX_BATCH items (or the fixed batch) per call.

        Safe from any number of threads: the Model keeps no per-call state and every backend
        gives each concurrent call its own request / context (or a session that is thread-safe).
        """
        (name, inputs), = feeds.items()
        return in_chunks(lambda x: self.runtime.infer({name: x}), inputs, self.manifest.input.shape[0], MAX_BATCH)

    def scores(self, batch: np.ndarray) -> np.ndarray:
        return self.task.scores(self.infer(batch))

    def self_test(self) -> SelfTest:
        """Run the bundle's golden inputs here and compare with the stored reference scores."""
        if not self.manifest.golden:
            raise BundleError(f"bundle {self.manifest.model_id} carries no golden inputs", fix="rebuild the bundle")
        golden = np.load(self.path / self.manifest.golden)
        key = f"scores_{self.artifact.key}"
        if key not in golden:
            raise BundleError(f"golden.npz has no reference scores for {self.artifact.key}", fix="rebuild the bundle")
        inputs, reference = golden["inputs"], golden[key]
        self.scores(inputs[:1])  # warm-up
        start = time.perf_counter()
        scores = np.concatenate([self.scores(inputs[i:i + 1]) for i in range(len(inputs))])
        ms = (time.perf_counter() - start) * 1e3 / len(inputs)
        return SelfTest(self.manifest.model_id, self.backend, self.precision,
                        max_abs_diff(scores, reference), self.artifact.tolerance, len(inputs), ms)

    def close(self) -> None:
        self.runtime.close()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_bundle(path, backend: str = "auto", precision: str = "auto", **options) -> Model:
    """Open a bundle folder (or .zip), verifying every checksum before anything is loaded."""
    return Model(path, backend, precision, **options)
