"""The listener: a C-STORE SCP that runs the bundles on each object as it arrives and forwards the results.

Guarantees: an object is on disk (fsynced file and folder) and its job queued before the
association is answered with Success, and answered 0xA700 while the spool cannot take it; jobs
live in a :class:`~.queue.JobQueue` keyed by a hash of the full SOP Instance UID (a crash or
``kill -9`` followed by a restart finishes every pending job); results, once made, wait in the
spool's outbox and only their delivery is retried (capped backoff, until ``send_deadline_s``);
result UIDs derive from the source object and the bundle (a re-send stores nothing twice);
workers never die of a full disk (they back off and resume), and one that cannot go on stops the
process; every event is one whole line of ``audit.jsonl`` (UIDs and hashes, no patient values).
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from pathlib import Path

from medexport.engine.errors import ConfigurationError, InvalidInputError, MedError

from . import PacsError
from .files import durable_copy, durable_move, has_room
from .nodes import Node, check_ae
from .queue import Job, JobQueue
from .receive import SEG_CLASS, cap_per_peer, check_object, make_ae
from .spool import AuditLog, describe, purge

log = logging.getLogger("medexport.listen")

# DIMSE statuses the SCP answers with
SUCCESS, OUT_OF_RESOURCES, CANNOT_UNDERSTAND, UID_MISMATCH = 0x0000, 0xA700, 0xC210, 0xC212
DAY = 86400.0


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
    if kind == "volume":  # a series arrives one instance at a time: gathering series is not built yet
        return False
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


class Listener:
    """Receive, queue, run, deliver. ``start()`` then ``wait()`` / ``stop()``; ``fatal`` says why it
    cannot go on (the CLI then exits non-zero)."""

    def __init__(self, spool, bundles: list, *, ae_title: str = "MEDEXPORT", port: int = 11112,
                 host: str = "0.0.0.0", forward: Node | None = None, allow: list[str] | None = None,
                 tls: Node | None = None, workers: int = 1, max_attempts: int = 0, backoff_s: float = 2.0,
                 max_backoff_s: float = 300.0, send_deadline_s: float = DAY, keep_days: float = 7.0,
                 idle_timeout_s: float = 30.0, max_per_peer: int = 8, max_object_mb: float = 512.0,
                 write_pdf: bool = True, open_options: dict | None = None, require_commissioning=None):
        self.ae_title = check_ae(ae_title, "--ae-title")
        self.allow = [check_ae(a, "--allow") for a in allow or []]
        for name, value in (("--idle-timeout", idle_timeout_s), ("--max-object-mb", max_object_mb),
                            ("--send-deadline", send_deadline_s), ("--max-per-peer", max_per_peer)):
            if value <= 0:
                raise ConfigurationError(f"{name} is {value}", expected="a positive number")
        if keep_days < 0:
            raise ConfigurationError(f"--keep-days is {keep_days}", expected="0 or more days")
        self.queue = JobQueue(spool)
        self.audit = AuditLog(self.queue.root / "audit.jsonl")
        self.host, self.port, self.forward, self.tls = host, port, forward, tls
        self.workers, self.max_attempts = max(1, workers), max(0, max_attempts)
        self.backoff_s, self.max_backoff_s, self.write_pdf = backoff_s, max_backoff_s, write_pdf
        self.send_deadline_s, self.keep_s = send_deadline_s, keep_days * DAY
        self.idle_timeout_s, self.max_per_peer = idle_timeout_s, int(max_per_peer)
        self.max_object_bytes = int(max_object_mb * (1 << 20))
        self.open_options = open_options or {}
        self.require_commissioning = require_commissioning  # a folder of commissioning reports, or None
        self.models = [self._open(b) for b in bundles]
        self.retired: list = []  # models replaced by reload(): a running job may still hold one
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.threads: list[threading.Thread] = []
        self.held: set[str] = set()  # jobs a worker holds in running/
        self.lock = threading.Lock()
        self.fatal: str | None = None
        self.next_purge = 0.0
        self.server = None

    # -- receiving -----------------------------------------------------------------------------
    def on_store(self, event) -> int:
        calling = event.assoc.requestor.ae_title
        try:
            return self._store(event, calling)
        except Exception as exc:  # never pynetdicom's silent 0xC211: answered and audited
            self.audit("refused", calling_ae=calling, reason=f"unexpected error: {describe(exc)}")
            return CANNOT_UNDERSTAND

    def _store(self, event, calling: str) -> int:
        src = Path(event.dataset_path)  # pynetdicom streamed the object there (STORE_RECV_CHUNKED_DATASET)
        size = src.stat().st_size
        if size > self.max_object_bytes:
            self.audit("refused", calling_ae=calling, size=size,
                       reason=f"object of {size:,} bytes, over --max-object-mb {self.max_object_bytes >> 20}")
            return OUT_OF_RESOURCES
        if not has_room(self.queue.root, 2 * size):
            self.audit("refused", calling_ae=calling, size=size, reason="the spool's disk is full")
            return OUT_OF_RESOURCES
        sha = _sha256(src)
        try:
            ds = check_object(src)
        except InvalidInputError as exc:
            self.audit("refused", calling_ae=calling, sha256=sha, reason=str(exc))
            return CANNOT_UNDERSTAND
        uid, affected = str(ds.SOPInstanceUID), str(event.request.AffectedSOPInstanceUID)
        if uid != affected:
            self.audit("refused", calling_ae=calling, sha256=sha, sop_instance_uid=affected,
                       reason="(0008,0018) SOP Instance UID differs from the C-STORE's (0000,1000) Affected "
                              "SOP Instance UID")
            return UID_MISMATCH
        job_id = job_key(uid)
        if self.queue.is_done(job_id):  # received again after delivery: nothing to keep or run
            self.audit("received", calling_ae=calling, sop_instance_uid=uid, sha256=sha, job=job_id, queue="done")
            return SUCCESS
        obj = self.queue.root / "objects" / f"{job_id}.dcm"
        try:
            durable_copy(src, obj)
            state = self.queue.put(job_id, {"sop_instance_uid": uid, "study_uid": str(ds.get("StudyInstanceUID", "")),
                                            "sop_class_uid": str(ds.SOPClassUID), "calling_ae": calling,
                                            "sha256": sha, "received": time.time()})
        except OSError as exc:  # disk full, permissions: the sender keeps the object and retries
            if self.queue.state(job_id) is None:
                obj.unlink(missing_ok=True)
            self.audit("refused", calling_ae=calling, sop_instance_uid=uid, reason=f"cannot store: {describe(exc)}")
            return OUT_OF_RESOURCES
        self.audit("received", calling_ae=calling, sop_instance_uid=uid, sha256=sha, job=job_id, queue=state)
        self.wake.set()
        return SUCCESS

    def _on_rejected(self, event) -> None:
        self.audit("association-rejected", calling_ae=event.assoc.requestor.ae_title,
                   address=event.assoc.requestor.address, allowed=self.allow)

    def _on_peer_refused(self, address: str, held: int) -> None:
        self.audit("connection-refused", address=address, held=held, reason="--max-per-peer reached")

    # -- processing ----------------------------------------------------------------------------
    def process(self, job: Job) -> None:
        """Run the bundles on a job's object (once: the results wait in the outbox), then deliver them."""
        if self.queue.is_done(job.id):
            self.queue.drop(job)
            return
        path = self.queue.root / "objects" / f"{job.id}.dcm"
        try:
            outcome = self.queue.staged(job.id)
            if outcome is None:
                if not path.is_file():
                    raise InvalidInputError("the received object is no longer in the spool's objects/",
                                            expected="the object of a queued job", fix="send the object again")
                outcome = self._run(job, path)
            sent = self._deliver(job)
        except PacsError as exc:
            self._retry_or_fail(job, str(exc))
            return
        except OSError as exc:
            if exc.errno in (28, 122):  # ENOSPC, EDQUOT: the worker backs off, the job waits
                raise
            self._retry_or_fail(job, describe(exc))
            return
        except MedError as exc:  # the object itself cannot be used: retrying would not help
            self.queue.fail(job, str(exc))
            self.audit("failed", job=job.id, reason=str(exc), attempts=job.attempts)
            return
        self.queue.finish(job, {**outcome, "sent": sent})
        self.queue.unstage(job.id)
        if "skipped" not in outcome:  # delivered: the patient data goes; a skipped object is kept --keep-days
            path.unlink(missing_ok=True)
        self.audit("skipped" if "skipped" in outcome else "done", job=job.id,
                   sop_instance_uid=job.data.get("sop_instance_uid"), result_uids=sent,
                   **{k: v for k, v in outcome.items() if k in ("results", "skipped", "ms")})

    def _run(self, job: Job, path: Path) -> dict:
        import pydicom

        from .objects import encode

        t0 = time.perf_counter()
        header = pydicom.dcmread(path, defer_size="256 KB")  # pixel data read only when a model needs it
        chosen = [m for m in self.models if bundle_accepts(m.manifest, header)]
        blobs, results = {}, []
        for model in chosen:
            result = model.predict(str(path))
            for ds in self._objects(model, result, path, header):
                blobs[f"{ds.SOPInstanceUID}.dcm"] = encode(ds)
            results.append({"model_id": result.model_id, "bundle_sha256": result.bundle_sha256,
                            "decision": result.headline(), "backend": result.backend})
        outcome = {"results": results, "ms": round((time.perf_counter() - t0) * 1e3, 1)}
        if not chosen:
            outcome["skipped"] = (f"no bundle takes SOP class {header.get('SOPClassUID', '?')} "
                                  f"modality {header.get('Modality', '?')}")
        self.queue.stage(job.id, blobs, outcome)
        self.audit("ran", job=job.id, bundles=[r["model_id"] for r in results], ms=outcome["ms"])
        return outcome

    def _deliver(self, job: Job) -> list[str]:
        files = self.queue.staged_files(job.id)
        if not files:
            return []
        if self.forward is not None:
            from .scu import send

            return send(self.forward, files)
        for f in files:
            durable_copy(f, self.queue.root / "results" / f.name)
        return [f.stem for f in files]

    def _objects(self, model, result, path: Path, header) -> list:
        from .objects import result_objects
        from .textpdf import report_lines, text_pdf

        pdf = text_pdf(report_lines(result, header, model.manifest.intended_use)) if self.write_pdf else None
        overlay = self.forward is None or self.forward.send_overlay  # the overlay as a secondary capture
        return result_objects(result, str(path), pdf=pdf, src=header, overlay=overlay)

    def _retry_or_fail(self, job: Job, reason: str) -> None:
        """Retry with capped backoff until the job's deadline (and --max-attempts, when set)."""
        deadline = float(job.data.get("since", job.data.get("received", time.time()))) + self.send_deadline_s
        if time.time() >= deadline or (self.max_attempts and job.attempts + 1 >= self.max_attempts):
            self.queue.fail(job, reason)
            self.audit("failed", job=job.id, reason=reason, attempts=job.attempts)
            return
        delay = min(self.max_backoff_s, self.backoff_s * 2 ** min(job.attempts, 30))
        self.queue.retry(job, reason, delay)
        self.audit("retry", job=job.id, reason=reason, attempts=job.attempts, delay_s=delay)

    def _work(self) -> None:
        pause = 0.0
        try:
            while not self.stopping.is_set():
                if pause:
                    self.stopping.wait(pause)
                try:
                    self._step()
                    pause = 0.0
                except OSError as exc:  # the spool's disk is full or failing: wait, then go on
                    pause = min(60.0, max(0.5, pause * 2))
                    log.warning("worker waits %.1f s: %s", pause, describe(exc))
                    self._unstick()
        except BaseException as exc:  # noqa: B902 - a worker that cannot go on stops the listener
            self.fatal = f"{threading.current_thread().name} stopped: {describe(exc)}"
            log.error("%s", self.fatal)
            self.stopping.set()

    def _step(self) -> None:
        if time.time() >= self.next_purge:
            for job_id in purge(self.queue, self.keep_s):
                self.audit("purged", job=job_id)
            self.next_purge = time.time() + min(600.0, max(1.0, self.keep_s / 10))
        job = self.queue.claim()
        if job is None:
            self.wake.wait(0.5)
            self.wake.clear()
            return
        with self.lock:
            self.held.add(job.id)
        try:
            self.process(job)
        except OSError:
            raise
        except Exception as exc:  # a bug must not stop the listener: the job is failed, visibly
            reason = f"unexpected error: {describe(exc)}"
            log.error("job %s: %s", job.id, reason)
            if job.path.exists() and job.path.parent.name == "running":
                self.queue.fail(job, reason)
            self.audit("failed", job=job.id, reason=reason)
        finally:
            with self.lock:
                self.held.discard(job.id)

    def _unstick(self) -> None:
        """Jobs left in running/ by a failed write go back to pending/ (a rename needs no free space)."""
        with self.lock:
            held = set(self.held)
        for path in self.queue.folder("running").glob("*.json"):
            if path.stem not in held:
                try:
                    durable_move(path, self.queue.folder("pending"))
                except OSError:
                    pass

    # -- life cycle ----------------------------------------------------------------------------
    def start(self) -> "Listener":
        from pynetdicom import _config, evt

        from .scu import tls_context

        _config.STORE_RECV_CHUNKED_DATASET = True  # objects stream to a file, never whole in memory
        for job_id in self.queue.recover():
            self.audit("recovered", job=job_id)
        ctx = tls_context(self.tls, server=True) if self.tls is not None else None
        handlers = [(evt.EVT_C_STORE, self.on_store), (evt.EVT_REJECTED, self._on_rejected)]
        ae = make_ae(self.ae_title, self.allow, self.idle_timeout_s, max(16, 4 * self.max_per_peer))
        try:
            self.server = ae.start_server((self.host, self.port), block=False, evt_handlers=handlers,
                                          ssl_context=ctx)
        except OSError as exc:
            raise ConfigurationError(f"cannot listen on {self.host}:{self.port} ({exc})",
                                     fix="choose a free port with --port, or stop the other listener") from None
        cap_per_peer(self.server, self.max_per_peer, self._on_peer_refused)
        self.port = self.server.server_address[1]
        for i in range(self.workers):
            t = threading.Thread(target=self._work, name=f"medexport-job-{i}", daemon=True)
            t.start()
            self.threads.append(t)
        self.audit("started", ae_title=self.ae_title, port=self.port, bundles=[m.manifest.model_id for m in self.models],
                   forward=self.forward.describe() if self.forward else None, allow=self.allow, tls=ctx is not None,
                   queue=self.queue.counts())
        if not self.allow:
            warning = (f"no --allow: any calling AE title may store objects here (listening on {self.host}); "
                       "name the senders with --allow AET")
            log.warning("WARNING %s", warning)
            self.audit("warning", reason=warning)
        return self

    def reload(self, bundles: list) -> bool:
        """Open ``bundles`` afresh (SIGHUP) and run them on the next jobs; True when done. Any bundle
        that cannot open (or is not trusted, or not commissioned) keeps the old set running, and says why in the audit."""
        opened = []
        try:
            for b in bundles:
                opened.append(self._open(b))
        except MedError as exc:
            for m in opened:
                m.close()
            self.audit("reload-failed", reason=str(exc), bundles=[m.manifest.model_id for m in self.models])
            return False
        with self.lock:
            self.retired += self.models  # closed at stop(): a worker may be running one right now
            self.models = opened
        self.audit("reloaded", bundles=[m.manifest.model_id for m in opened],
                   bundle_sha256=[m.sha256 for m in opened])
        return True

    def _open(self, bundle):
        """Open one bundle; with ``require_commissioning``, only one a current, passing report commissions."""
        from medexport.engine import open_bundle
        from medexport.engine.commissioning import check_commissioned

        model = open_bundle(bundle, **self.open_options)
        if self.require_commissioning is not None:
            try:
                check_commissioned(self.require_commissioning, model.sha256, model.manifest.model_id)
            except MedError:
                model.close()
                raise
        return model

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        if self.server is not None:
            self.server.shutdown()
        for t in self.threads:
            t.join(60)
        for m in self.models + self.retired:
            m.close()
        self.audit("stopped", queue=self.queue.counts(), fatal=self.fatal)


def job_key(uid: str) -> str:
    """A job's id: a hash of the full SOP Instance UID (two UIDs never share a job)."""
    return hashlib.sha256(uid.encode()).hexdigest()[:40]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
