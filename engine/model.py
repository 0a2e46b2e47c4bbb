"""An opened bundle bound to one backend and artifact: run studies through it (``Model``, a
Runner: engine/runner.py). Reading and verifying the bundle is :mod:`.bundle_read`."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from .backends import choose_artifact
from .bundle_read import read_manifest
from .errors import BundleError, InvalidInputError, MedError
from .io.image import sha256_of
from .results import Provenance
from .screening import (Screen, climb, flagged_rows, load_ood_reference, screen_answer, screen_borderline, screen_study,
                        strict_default)
from .trust_policy import check_signature
from .tasks import task_for


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
        ood_spec, ood = load_ood_reference(self.manifest, self.path, self.artifact)
        self._float = None  # the fp32 rung, opened on the first flagged answer (False: the bundle has none)
        self._float_lock = threading.Lock()
        self.runtime.load()
        self.provenance = Provenance(self.manifest.model_id, self.manifest.model_version, self.sha256,
                                     cls.name, self.artifact.precision, self.runtime.device,
                                     self.manifest.medical_device, str(self.manifest.provenance.get("source", "")),
                                     self.manifest.intended_use)
        self.screen = Screen(self.task, self.manifest.intended_for, self.strict, ood_spec, ood,
                             self.artifact.borderline, self.artifact.precision, cls.name)

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
        outputs = self.run(prepared.feeds)
        return self.finish(prepared, outputs, (time.perf_counter() - t0) * 1e3)

    def complete_many(self, prepared: list) -> list:
        """The results of several prepared studies from one runtime pass over their stacked feeds
        (a MedError in place of a result whose finishing failed). Each result's ``infer`` time is
        its share of the pass, by rows."""
        rows = [len(next(iter(p.feeds.values()))) for p in prepared]
        t0 = time.perf_counter()
        outputs = self.run({k: np.concatenate([p.feeds[k] for p in prepared]) for k in prepared[0].feeds})
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
        before = screen_study(self.screen, study.meta, study)  # strict mode refuses here, before any inference
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
        fields, answered, rerun = climb(self, p, outputs)
        infer_ms, t0 = infer_ms + rerun, t0 + rerun / 1e3
        timings = dict(p.timings, infer=infer_ms, postprocess=(time.perf_counter() - t0) * 1e3)
        timings["total"] = sum(timings.values())
        return self.task.result_type(provenance=answered.provenance, source=p.source, input_sha256=sha256_of(p.digest),
                                     timings_ms=timings, input_meta=p.input_meta, **fields)

    def answer(self, p: "Prepared", outputs: dict) -> dict:
        """This artifact's answer fields for its outputs: postprocess, explanation, OOD, borderline
        (no ladder: that is ``finish``)."""
        fields = self.task.postprocess(outputs, p.meta)
        if self.task.explains(p.options):
            fields = self.task.explain(self.infer, p.feeds, fields)
        warnings = p.warnings + tuple(fields.get("warnings", ()))
        fields = screen_answer(self.screen, outputs, fields | {"warnings": warnings})
        return screen_borderline(self.screen, fields)

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Raw outputs for an already-preprocessed (N, ...) float32 batch."""
        expected = self.manifest.input.shape[1:]
        if tuple(batch.shape[1:]) != tuple(expected):
            raise InvalidInputError(f"batch has shape {batch.shape}", expected=f"(N, {', '.join(map(str, expected))})",
                                    fix="preprocess inputs with the bundle's preprocessing (model.predict does)")
        return self.run({self.manifest.input.name: np.ascontiguousarray(batch, np.float32)})

    def run(self, feeds: dict) -> dict[str, np.ndarray]:
        """The runtime over a preprocessed input, at most MAX_BATCH items (or the fixed batch) per call.

        Safe from any number of threads: the Model keeps no per-call state and every backend
        gives each concurrent call its own request / context (or a session that is thread-safe).
        """
        (name, inputs), = feeds.items()
        return in_chunks(lambda x: self.runtime.infer({name: x}), inputs, self.manifest.input.shape[0], MAX_BATCH)

    def scores(self, batch: np.ndarray) -> np.ndarray:
        """Scores of preprocessed rows as this model answers them: a quantized artifact's rows that
        its own screening flags without a header (OOD, borderline) come from the fp32 rung."""
        return self.answered_scores(batch, self.infer(batch))

    def answered_scores(self, batch: np.ndarray, outputs: dict) -> np.ndarray:
        """``scores`` for a batch whose runtime outputs are known (a server's shared pass)."""
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
        m, screen = self.manifest, self.screen
        ood_spec = screen.ood_spec if self.task.ood_applies else None
        return flagged_rows(outputs, scores, ood_spec=ood_spec, ood=screen.ood, band=screen.band,
                            thresholds=m.postprocess.thresholds, labels=tuple(m.labels),
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
