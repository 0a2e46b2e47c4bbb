"""The listener soak (``make soak``; skipped unless MEDEXPORT_SOAK=1, and not collected by ``make test``).

200 mixed studies (chest films, ultrasound, smears, ECGs; tests/study_factory.py) from 4 senders,
paced over the run, into ``medexport listen`` forwarding to a real Orthanc, while: the Orthanc is
stopped for 5 minutes (then restarted on the same ports and storage), the spool's disk (its own
tmpfs) is filled for 30 s, and the listener is killed with SIGKILL once (in the drain after the
outage, while studies still arrive) and restarted on the same spool. Senders behave like
modalities: an object answered 0xA700, or whose association fails, is sent again after a pause.

At the end every source object has exactly one set of results in Orthanc (SR, SEG for a mask,
Encapsulated PDF; found by the source SOP Instance UID they reference), the spool's pending/,
running/, failed/ and outbox/ are empty, and no patient value (names, IDs, birth dates) is in
audit.jsonl or the listener's stderr. Shorter runs for development: MEDEXPORT_SOAK_STUDIES,
MEDEXPORT_SOAK_OUTAGE_S, MEDEXPORT_SOAK_DISKFULL_S.
"""
from __future__ import annotations

import collections
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pacs_fixtures
import pytest
import study_factory
from test_listener import Listen

pytestmark = pytest.mark.skipif(os.environ.get("MEDEXPORT_SOAK") != "1", reason="the soak runs with `make soak`")

STUDIES = int(os.environ.get("MEDEXPORT_SOAK_STUDIES", "200"))
OUTAGE_S = float(os.environ.get("MEDEXPORT_SOAK_OUTAGE_S", "300"))
DISKFULL_S = float(os.environ.get("MEDEXPORT_SOAK_DISKFULL_S", "30"))
SPOOL_MB = int(os.environ.get("MEDEXPORT_SOAK_SPOOL_MB", "256"))
PACS_DOWN_AT_S = 20.0  # the outage starts this long after the first study
TAIL_S = 40.0  # studies keep arriving this long after the PACS is back (the kill hits receiving and sending)
PAUSE_S = 5.0  # a sender's pause before it sends an object again
DRAIN_TIMEOUT_S = 420.0
PREFIX = "SOAKP"  # every patient ID and name starts with it
SENDERS = {"chest_film": "XRAYROOM1", "ultrasound": "USROOM1", "smear": "LABSCOPE1", "ecg": "ECGCART1"}


# -- the spool's own small disk ------------------------------------------------------------------
def mount_tmpfs(folder: Path, mb: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mb}m,mode=700", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"the soak fills the spool's own filesystem: `mount -t tmpfs` failed ({done.stderr.strip()}); "
                    "run it as root (or in a container with CAP_SYS_ADMIN)")


def fill(folder: Path, stop: threading.Event, seconds: float) -> int:
    """Keep the filesystem of ``folder`` full for ``seconds`` (files topped up as space frees), then
    remove the fillers. Returns the bytes held at most."""
    most, n, end = 0, 0, time.monotonic() + seconds
    try:
        while time.monotonic() < end and not stop.is_set():
            free = shutil.disk_usage(folder).free
            if free > 0:
                n += 1
                fd = os.open(folder / f"soak-filler-{n}.bin", os.O_WRONLY | os.O_CREAT, 0o600)
                try:
                    os.posix_fallocate(fd, 0, free)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                finally:
                    os.close(fd)
            most = max(most, sum(p.stat().st_size for p in folder.glob("soak-filler-*.bin")))
            time.sleep(0.2)
    finally:
        for p in folder.glob("soak-filler-*.bin"):
            p.unlink()
    return most


# -- the senders ---------------------------------------------------------------------------------
class Sender(threading.Thread):
    """A modality: sends its objects at their due times, one association each; an object answered
    0xA700, or whose association fails or breaks, is sent again after ``PAUSE_S``."""

    def __init__(self, aet: str, port: int, items: list, stop: threading.Event):
        super().__init__(name=aet, daemon=True)
        self.aet, self.port, self.items, self.stop = aet, port, items, stop  # items: [(due monotonic, ds)]
        self.acked: dict[str, float] = {}
        self.a700 = self.broken = 0
        self.refused: list[tuple[str, str]] = []

    def run(self) -> None:
        from pynetdicom import AE

        ae = AE(ae_title=self.aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
        for ds in {(str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID)): d for _, d in self.items}.values():
            ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        for due, ds in self.items:
            while not self.stop.is_set() and time.monotonic() < due:
                time.sleep(min(0.2, due - time.monotonic()))
            while not self.stop.is_set():
                status = self._send(ae, ds)
                if status == 0:
                    self.acked[str(ds.SOPInstanceUID)] = time.monotonic()
                    break
                if status is not None and status != 0xA700:  # a failure status: a modality gives up
                    self.refused.append((str(ds.SOPInstanceUID), f"0x{status:04X}"))
                    break
                self.stop.wait(PAUSE_S)

    def _send(self, ae, ds) -> int | None:
        """The C-STORE status, or None when the association failed or broke."""
        try:
            assoc = ae.associate("127.0.0.1", self.port, ae_title="MEDEXPORT")
        except (OSError, RuntimeError):
            assoc = None
        if assoc is None or not assoc.is_established:
            self.broken += 1
            return None
        try:
            status = assoc.send_c_store(ds)
        except (OSError, RuntimeError, ValueError):
            status = None
        if assoc.is_established:
            assoc.release()
        if not status or "Status" not in status:
            self.broken += 1
            return None
        code = int(status.Status)
        self.a700 += code == 0xA700
        return code


# -- the PACS ------------------------------------------------------------------------------------
def stop_orthanc(server) -> None:
    server.process.terminate()
    try:
        server.process.wait(30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


def referenced_uids(node) -> set:
    """Every (0008,1155) Referenced SOP Instance UID anywhere in Orthanc's simplified tags."""
    found = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "ReferencedSOPInstanceUID" and isinstance(value, str):
                found.add(value)
            else:
                found |= referenced_uids(value)
    elif isinstance(node, list):
        for item in node:
            found |= referenced_uids(item)
    return found


def results_by_source(server, sources: dict) -> tuple[dict, list]:
    """source SOP Instance UID -> Counter of result modalities in Orthanc; and the results that
    reference no source or one in another patient's study (both must be empty)."""
    by_source: dict = collections.defaultdict(collections.Counter)
    stray = []
    for oid in server.rest("/instances"):
        tags = server.rest(f"/instances/{oid}/simplified-tags")
        hits = referenced_uids(tags) & sources.keys()
        src = sources[next(iter(hits))] if len(hits) == 1 else None
        if src is None or tags.get("StudyInstanceUID") != src.StudyInstanceUID or tags.get("PatientID") != src.PatientID:
            stray.append({"instance": oid, "modality": tags.get("Modality"), "references": sorted(hits)})
            continue
        by_source[str(src.SOPInstanceUID)][tags.get("Modality")] += 1
    return by_source, stray


# -- the spool -----------------------------------------------------------------------------------
def spool_counts(spool: Path) -> dict:
    """Jobs per state, results waiting in outbox/, received objects kept (read while it runs)."""
    def n(pattern):
        return sum(1 for _ in spool.glob(pattern))

    return {"pending": n("pending/*.json"), "running": n("running/*.json"), "done": n("done/*.json"),
            "failed": n("failed/*.json"), "outbox": n("outbox/*"), "objects": n("objects/*.dcm")}


def patient_values(studies: list) -> list[re.Pattern]:
    """Patterns for every patient value used: IDs and names (all start with PREFIX or hold
    GIVEN<n>), birth dates as DA and ISO dates, not inside a longer token (a UID, a hash)."""
    dates = {d for ds in studies for d in (ds.PatientBirthDate, f"{ds.PatientBirthDate[:4]}-"
                                                                 f"{ds.PatientBirthDate[4:6]}-{ds.PatientBirthDate[6:]}")}
    words = [PREFIX, "GIVEN0", *sorted(dates)]
    return [re.compile(rf"(?<![0-9A-Za-z]){re.escape(w)}(?![0-9A-Za-z])" if w in dates else re.escape(w), re.I)
            for w in words]


def backlog_drained_s(audit: list, senders: list, pacs_up: float) -> float | None:
    """Seconds from the PACS's return until the last object acknowledged before it was delivered
    (its last ``done`` audit line); None when one of them has none."""
    from datetime import datetime

    offset = time.time() - time.monotonic()  # audit times are wall clock, the schedule's monotonic
    done = {e.get("sop_instance_uid"): datetime.fromisoformat(e["time"]).timestamp() - offset
            for e in audit if e["event"] == "done"}
    waiting = [uid for s in senders for uid, at in s.acked.items() if at < pacs_up]
    if any(uid not in done for uid in waiting):
        return None
    return round(max((done[uid] for uid in waiting), default=pacs_up) - pacs_up, 1)


@pytest.fixture(scope="module")
def bundles_folder(pneumonia_bundle, fetal_bundle, det_bundle, ecg_bundle, tmp_path_factory):
    """The four demo bundles in one folder (links), as ``--bundles`` takes them."""
    folder = tmp_path_factory.mktemp("soak-bundles")
    for b in (pneumonia_bundle, fetal_bundle, det_bundle, ecg_bundle):
        (folder / Path(b).name).symlink_to(b)
    return folder


@pytest.fixture(scope="module")
def expected_results(bundles_folder, tmp_path_factory) -> dict:
    """kind -> result modalities one source of it gets (SR, SEG for a mask, the overlay's secondary
    capture OT where the result has one, DOC): what the engine makes for a study of that kind."""
    from medexport.engine import open_bundle
    from medexport.engine.pacs.listener import bundle_accepts
    from medexport.engine.pacs.nodes import Node
    from medexport.engine.pacs.objects import result_objects

    folder, out = tmp_path_factory.mktemp("soak-expected"), {}
    overlay = Node("forward", ae_title="ORTHANC", host="127.0.0.1", port=104).send_overlay  # the default
    for kind, make in study_factory.MAKERS.items():
        ds = make(0, "SOAKPREF0", "SOAKPREF^ZERO", study_factory.birth_date(kind, 0))
        ds.save_as(folder / f"{kind}.dcm", enforce_file_format=True)
        for bundle in sorted(bundles_folder.iterdir()):
            with open_bundle(bundle, allow_unsigned=True) as model:
                if bundle_accepts(model.manifest, ds):
                    result = model.predict(str(folder / f"{kind}.dcm"))
                    objs = result_objects(result, str(folder / f"{kind}.dcm"), pdf=b"%PDF-1.4 soak", overlay=overlay)
                    out[kind] = dict(collections.Counter(str(o.Modality) for o in objs))
    return out


def test_soak_outage_full_disk_and_kill_9_deliver_every_result_once(bundles_folder, expected_results, tmp_path):
    t_start = time.monotonic()
    studies = study_factory.mixed(STUDIES, PREFIX)
    sources = {str(ds.SOPInstanceUID): ds for ds in studies}
    spool, store = tmp_path / "spool", tmp_path / "orthanc"
    mount_tmpfs(spool, SPOOL_MB)
    store.mkdir()
    stop = threading.Event()
    events: dict[str, float] = {}
    samples: list[dict] = []
    listen = pacs = None
    try:
        pacs = pacs_fixtures.start_orthanc(store)
        listen = Listen(spool, bundles_folder, pacs.address, "--workers", "2", "--backoff", "1", "--max-backoff", "10",
                        *[a for aet in SENDERS.values() for a in ("--allow", aet)])
        t0 = time.monotonic()
        window = PACS_DOWN_AT_S + OUTAGE_S + TAIL_S
        senders = []
        for kind, aet in SENDERS.items():
            mine = [(t0 + i * window / STUDIES, ds) for i, ds in enumerate(studies) if study_factory.kind_of(ds) == kind]
            senders.append(Sender(aet, listen.port, mine, stop))
        for s in senders:
            s.start()

        def monitor():
            while not stop.is_set():
                c = spool_counts(spool)
                c["t"] = time.monotonic() - t0
                c["alive"] = listen.proc.poll() is None
                samples.append(c)
                stop.wait(1.0)

        threading.Thread(target=monitor, daemon=True).start()

        def at(seconds: float) -> None:
            while time.monotonic() < t0 + seconds:
                assert listen.proc.poll() is None, f"the listener died: {Path(listen.log.name).read_text()[-3000:]}"
                time.sleep(0.2)

        # the PACS goes down; the spool's disk fills a third of the way into the outage
        at(PACS_DOWN_AT_S)
        stop_orthanc(pacs)
        events["pacs_down"] = time.monotonic() - t0
        at(PACS_DOWN_AT_S + max(1.0, (OUTAGE_S - DISKFULL_S) / 3))
        events["disk_full"] = time.monotonic() - t0
        filled = fill(spool, stop, DISKFULL_S)
        events["disk_freed"] = time.monotonic() - t0
        at(PACS_DOWN_AT_S + OUTAGE_S)
        pacs = pacs_fixtures.start_orthanc(store, (pacs.dicom_port, pacs.http_port))  # where it was
        events["pacs_up"] = time.monotonic() - t0

        # kill -9 once, in the drain: after some results went out, while studies still arrive
        delivered_before = spool_counts(spool)["done"]
        deadline = time.monotonic() + 60
        while spool_counts(spool)["done"] < delivered_before + 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        at_kill = spool_counts(spool)
        listen.proc.send_signal(signal.SIGKILL)
        events["killed"] = time.monotonic() - t0
        listen.proc.wait()
        listen.log.close()
        listen.start()  # same spool, same port
        events["restarted"] = time.monotonic() - t0

        for s in senders:
            s.join(window + 300)
        events["all_sent"] = time.monotonic() - t0
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while time.monotonic() < deadline:
            c = spool_counts(spool)
            if c["done"] + c["failed"] >= STUDIES and not (c["pending"] or c["running"] or c["outbox"]):
                break
            assert listen.proc.poll() is None, f"the listener died: {Path(listen.log.name).read_text()[-3000:]}"
            time.sleep(0.5)
        events["drained"] = time.monotonic() - t0
        final = spool_counts(spool)
        status = subprocess.run([sys.executable, "-m", "medexport.export.cli", "listen", "status", "--spool",
                                 str(spool), "--json"], capture_output=True, text=True, timeout=60)
        listen.stop()

        # what came back
        by_source, stray = results_by_source(pacs, sources)
        audit_text = (spool / "audit.jsonl").read_text(encoding="utf-8", errors="replace")
        log_text = Path(listen.log.name).read_text(encoding="utf-8", errors="replace")
        audit = [json.loads(line) for line in audit_text.splitlines() if line.strip()]
        done_events = collections.Counter(e.get("sop_instance_uid") for e in audit if e["event"] == "done")
        acked = {uid for s in senders for uid in s.acked}
        wrong = {uid: dict(by_source.get(uid, {})) for uid, ds in sources.items()
                 if dict(by_source.get(uid, {})) != expected_results[study_factory.kind_of(ds)]}
        leaks = [(where, p.pattern, m.group(0)) for where, text in (("audit.jsonl", audit_text), ("stderr", log_text))
                 for p in patient_values(studies) for m in [p.search(text)] if m]
        summary = {
            "studies": STUDIES, "results_per_kind": expected_results, "acknowledged": len(acked), "results_in_orthanc": sum(sum(c.values()) for c in
                                                                                       by_source.values()),
            "wall_s": round(time.monotonic() - t_start, 1), "schedule_s": {k: round(v, 1) for k, v in events.items()},
            "drain_after_pacs_up_s": round(events["drained"] - events["pacs_up"], 1),
            "outage_backlog_drained_s": backlog_drained_s(audit, senders, events["pacs_up"] + t0),
            "max_backlog_objects": max((c["objects"] for c in samples), default=0),
            "max_waiting_jobs": max((c["pending"] + c["running"] for c in samples), default=0),
            "a700_answers": sum(s.a700 for s in senders), "broken_associations": sum(s.broken for s in senders),
            "refused": [r for s in senders for r in s.refused], "filler_mb": round(filled / 2 ** 20, 1),
            "at_kill": at_kill, "final_spool": final, "recovered_after_kill": sum(e["event"] == "recovered" for e in audit),
            "sources_delivered_twice_per_audit": sum(n > 1 for n in done_events.values()),
            "audit_events": dict(collections.Counter(e["event"] for e in audit)),
        }
        print("\nSOAK SUMMARY " + json.dumps(summary, indent=1))
        print("listen status --json:", status.stdout.strip() or status.stderr.strip()[-2000:])
        (Path(os.environ.get("MEDEXPORT_SOAK_REPORT", tmp_path / "soak-summary.json"))).write_text(
            json.dumps(summary, indent=1))

        assert acked == set(sources), f"{len(sources) - len(acked)} objects never acknowledged; refused {summary['refused']}"
        assert not stray, f"results that reference no source of theirs: {stray[:5]}"
        assert not wrong, (f"{len(wrong)} sources without exactly one set of results, e.g. "
                           f"{dict(list(wrong.items())[:5])}; failed jobs: "
                           f"{[json.loads(p.read_text()).get('reason') for p in (spool / 'failed').glob('*.json')][:3]}")
        assert final["pending"] == final["running"] == final["failed"] == final["outbox"] == 0, final
        assert final["done"] == STUDIES, final
        assert not leaks, f"patient values in the logs: {leaks[:5]}"
        assert summary["a700_answers"] > 0, "the full disk was never answered 0xA700: the scenario did not happen"
    finally:
        stop.set()
        if listen is not None and listen.proc.poll() is None:
            listen.proc.kill()
            listen.proc.wait()
        if pacs is not None and pacs.process.poll() is None:
            stop_orthanc(pacs)
        if subprocess.run(["umount", str(spool)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(spool)], capture_output=True)
