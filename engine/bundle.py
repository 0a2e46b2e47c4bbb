"""Open a bundle: verify every checksum, choose a backend, run studies through it."""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import tempfile
import threading
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .backends import choose_artifact
from .backends.base import default_cache_dir
from .checksums import sha256_file
from .errors import BundleError, ConfigurationError, InvalidInputError, MedError
from .io.image import sha256_of
from .manifest import MAX_MANIFEST_BYTES, RESERVED, Manifest, relative_path
from .results import Provenance
from .screening import (climbed, flagged_rows, ladder_flags, load_ood_reference, screen_answer, screen_borderline,
                        screen_study, strict_default)
from .trust_policy import check_signature
from .tasks import task_for

MANIFEST = "manifest.json"
MAX_BUNDLE_BYTES = 16 << 30  # all members of a zipped bundle, unpacked
STALE_UNPACK_SECONDS = 3600
MAX_ZIP_RATIO = 200  # weights compress ~1.1:1; a member over 1 MB that deflates 200:1 is a zip bomb


def read_manifest(path, *, verify: bool = True) -> tuple[Manifest, str, Path]:
    """Return (manifest, bundle sha256, bundle dir) after checking every file's SHA-256.

    The bundle's identity is the SHA-256 of its manifest, which lists every other file's hash.
    The bundle may hold nothing else: no unlisted file, no symlink, no path leaving its folder.
    """
    root = _bundle_dir(Path(path)).resolve()
    raw = _read_capped(root / MANIFEST, MAX_MANIFEST_BYTES)
    manifest = Manifest.from_json(raw)
    referenced = [p for a in manifest.artifacts for p in a.files.values()]
    referenced += [p for p in (manifest.golden, manifest.card) if p]
    referenced += [a.report for a in manifest.artifacts if a.report]
    unlisted = sorted(set(referenced) - set(manifest.files))
    if unlisted:
        raise BundleError(f"{root}: manifest references files without a checksum: {unlisted}",
                          fix="rebuild the bundle")
    _check_contents(root, manifest)
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


def _read_capped(file: Path, limit: int) -> bytes:
    if file.is_symlink() or not file.is_file():
        raise BundleError(f"{file} is not a regular file", expected="the manifest itself, not a link",
                          fix="copy the bundle folder again")
    with open(file, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise BundleError(f"{file} is larger than {limit} bytes", expected="a manifest of a few kB",
                          fix="rebuild the bundle")
    return data


def _check_contents(root: Path, manifest: Manifest) -> None:
    """Every file in the folder is the manifest, its signature or listed; no links; nothing outside."""
    allowed = set(manifest.files) | set(RESERVED)
    extra = []
    for folder, dirs, files in os.walk(root):  # never follows links
        for entry in [Path(folder, name) for name in dirs + files]:
            if entry.is_symlink():
                raise BundleError(f"{root}: {entry.relative_to(root).as_posix()} is a symbolic link",
                                  expected="a bundle of plain files",
                                  fix="copy the bundle without links (a link can point outside the bundle)")
        extra += [rel for rel in (Path(folder, name).relative_to(root).as_posix() for name in files)
                  if rel not in allowed or not (root / rel).is_file()]
    if extra:
        raise BundleError(f"{root}: {len(extra)} file(s) not listed in the manifest: {sorted(extra)[:5]}",
                          expected="only the files the manifest lists (plus manifest.json and bundle.sig)",
                          fix="remove them, or copy the bundle again from its source")
    for rel in manifest.files:
        if not (root / rel).resolve().is_relative_to(root):
            raise BundleError(f"{root}: {rel} resolves outside the bundle", fix="copy the bundle again")


def _bundle_dir(path: Path) -> Path:
    if path.is_dir():
        if not (path / MANIFEST).is_file():
            raise BundleError(f"{path} has no {MANIFEST}", expected="a bundle folder written by 'medexport build'",
                              fix="point to the bundle folder itself")
        return path
    if path.is_file():
        if path.suffix.lower() == ".onnx":
            raise BundleError(f"{path} is an ONNX model, not a bundle", expected="a bundle folder or .zip",
                              fix=f"build a bundle from it first: medexport build {path} --task classification "
                                  f"--labels ... -o bundles/{path.stem}")
        if not zipfile.is_zipfile(path):
            raise BundleError(f"{path} is neither a bundle folder nor a zip file", expected="a bundle folder or .zip",
                              fix="point to the bundle folder or the .zip that 'medexport build' wrote")
        return _unpack_zip(path)
    raise BundleError(f"bundle {path} does not exist", expected="a bundle folder or .zip",
                      fix="build one with 'medexport build' or check the path")


def _unpack_zip(path: Path) -> Path:
    """Unpack a zipped bundle once into the cache (keyed by the zip's hash); never in place.

    The zip's manifest is read and checked first; only listed members are accepted and each is
    hashed while it is written, so a tampered, unlisted or oversized member stops the unpacking
    and nothing but a complete, verified copy is ever left in the cache.
    """
    cache = Path(default_cache_dir()) / "bundles"
    target = cache / sha256_file(path)[:16]
    if (target / MANIFEST).is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    for stale in cache.glob("*.tmp*"):  # left by a killed process (a failure cleans up after itself)
        with contextlib.suppress(FileNotFoundError):  # another process may remove it first
            if time.time() - stale.stat().st_mtime > STALE_UNPACK_SECONDS:
                shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{target.name}.tmp-", dir=cache))
    try:
        try:
            with zipfile.ZipFile(path) as zf:
                for rel, (info, expected) in _zip_members(path, zf).items():
                    _extract(zf, info, tmp / rel, expected, path)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError,
                FileExistsError) as exc:  # FileExistsError: names that differ only in case, on such disks
            raise BundleError(f"{path} is a damaged or unsupported zip ({exc})",
                              fix="copy the .zip again, or rebuild it with 'medexport build -o NAME.zip'") from None
        if target.exists() and not (target / MANIFEST).is_file():
            shutil.rmtree(target)  # an incomplete copy left by an older version
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / MANIFEST).is_file():  # another process unpacked the same zip first: use theirs
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _zip_members(path: Path, zf: zipfile.ZipFile) -> dict[str, tuple[zipfile.ZipInfo, str | None]]:
    """Check a zipped bundle's member list against its manifest before anything is extracted.

    Returns bundle-relative path -> (member, expected SHA-256 or None for the manifest/signature).
    """
    infos = zf.infolist()
    tops = [i for i in infos if i.filename.rsplit("/", 1)[-1] == MANIFEST and i.filename.count("/") <= 1]
    if len(tops) != 1:
        raise BundleError(f"{path} holds {len(tops)} {MANIFEST} at its top", expected="exactly one",
                          fix="zip the bundle folder itself (medexport build -o NAME.zip does)")
    prefix = tops[0].filename[:-len(MANIFEST)]
    if tops[0].file_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{path}: {MANIFEST} is {tops[0].file_size} bytes", expected=f"at most {MAX_MANIFEST_BYTES}")
    with zf.open(tops[0]) as fh:
        manifest = Manifest.from_json(fh.read(MAX_MANIFEST_BYTES + 1))
    members, total = {}, 0
    for info in infos:
        name = info.filename
        if info.is_dir() and prefix.startswith(name):
            continue
        rel = name[len(prefix):] if name.startswith(prefix) else name
        if not name.startswith(prefix) or _is_link(info) or info.flag_bits & 0x1:
            raise BundleError(f"{path}: member {name!r} is outside the bundle folder, a link or encrypted",
                              fix="zip the bundle folder itself (medexport build -o NAME.zip does)")
        if info.is_dir():
            relative_path(f"zip folder {name!r}", rel.rstrip("/"))
            continue
        relative_path(f"zip member {name!r}", rel)
        if rel in members or (rel not in manifest.files and rel not in RESERVED):
            raise BundleError(f"{path}: member {name!r} is {'duplicated' if rel in members else 'not listed in the manifest'}",
                              expected="only the files the manifest lists, each once", fix="rebuild the bundle")
        ratio = info.file_size / max(info.compress_size, 1)
        total += info.file_size
        if (info.file_size > 1 << 20 and ratio > MAX_ZIP_RATIO) or total > MAX_BUNDLE_BYTES or \
                (rel in RESERVED and info.file_size > MAX_MANIFEST_BYTES):
            raise BundleError(f"{path}: member {name!r} unpacks to {info.file_size} bytes from {info.compress_size}",
                              expected=f"a compression ratio below {MAX_ZIP_RATIO} and at most "
                                       f"{MAX_BUNDLE_BYTES >> 30} GiB in all", fix="this is not a bundle: delete it")
        members[rel] = (info, manifest.files.get(rel))
    missing = sorted(set(manifest.files) - set(members))
    if missing:
        raise BundleError(f"{path}: {len(missing)} file(s) listed in the manifest are missing: {missing[:5]}",
                          fix="copy the .zip again")
    return members


def _is_link(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _extract(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, expected: str | None, path: Path) -> None:
    """Write one member while hashing it; stop at its declared size and at a hash mismatch."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest, written = hashlib.sha256(), 0
    with zf.open(info) as src, open(dest, "xb") as out:
        for block in iter(lambda: src.read(1 << 20), b""):
            written += len(block)
            if written > info.file_size:
                raise BundleError(f"{path}: member {info.filename!r} is longer than it declares", fix="delete it")
            digest.update(block)
            out.write(block)
    if expected is not None and digest.hexdigest() != expected:
        raise BundleError(f"{path}: {info.filename} has SHA-256 {digest.hexdigest()[:12]}..., the manifest says "
                          f"{expected[:12]}...", expected="an unmodified bundle",
                          fix="the file was changed or corrupted: copy the bundle again or rebuild it")


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


@dataclass(frozen=True)
class Prepared:
    """One study read and preprocessed, waiting for its runtime pass (``Model.prepare``)."""

    feeds: dict  # input name -> (rows, ...) float32
    meta: dict  # what postprocess needs to map outputs back
    options: object
    source: str
    digest: object  # the study's sha256, or the future of its background hash (io/image.sha256_of)
    input_meta: dict
    warnings: tuple  # found before inference (intended use)
    timings: dict  # read, preprocess (ms)


class Model:
    """An opened bundle bound to one backend and artifact (a Runner: engine/runner.py). Use as a context manager."""

    batches_locally = True  # prepare on worker threads, complete_many in one runtime pass here
    study_kind = property(lambda self: self.task.study_kind)

    def __init__(self, path, backend: str = "auto", precision: str = "auto", *,
                 threads: int | None = None, verify: bool = True, trust=None, allow_unsigned: bool = False,
                 strict: bool | None = None, **backend_options):
        self.strict = strict_default() if strict is None else bool(strict)
        self.manifest, self.sha256, self.path = read_manifest(path, verify=verify)
        self.signature = check_signature(self.path, trust, allow_unsigned)
        cls, self.artifact = choose_artifact(self.manifest, backend, precision)
        files = {role: self.path / rel for role, rel in self.artifact.files.items()}
        self.runtime = cls(files, precision=self.artifact.precision, threads=threads, **backend_options)
        self.task = task_for(self.manifest, self.artifact)
        self.ood_spec, self.ood = load_ood_reference(self.manifest, self.path, self.artifact)
        self._float = None  # the fp32 rung, opened on the first flagged answer (False: the bundle has none)
        self._float_lock = threading.Lock()
        self.runtime.load()
        self.provenance = Provenance(self.manifest.model_id, self.manifest.model_version, self.sha256,
                                     cls.name, self.artifact.precision, self.runtime.device,
                                     self.manifest.medical_device, str(self.manifest.provenance.get("source", "")))

    backend = property(lambda self: self.provenance.backend)
    precision = property(lambda self: self.provenance.precision)

    def predict(self, source, **options):
        """Run one study end to end and return its result.

        Images: a path (DICOM, PNG, JPEG) or a 2-D array; ``frame=`` for multi-frame DICOM;
        ``explain=True`` computes an occlusion map when the graph has no CAM output (slower).
        ECGs: a path (DICOM waveform, WFDB, aECG, CSV) or an array with ``fs=``; ``lead=`` to choose.
        Options the bundle's task does not take are refused (see ``Task.options``).
        """
        return self.complete(self.prepare(source, **options))

    def complete(self, prepared: "Prepared"):
        """The result of a prepared study: its runtime pass, then ``finish``."""
        t0 = time.perf_counter()
        outputs = self._run(prepared.feeds)
        return self.finish(prepared, outputs, (time.perf_counter() - t0) * 1e3)

    def complete_many(self, prepared: list) -> list:
        """The results of several prepared studies from one runtime pass over their stacked feeds
        (a MedError in place of a result whose finishing failed). Each result's ``infer`` time is
        its share of the pass, by rows."""
        rows = [len(next(iter(p.feeds.values()))) for p in prepared]
        t0 = time.perf_counter()
        outputs = self._run({k: np.concatenate([p.feeds[k] for p in prepared]) for k in prepared[0].feeds})
        per_row = (time.perf_counter() - t0) * 1e3 / max(sum(rows), 1)
        results, start = [], 0
        for p, n in zip(prepared, rows):
            part = {k: v[start:start + n] for k, v in outputs.items()}
            start += n
            try:
                results.append(self.finish(p, part, per_row * n))
            except MedError as exc:
                results.append(exc)
        return results

    def prepare(self, source, **options) -> "Prepared":
        """Read and preprocess one study (no runtime): a batch runner or a server prepares several
        studies, runs their feeds together and finishes each (``predict`` is the one-study case)."""
        opts = self.task.options(**options)
        t0 = time.perf_counter()
        study = self.task.read(source, opts)
        before = screen_study(self, study.meta)  # strict mode refuses here, before any inference
        t1 = time.perf_counter()
        feeds, meta = self.task.preprocess(study, opts)
        digest = getattr(study, "digest", None) or study.sha256  # an image's hash may still run: overlaps inference
        return Prepared(feeds, meta, opts, study.source, digest, study.meta, before,
                        {"read": (t1 - t0) * 1e3, "preprocess": (time.perf_counter() - t1) * 1e3})

    def finish(self, prepared: "Prepared", outputs: dict, infer_ms: float):
        """The result of a prepared study from its runtime outputs: postprocess, explanation, screening.

        The precision ladder: a quantized artifact answers only the studies its screening passes; a
        flagged one (``LADDER_FLAGS``) is answered by the bundle's fp32 artifact from the same
        prepared feeds (one more inference), and the result says so (``answered_at_fp32``)."""
        t0 = time.perf_counter()
        p = prepared
        fields = self._screened(p, outputs)
        answered, flags = self, ladder_flags(self, fields)
        rung = self.float_model() if flags else None
        if rung is not None:
            t1 = time.perf_counter()
            again = rung._run(p.feeds)
            rerun = (time.perf_counter() - t1) * 1e3
            infer_ms, t0 = infer_ms + rerun, t0 + rerun / 1e3
            fields, answered = climbed(self, rung, flags, fields, rung._screened(p, again)), rung
        timings = dict(p.timings, infer=infer_ms, postprocess=(time.perf_counter() - t0) * 1e3)
        timings["total"] = sum(timings.values())
        return self.task.result_type(provenance=answered.provenance, source=p.source, input_sha256=sha256_of(p.digest),
                                     timings_ms=timings, input_meta=p.input_meta, **fields)

    def _screened(self, p: "Prepared", outputs: dict) -> dict:
        """This artifact's answer fields for its outputs: postprocess, explanation, OOD, borderline."""
        fields = self.task.postprocess(outputs, p.meta)
        if self.task.explains(p.options):
            fields = self.task.explain(self.infer, p.feeds, fields)
        fields = screen_answer(self, outputs, fields | {"warnings": p.warnings + tuple(fields.get("warnings", ()))})
        return screen_borderline(self, fields)

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
        """Scores of preprocessed rows as this model answers them: a quantized artifact's rows that
        its own screening flags without a header (OOD, borderline) come from the fp32 rung."""
        outputs = self.infer(batch)
        scores = self.task.scores(outputs)
        rung = self.float_model() if self.precision != "fp32" else None
        if rung is None:
            return scores
        moved = self.flagged_rows(outputs, scores)
        if moved.any():
            scores = np.array(scores, copy=True)
            scores[moved] = rung.scores(np.asarray(batch)[moved])
        return scores

    def flagged_rows(self, outputs: dict, scores: np.ndarray) -> np.ndarray:
        """Which rows this artifact's screening flags without a header (see screening.flagged_rows)."""
        m = self.manifest
        return flagged_rows(outputs, scores, ood_spec=self.ood_spec if self.task.ood_applies else None, ood=self.ood,
                            band=self.artifact.borderline, thresholds=m.postprocess.thresholds, labels=tuple(m.labels),
                            thresholded=self.task.thresholded_scores)

    def self_test(self, threads: int = 4):
        """The bundle's golden inputs run here against the source model's stored scores, also
        from ``threads`` threads at once (see :mod:`medexport.engine.selftest`)."""
        from .selftest import run_self_test

        return run_self_test(self, threads)

    def float_model(self) -> "Model | None":
        """The bundle's fp32 artifact (this backend first), opened once: the rung that answers the
        studies a quantized artifact's screening flags; None when this is fp32 already or the bundle
        has none that runs here."""
        if self.precision == "fp32":
            return None
        with self._float_lock:  # studies on worker threads: one opening, and every thread waits for it
            if self._float is None:
                self._float = False  # looked for once: a bundle without one is not searched again per study
                for backend in dict.fromkeys((self.backend, "auto")):
                    try:
                        self._float = Model(self.path, backend, "fp32", verify=False, allow_unsigned=True,
                                            strict=self.strict)
                        break
                    except MedError:  # no fp32 artifact for this backend: try any
                        continue
            return self._float or None

    def close(self) -> None:
        self.runtime.close()
        if self._float:
            self._float.close()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_bundle(path, backend: str = "auto", precision: str = "auto", **options) -> Model:
    """Open a bundle folder (or .zip), verifying every checksum and its signature before anything is loaded.

    ``trust``: a TrustPolicy, or public keys (files or folders) that may sign bundles; default
    ``$MEDEXPORT_TRUST`` or ``<data folder>/trust``. A present signature is always checked (a
    mismatch is refused); unsigned or untrusted bundles are refused with a trust store unless
    ``allow_unsigned=True`` (``model.signature``). See engine/trust_policy.py. ``triton://host:port/model``: a model served by
    ``medexport serve`` (engine/remote.py).
    """
    if isinstance(path, str) and path.startswith("triton://"):
        from .remote import open_remote
        return open_remote(path, backend, precision, **options)
    return Model(path, backend, precision, **options)
