"""The listener: a C-STORE SCP that runs the bundles on each object as it arrives and forwards the results.

Guarantees: an object is on disk (fsynced file and folder) and its job queued before the
association is answered with Success; jobs live in a :class:`~.queue.JobQueue` (a crash or
``kill -9`` followed by a restart finishes every pending job); results have UIDs derived from
the source object and the bundle (a re-run re-sends the same UIDs and the PACS keeps one copy);
network failures are retried with exponential backoff, other failures and exhausted retries end
in ``failed/`` with the reason; every event is one line of ``audit.jsonl`` (UIDs and hashes, no
patient names). Calling AE titles can be restricted to an allow-list; TLS is optional.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from medexport.engine.errors import ConfigurationError, InvalidInputError, MedError

from . import PacsError
from .files import durable_replace
from .nodes import Node, check_ae
from .queue import Job, JobQueue

log = logging.getLogger("medexport.listen")

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
# DIMSE statuses the SCP answers with
SUCCESS, OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC210


def bundle_accepts(manifest, ds) -> bool:
    """Whether the bundle described by ``manifest`` should run on ``ds`` (a dataset's header).

    ECG tasks take waveforms; image tasks take objects with pixels, but not segmentations or
    medexport's own results; a bundle that declares its modalities (``intended_for``) takes only
    those. Body part, view and age are not routing keys: a contradiction there is a warning on
    the result (or a refusal in strict mode), as for any study.
    """
    from medexport.engine.tasks import task_class

    kind = task_class(manifest.task).study_kind
    if kind == "ecg":
        return "WaveformSequence" in ds
    ours = str(ds.get("Manufacturer", "")) == "medexport"
    modalities = manifest.intended_for.modalities
    modality_ok = not modalities or str(ds.get("Modality", "")).upper() in modalities
    return "PixelData" in ds and str(ds.get("SOPClassUID", "")) != SEG_CLASS and not ours and modality_ok


def find_bundles(folder) -> list[Path]:
    """``folder`` itself when it is a bundle, else the bundles directly inside it."""
    folder = Path(folder)
    if (folder / "manifest.json").is_file():
        return [folder]
    found = sorted(p for p in folder.iterdir() if (p / "manifest.json").is_file()) if folder.is_dir() else []
    if not found:
        raise ConfigurationError(f"no bundle in {folder}", expected="a bundle folder, or a folder of bundle folders",
                                 fix="build one with 'medexport build' or point --bundles at the bundles folder")
    return found


def check_object(data: bytes):
    """Decode a received object completely; refuse it (InvalidInputError) when it cannot be understood."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        for _ in ds.iterall():  # every element and sequence item decodes
            pass
    except (InvalidDicomError, ValueError, TypeError, KeyError, EOFError, OverflowError, NotImplementedError) as exc:
        raise InvalidInputError(f"the object cannot be decoded ({type(exc).__name__}: {exc})",
                                expected="a well-formed DICOM dataset") from None
    for key in ("SOPInstanceUID", "SOPClassUID"):
        if not str(ds.get(key, "")).strip():
            raise InvalidInputError(f"the object has no {key}", expected="(0008,0016) and (0008,0018) present")
    if "PixelData" in ds and not ds.file_meta.TransferSyntaxUID.is_compressed:
        need = (int(ds.get("Rows", 0)) * int(ds.get("Columns", 0)) * int(ds.get("SamplesPerPixel", 1))
                * int(ds.get("BitsAllocated", 8)) // 8 * int(ds.get("NumberOfFrames", 1) or 1))
        if len(ds.PixelData) < need:
            raise InvalidInputError(f"(7FE0,0010) Pixel Data has {len(ds.PixelData):,} bytes",
                                    expected=f"{need:,} bytes for its Rows, Columns, Samples, Bits and Frames")
    return ds


class AuditLog:
    """One JSON line per event, appended and fsynced (UIDs, hashes and AE titles; no patient names)."""

    def __init__(self, path: Path):
        self.path, self.lock = Path(path), threading.Lock()

    def __call__(self, event: str, **fields) -> None:
        line = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "event": event, **fields}
        with self.lock, open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        log.info("%s %s", event, " ".join(f"{k}={v}" for k, v in fields.items()))


class Listener:
    """Receive, queue, run, forward. ``start()`` then ``wait()`` / ``stop()``."""

    def __init__(self, spool, bundles: list, *, ae_title: str = "MEDEXPORT", port: int = 11112,
                 host: str = "0.0.0.0", forward: Node | None = None, allow: list[str] | None = None,
                 tls: Node | None = None, workers: int = 1, max_attempts: int = 5, backoff_s: float = 2.0,
                 max_backoff_s: float = 300.0, write_pdf: bool = True, open_options: dict | None = None):
        from medexport.engine import open_bundle

        self.ae_title = check_ae(ae_title, "--ae-title")
        self.allow = [check_ae(a, "--allow") for a in allow or []]
        self.queue = JobQueue(spool)
        self.audit = AuditLog(self.queue.root / "audit.jsonl")
        self.host, self.port, self.forward, self.tls = host, port, forward, tls
        self.workers, self.max_attempts = max(1, workers), max(1, max_attempts)
        self.backoff_s, self.max_backoff_s, self.write_pdf = backoff_s, max_backoff_s, write_pdf
        self.models = [open_bundle(b, **(open_options or {})) for b in bundles]
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.threads: list[threading.Thread] = []
        self.server = None

    # -- receiving -----------------------------------------------------------------------------
    def _ae(self):
        from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, AllStoragePresentationContexts

        ae = AE(ae_title=self.ae_title)
        ae.maximum_associations = 16
        ae.network_timeout = ae.dimse_timeout = ae.acse_timeout = 60
        if self.allow:
            ae.require_calling_aet = self.allow
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context("1.2.840.10008.1.1")
        return ae

    def on_store(self, event) -> int:
        calling = event.assoc.requestor.ae_title
        try:
            data = event.encoded_dataset()
        except (ValueError, AttributeError, KeyError) as exc:  # broken command or file meta
            self.audit("refused", calling_ae=calling, reason=f"cannot encode the received object: {exc}")
            return CANNOT_UNDERSTAND
        sha = hashlib.sha256(data).hexdigest()
        try:
            ds = check_object(data)
        except InvalidInputError as exc:
            self.audit("refused", calling_ae=calling, sha256=sha, reason=str(exc))
            return CANNOT_UNDERSTAND
        uid = str(ds.SOPInstanceUID)
        job_id = _job_id(uid)
        try:
            durable_replace(self.queue.root / "objects" / f"{job_id}.dcm", data)
            state = self.queue.put(job_id, {"sop_instance_uid": uid, "study_uid": str(ds.get("StudyInstanceUID", "")),
                                            "sop_class_uid": str(ds.SOPClassUID), "calling_ae": calling,
                                            "sha256": sha, "received": time.time()})
        except OSError as exc:  # disk full, permissions: the sender keeps the object and retries
            self.audit("refused", calling_ae=calling, sop_instance_uid=uid, reason=f"cannot store: {exc}")
            return OUT_OF_RESOURCES
        self.audit("received", calling_ae=calling, sop_instance_uid=uid, sha256=sha, queue=state)
        self.wake.set()
        return SUCCESS

    def _on_rejected(self, event) -> None:
        self.audit("association-rejected", calling_ae=event.assoc.requestor.ae_title,
                   address=event.assoc.requestor.address, allowed=self.allow)

    # -- processing ----------------------------------------------------------------------------
    def process(self, job: Job) -> None:
        if self.queue.is_done(job.id):
            self.queue.drop(job)
            return
        import pydicom

        path = self.queue.root / "objects" / f"{job.id}.dcm"
        t0 = time.perf_counter()
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
            chosen = [m for m in self.models if bundle_accepts(m.manifest, header)]
            sent, results = [], []
            for model in chosen:
                result = model.predict(str(path))
                objects = self._objects(model, result, path, header)
                if self.forward is not None:
                    from .scu import send

                    sent += send(self.forward, objects)
                else:
                    from .objects import encode

                    for ds in objects:
                        durable_replace(self.queue.root / "results" / f"{ds.SOPInstanceUID}.dcm", encode(ds))
                    sent += [str(ds.SOPInstanceUID) for ds in objects]
                results.append({"model_id": result.model_id, "bundle_sha256": result.bundle_sha256,
                                "decision": result.headline(), "backend": result.backend})
        except (PacsError, OSError) as exc:
            self._retry_or_fail(job, f"{type(exc).__name__}: {exc}")
            return
        except MedError as exc:  # the object itself cannot be used: retrying would not help
            self.queue.fail(job, str(exc))
            self.audit("failed", job=job.id, reason=str(exc), attempts=job.attempts)
            return
        outcome = {"results": results, "sent": sent, "ms": round((time.perf_counter() - t0) * 1e3, 1)}
        if not chosen:
            outcome["skipped"] = (f"no bundle takes SOP class {header.get('SOPClassUID', '?')} "
                                  f"modality {header.get('Modality', '?')}")
        self.queue.finish(job, outcome)
        path.unlink(missing_ok=True)
        self.audit("skipped" if not chosen else "done", job=job.id, sop_instance_uid=job.data.get("sop_instance_uid"),
                   **{k: v for k, v in outcome.items() if k != "sent"}, result_uids=sent)

    def _objects(self, model, result, path: Path, header) -> list:
        from .objects import result_objects
        from .textpdf import report_lines, text_pdf

        pdf = text_pdf(report_lines(result, header, model.manifest.intended_use)) if self.write_pdf else None
        return result_objects(result, str(path), pdf=pdf, src=header)

    def _retry_or_fail(self, job: Job, reason: str) -> None:
        if job.attempts + 1 >= self.max_attempts:
            self.queue.fail(job, reason)
            self.audit("failed", job=job.id, reason=reason, attempts=job.attempts)
            return
        delay = min(self.max_backoff_s, self.backoff_s * 2 ** job.attempts)
        self.queue.retry(job, reason, delay)
        self.audit("retry", job=job.id, reason=reason, attempts=job.attempts, delay_s=delay)

    def _work(self) -> None:
        while not self.stopping.is_set():
            job = self.queue.claim()
            if job is None:
                self.wake.wait(0.5)
                self.wake.clear()
                continue
            try:
                self.process(job)
            except Exception as exc:  # a bug must not stop the listener: the job is failed, visibly
                log.exception("job %s", job.id)
                if job.path.exists() and job.path.parent.name == "running":
                    self.queue.fail(job, f"unexpected error: {type(exc).__name__}: {exc}")
                self.audit("failed", job=job.id, reason=f"unexpected error: {type(exc).__name__}: {exc}")

    # -- life cycle ----------------------------------------------------------------------------
    def start(self) -> "Listener":
        from pynetdicom import evt

        from .scu import tls_context

        for job_id in self.queue.recover():
            self.audit("recovered", job=job_id)
        ctx = tls_context(self.tls, server=True) if self.tls is not None else None
        handlers = [(evt.EVT_C_STORE, self.on_store), (evt.EVT_REJECTED, self._on_rejected)]
        try:
            self.server = self._ae().start_server((self.host, self.port), block=False, evt_handlers=handlers,
                                                  ssl_context=ctx)
        except OSError as exc:
            raise ConfigurationError(f"cannot listen on {self.host}:{self.port} ({exc})",
                                     fix="choose a free port with --port, or stop the other listener") from None
        self.port = self.server.server_address[1]
        for i in range(self.workers):
            t = threading.Thread(target=self._work, name=f"medexport-job-{i}", daemon=True)
            t.start()
            self.threads.append(t)
        self.audit("started", ae_title=self.ae_title, port=self.port, bundles=[m.manifest.model_id for m in self.models],
                   forward=self.forward.describe() if self.forward else None, allow=self.allow, tls=ctx is not None,
                   queue=self.queue.counts())
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        if self.server is not None:
            self.server.shutdown()
        for t in self.threads:
            t.join(60)
        for m in self.models:
            m.close()
        self.audit("stopped", queue=self.queue.counts())


def _job_id(uid: str) -> str:
    from .scu import safe_name

    return safe_name(uid)
