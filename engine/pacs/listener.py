"""The listener: a C-STORE SCP that runs the bundles on each object as it arrives and forwards the results.

Guarantees: an object is on disk (fsynced file and folder) and its job queued before the
association is answered with Success, and answered 0xA700 while the spool cannot take it; jobs
live in a :class:`~.queue.JobQueue` keyed by a hash of the full SOP Instance UID (a crash or
``kill -9`` followed by a restart finishes every pending job); results, once made, wait in the
spool's outbox and only their delivery is retried (capped backoff, until ``send_deadline_s``);
result UIDs derive from the source object and the bundle (a re-send stores nothing twice);
workers never die of a full disk (they back off and resume), and one that cannot go on stops the
process; every event is one whole line of ``audit.jsonl`` (UIDs and hashes, no patient values).
Instances a volume bundle takes are gathered per series (engine/pacs/series.py) and run as one job
once the series is quiet; every bundle takes only what its intended use routes to it (:func:`not_taken`).
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
from .series import DEFAULT_QUIET_S, SeriesSpool
from .spool import AuditLog, describe, purge

log = logging.getLogger("medexport.listen")

# DIMSE statuses the SCP answers with
SUCCESS, OUT_OF_RESOURCES, CANNOT_UNDERSTAND, UID_MISMATCH = 0x0000, 0xA700, 0xC210, 0xC212
DAY = 86400.0


def bundle_accepts(manifest, ds, *, series: bool = False) -> bool:
    """Whether the bundle described by ``manifest`` should run on ``ds`` (a dataset's header); see
    :func:`not_taken`. ``series``: on the whole series ``ds`` belongs to (volume bundles)."""
    return not_taken(manifest, ds, series=series) is None


def not_taken(manifest, ds, *, series: bool = False) -> str | None:
    """Why the bundle described by ``manifest`` should not run on ``ds``, None when it should.

    ECG tasks take waveforms; image tasks take objects with pixels, but not segmentations or
    medexport's own results; volume tasks take the same, gathered into their series (``series``).
    A bundle takes only the modalities and body parts its intended use declares (an empty Body
    Part Examined contradicts nothing); view and age are not routing keys: a contradiction there
    is a warning on the result (or a refusal in strict mode), as for any study.
    """
    from medexport.engine.intended_use import routing_mismatch
    from medexport.engine.tasks import task_class

    kind = task_class(manifest.task).study_kind
    if kind == "ecg":
        return None if "WaveformSequence" in ds else "not an ECG: no (5400,0100) Waveform Sequence"
    if "PixelData" not in ds:
        return "no (7FE0,0010) Pixel Data"
    if str(ds.get("SOPClassUID", "")) == SEG_CLASS or str(ds.get("Manufacturer", "")) == "medexport":
        return "a segmentation or a medexport result"
    if (kind == "volume") != series:
        return "a volume model runs on whole series" if kind == "volume" else "an image model runs on single instances"
    return routing_mismatch(manifest.intended_for, ds)


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
                 write_pdf: bool = True, open_options: dict | None = None, require_commissioning=None,
                 shadow: list | None = None, series_quiet_s: float = DEFAULT_QUIET_S):
        self.ae_title = check_ae(ae_title, "--ae-title")
        self.allow = [check_ae(a, "--allow") for a in allow or []]
        for name, value in (("--idle-timeout", idle_timeout_s), ("--max-object-mb", max_object_mb),
                            ("--send-deadline", send_deadline_s), ("--max-per-peer", max_per_peer)):
            if value <= 0:
                raise ConfigurationError(f"{name} is {value}", expected="a positive number")
        if series_quiet_s <= 0:
            raise ConfigurationError(f"--series-quiet is {series_quiet_s}", expected="a positive number of seconds",
                                     fix="give the seconds without a new instance after which a series is complete")
        if keep_days < 0:
            raise ConfigurationError(f"--keep-days is {keep_days}", expected="0 or more days")
        self.queue = JobQueue(spool)
        self.audit = AuditLog(self.queue.root / "audit.jsonl")
        self.series = SeriesSpool(self.queue, series_quiet_s)  # volume bundles: instances gathered per series
        self.host, self.port, self.forward, self.tls = host, port, forward, tls
        self.workers, self.max_attempts = max(1, workers), max(0, max_attempts)
        self.backoff_s, self.max_backoff_s, self.write_pdf = backoff_s, max_backoff_s, write_pdf
        self.send_deadline_s, self.keep_s = send_deadline_s, keep_days * DAY
        self.idle_timeout_s, self.max_per_peer = idle_timeout_s, int(max_per_peer)
        self.max_object_bytes = int(max_object_mb * (1 << 20))
        self.open_options = open_options or {}
        self.require_commissioning = require_commissioning  # a folder of commissioning reports, or None
        self.models = [self._open(b) for b in bundles]
        self.shadows = self._open_shadows(shadow or [])  # --shadow candidates: spool and audit only
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
        answer = self._gather(src, ds, calling, sha)
        if answer is not None:  # kept for a volume bundle, and no image bundle takes it by itself
            return answer
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

    def _routes(self, ds) -> dict:
        """model id -> (whether it is a volume bundle, why it does not take ``ds`` or None)."""
        from medexport.engine.tasks import task_class

        with self.lock:
            models = list(self.models)
        out = {}
        for m in models:
            volume = task_class(m.manifest.task).study_kind == "volume"
            out[m.manifest.model_id] = (volume, not_taken(m.manifest, ds, series=volume))
        return out

    def _gather(self, src: Path, ds, calling: str, sha: str) -> int | None:
        """Keep an instance a volume bundle takes in its series' gathering (engine/pacs/series.py).
        The C-STORE's answer when that is all it needs; None when an image bundle takes it too (it
        gets its own job) or no volume bundle takes it."""
        routes = self._routes(ds)
        takers = [k for k, (volume, why) in routes.items() if volume and why is None]
        if not takers or not str(ds.get("SeriesInstanceUID", "")).strip():
            return None
        uid = str(ds.SOPInstanceUID)
        try:
            g = self.series.add(src, ds, calling)
        except OSError as exc:  # disk full, permissions: the sender keeps the object and retries
            self.audit("refused", calling_ae=calling, sop_instance_uid=uid, reason=f"cannot store: {describe(exc)}")
            return OUT_OF_RESOURCES
        extra = {}
        if g.new and g.after_job:
            extra["new_gathering"] = (f"the series' earlier instances went to job {g.after_job} ({g.after_state}): "
                                      "this instance starts a new gathering")
        self.audit("received", calling_ae=calling, sop_instance_uid=uid, sha256=sha, series=g.key,
                   generation=g.generation, instances=g.instances, bundles=takers,
                   not_taken={k: why for k, (_, why) in routes.items() if why is not None}, **extra)
        self.wake.set()
        return None if any(not volume and why is None for volume, why in routes.values()) else SUCCESS

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
        series = job.data.get("kind") == "series"  # a gathered series for the volume bundles
        path = self.series.folder(job.id) if series else self.queue.root / "objects" / f"{job.id}.dcm"
        try:
            outcome = self.queue.staged(job.id)
            if outcome is None:
                if not path.exists():
                    raise InvalidInputError("the received object is no longer in the spool's objects/",
                                            expected="the object of a queued job", fix="send the object again")
                outcome = self._run_series(job, path) if series else self._run(job, path)
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
        if "skipped" not in outcome and series:  # delivered: the patient data goes; skipped: kept --keep-days
            self.series.remove(job.id)
        elif "skipped" not in outcome:
            path.unlink(missing_ok=True)
        self.audit("skipped" if "skipped" in outcome else "done", job=job.id,
                   **({"series_instance_uid": job.data.get("series_instance_uid")} if series else
                      {"sop_instance_uid": job.data.get("sop_instance_uid")}), result_uids=sent,
                   **{k: v for k, v in outcome.items() if k in ("results", "skipped", "ms")})

    def _run(self, job: Job, path: Path) -> dict:
        import pydicom

        from .objects import encode

        t0 = time.perf_counter()
        header = pydicom.dcmread(path, defer_size="256 KB")  # pixel data read only when a model needs it
        chosen = [m for m in self.models if bundle_accepts(m.manifest, header)]
        blobs, results, ran = {}, [], []
        for model in chosen:
            result = model.predict(str(path))
            ran.append((model, result))
            for ds in self._objects(model, result, path, header):
                blobs[f"{ds.SOPInstanceUID}.dcm"] = encode(ds)
            results.append({"model_id": result.model_id, "bundle_sha256": result.bundle_sha256,
                            "decision": result.headline(), "backend": result.backend})
        outcome = {"results": results, "ms": round((time.perf_counter() - t0) * 1e3, 1)}
        if not chosen:
            outcome["skipped"] = (f"no bundle takes SOP class {header.get('SOPClassUID', '?')} "
                                  f"modality {header.get('Modality', '?')}")
        self.queue.stage(job.id, blobs, outcome)
        self.audit("ran", job=job.id, bundles=[r["model_id"] for r in results], ms=outcome["ms"],
                   not_taken={k: why for k, (_, why) in self._routes(header).items() if why is not None})
        if self.shadows is not None:  # after the live results are kept; never sent, never raises
            self.shadows.run(job.id, path, header, ran)
        return outcome

    def _run_series(self, job: Job, folder: Path) -> dict:
        """Run every volume bundle that takes a gathered series on the whole of it: one job, not one per slice."""
        import pydicom

        from .objects import encode
        from .series import series_objects

        t0 = time.perf_counter()
        files = self.series.files(job.id)
        header = pydicom.dcmread(files[0], defer_size="256 KB")  # the first slice: routing and the results' header
        routes = self._routes(header)
        with self.lock:
            chosen = [m for m in self.models if routes.get(m.manifest.model_id) == (True, None)]
        blobs, results = {}, []
        for model in chosen:
            result = model.predict([str(f) for f in files])
            for ds in series_objects(result, files, header, intended_use=model.manifest.intended_use,
                                     pdf=self.write_pdf):
                blobs[f"{ds.SOPInstanceUID}.dcm"] = encode(ds)
            results.append({"model_id": result.model_id, "bundle_sha256": result.bundle_sha256,
                            "decision": result.headline(), "backend": result.backend})
        outcome = {"results": results, "ms": round((time.perf_counter() - t0) * 1e3, 1), "instances": len(files)}
        if not chosen:
            outcome["skipped"] = f"no volume bundle takes modality {header.get('Modality', '?')} now"
        self.queue.stage(job.id, blobs, outcome)
        self.audit("ran", job=job.id, series_instance_uid=job.data.get("series_instance_uid"), instances=len(files),
                   bundles=[r["model_id"] for r in results], ms=outcome["ms"],
                   not_taken={k: why for k, (_, why) in routes.items() if why is not None})
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
            for job_id in purge(self.queue, self.keep_s) + self.series.purge(self.keep_s):
                self.audit("purged", job=job_id)
            self.next_purge = time.time() + min(600.0, max(1.0, self.keep_s / 10))
        self._queue_series(self.series.close_quiet())
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

    def _queue_series(self, closed: list) -> None:
        """Queue the job of each complete series (closed by :meth:`SeriesSpool.close_quiet`, or found
        closed without its job after a crash)."""
        for job_id, data in closed:
            state = self.queue.put(job_id, data)
            self.audit("series-complete", job=job_id, series_instance_uid=data["series_instance_uid"],
                       generation=data["generation"], instances=data["instances"], quiet_s=data["quiet_s"], queue=state)
            self.wake.set()

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
        self._queue_series(self.series.recover())
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
                   queue=self.queue.counts(), shadow=self.shadows.describe() if self.shadows else None)
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

    def _open_shadows(self, candidates: list):
        """The --shadow candidates (trust policy as for live bundles; no commissioning: they never answer),
        each matched to the one live bundle of its model id (engine/pacs/shadow_runs.py)."""
        if not candidates:
            return None
        from medexport.engine import open_bundle

        from .shadow_runs import ShadowRuns, check_candidates

        opened = []
        try:
            for c in candidates:
                opened.append(open_bundle(c, **self.open_options))
            check_candidates(opened, self.models)
        except MedError:
            for m in opened + self.models:
                m.close()
            raise
        return ShadowRuns(self.queue.root, opened, self.audit)

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        if self.server is not None:
            self.server.shutdown()
        for t in self.threads:
            t.join(60)
        for m in self.models + self.retired:
            m.close()
        if self.shadows is not None:
            self.shadows.close()
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
