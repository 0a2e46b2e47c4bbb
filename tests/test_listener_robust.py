"""The listener never loses a study: full disk, colliding and mismatched UIDs, a long PACS outage,
starvation by idle connections, retention and privacy (issue 24). Real Orthanc, real tmpfs, real bundle."""
from __future__ import annotations

import copy
import errno
import json
import os
import socket
import socketserver
import subprocess
import threading
import time
from pathlib import Path

import pydicom
import pytest
from pacs_fixtures import free_port, orthanc  # noqa: F401 (session fixture)
from pydicom.uid import generate_uid
from test_listener import Listen, results_in_orthanc

from medexport.engine.pacs import PacsError, scu
from medexport.engine.pacs.nodes import Node


@pytest.fixture(scope="module")
def ecg(pydicom_file):
    ds = pydicom.dcmread(pydicom_file("waveform_ecg.dcm"))
    del ds.WaveformAnnotationSequence
    return ds


def one(template, patient: str, uid: str | None = None):
    ds = copy.deepcopy(template)
    ds.PatientID, ds.PatientName = patient, f"TEST^{patient}"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid or generate_uid()
    return ds


def node(listener, calling="CART1", called="MEDEXPORT", **kw) -> Node:
    return Node("l", ae_title=called, host="127.0.0.1", port=listener.port, calling_ae=calling, **kw)


def wait_for(cond, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def audit(spool: Path) -> list[dict]:
    return [json.loads(line) for line in (spool / "audit.jsonl").read_text().splitlines()]


@pytest.fixture
def listener_factory(ecg_bundle):
    from medexport.engine.pacs.listener import Listener

    made = []

    def make(spool, **kw):
        kw.setdefault("host", "127.0.0.1")
        made.append(Listener(spool, [ecg_bundle], port=0, **kw))
        return made[-1]

    yield make
    for ls in made:
        ls.stop()


def test_uids_that_differ_only_in_a_letter_are_two_jobs(orthanc, listener_factory, ecg, tmp_path):  # noqa: F811
    base = "1.2.826.0.1.3680043.8.498." + "7" * 30  # non-conformant UIDs some modalities send
    a, b = one(ecg, "COLLIDE1", base + ".1a"), one(ecg, "COLLIDE1", base + ".1b")
    ls = listener_factory(tmp_path / "spool", forward=orthanc.node(calling_ae="MEDEXPORT"), allow=["CART1"]).start()
    assert scu.send(node(ls), [a, b]) == [a.SOPInstanceUID, b.SOPInstanceUID]
    wait_for(lambda: ls.queue.counts()["failed"] == 2)  # the engine refuses non-conformant UIDs, each on its own
    jobs = [json.loads(p.read_text()) for p in (ls.queue.root / "failed").glob("*.json")]
    assert sorted(j["sop_instance_uid"] for j in jobs) == sorted([a.SOPInstanceUID, b.SOPInstanceUID])
    assert all("(0008,0018)" in j["reason"] for j in jobs)
    assert len(list((ls.queue.root / "objects").glob("*.dcm"))) == 2  # both kept, neither overwritten


def test_a_dataset_uid_other_than_the_commands_is_refused_and_audited(listener_factory, ecg, tmp_path):
    ds = one(ecg, "MISMATCH1", "1.2.826.0.1.3680043.8.498.1234567")
    path = tmp_path / "mismatch.dcm"
    ds.save_as(path, enforce_file_format=True)
    # pynetdicom takes the command's Affected SOP Instance UID from the file meta (the first copy)
    path.write_bytes(path.read_bytes().replace(b"498.1234567", b"498.7654321", 1))
    assert pydicom.dcmread(path).file_meta.MediaStorageSOPInstanceUID != ds.SOPInstanceUID
    ls = listener_factory(tmp_path / "spool", allow=["CART1"]).start()
    from pynetdicom import AE, _config

    ae = AE(ae_title="CART1")
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", ls.port, ae_title="MEDEXPORT")
    _config.STORE_SEND_CHUNKED_DATASET = True  # the file as it is: command UID from its meta
    try:
        status = assoc.send_c_store(path)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
        assoc.release()
    assert int(status.Status) == 0xC212
    [refused] = [e for e in audit(ls.queue.root) if e["event"] == "refused"]
    assert "(0000,1000) Affected SOP Instance UID" in refused["reason"]
    assert ls.queue.counts()["pending"] == 0 and not list((ls.queue.root / "objects").iterdir())


@pytest.fixture
def small_disk(tmp_path):
    """A real 8 MiB filesystem (tmpfs) that the test can fill."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)]).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)])


def fill(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_a_full_disk_answers_out_of_resources_workers_wait_and_resume(orthanc, listener_factory, ecg,
                                                                        small_disk):  # noqa: F811
    from medexport.engine.pacs.files import durable_replace
    from medexport.engine.pacs.listener import job_key
    from medexport.engine.pacs.objects import encode

    ls = listener_factory(small_disk / "spool", forward=orthanc.node(calling_ae="MEDEXPORT"), allow=["CART1"],
                          workers=2)
    first = one(ecg, "DISKFULL1")
    job = job_key(first.SOPInstanceUID)
    durable_replace(ls.queue.root / "objects" / f"{job}.dcm", encode(first))
    ls.queue.put(job, {"sop_instance_uid": first.SOPInstanceUID, "received": time.time()})
    filler = fill(small_disk)
    size = (ls.queue.root / "audit.jsonl").stat().st_size if (ls.queue.root / "audit.jsonl").exists() else 0
    assert ls.audit("probe") is False  # a line that cannot be written whole is not written at all
    assert not (ls.queue.root / "audit.jsonl").exists() or (ls.queue.root / "audit.jsonl").stat().st_size == size
    ls.start()
    time.sleep(4)  # the worker meets ENOSPC writing the results and backs off
    assert all(t.is_alive() for t in ls.threads) and ls.fatal is None
    assert ls.queue.state(job) in ("pending", "running")
    with pytest.raises(PacsError, match="0xA700"):
        scu.send(node(ls), [one(ecg, "DISKFULL1")])
    filler.unlink()  # space returns
    wait_for(lambda: ls.queue.is_done(job), timeout=90)
    second = one(ecg, "DISKFULL1")
    assert scu.send(node(ls), [second]) == [second.SOPInstanceUID]
    wait_for(lambda: ls.queue.is_done(job_key(second.SOPInstanceUID)), timeout=60)
    assert results_in_orthanc(orthanc, "DISKFULL1")["SR"] == 2
    lines = audit(ls.queue.root)  # every line whole JSON (audit() parses each)
    events = [e["event"] for e in lines]
    assert "probe" not in events and events.count("done") == 2
    # what could not be written is counted once space returns: the refusals and the probe are not lost silently
    gaps = [e["lines_lost"] for e in lines if e["event"] == "audit-gap"]
    assert gaps and sum(g.get("probe", 0) for g in gaps) == 1 and sum(g.get("refused", 0) for g in gaps) >= 1


class Proxy(socketserver.ThreadingTCPServer):
    """A TCP relay to ``target``: the forward node 'comes back' when it starts."""
    daemon_threads = allow_reuse_address = True

    def __init__(self, port: int, target: tuple):
        class Relay(socketserver.BaseRequestHandler):
            def handle(self):
                up = socket.create_connection(target)

                def pipe(a, b):
                    try:
                        while data := a.recv(65536):
                            b.sendall(data)
                    except OSError:
                        pass
                    for s in (a, b):
                        try:
                            s.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass

                t = threading.Thread(target=pipe, args=(up, self.request), daemon=True)
                t.start()
                pipe(self.request, up)
                t.join(30)

        super().__init__(("127.0.0.1", port), Relay)


def test_a_pacs_outage_keeps_the_results_and_resends_without_rerunning(orthanc, listener_factory, ecg,
                                                                       tmp_path):  # noqa: F811
    from medexport.engine.pacs.spool import status

    port = free_port()
    ls = listener_factory(tmp_path / "spool", forward=Node("down", ae_title="ORTHANC", host="127.0.0.1", port=port,
                                                           calling_ae="MEDEXPORT"),
                          allow=["CART1"], backoff_s=0.2, max_backoff_s=1.0).start()
    ds = one(ecg, "OUTAGE1")
    scu.send(node(ls), [ds])
    wait_for(lambda: sum(e["event"] == "retry" for e in audit(ls.queue.root)) >= 4)
    info = status(ls.queue.root)
    assert info["awaiting_delivery"] == 1 and info["queue"]["failed"] == 0
    assert "cannot connect" in info["last_errors"][0]["error"] and info["oldest_waiting"]["attempts"] >= 3
    proxy = Proxy(port, ("127.0.0.1", orthanc.dicom_port))
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        wait_for(lambda: ls.queue.counts()["done"] == 1, timeout=60)
    finally:
        proxy.shutdown()
        proxy.server_close()
    events = [e["event"] for e in audit(ls.queue.root)]
    assert events.count("ran") == 1  # the model ran once; only the send was retried
    assert results_in_orthanc(orthanc, "OUTAGE1") == {"SR": 1, "SR_series": 1, "DOC": 1, "DOC_series": 1}
    assert not list((ls.queue.root / "objects").iterdir()) and not list((ls.queue.root / "outbox").iterdir())


def test_idle_connections_cannot_starve_a_sender_and_the_called_ae_is_checked(listener_factory, tmp_path):
    ls = listener_factory(tmp_path / "spool", idle_timeout_s=2, max_per_peer=2).start()
    idle = []
    for _ in range(6):  # a host holding connections open, from another loopback address
        s = socket.create_connection(("127.0.0.1", ls.port), source_address=("127.0.0.2", 0))
        s.settimeout(5)
        idle.append(s)
        time.sleep(0.3)
    assert scu.echo(node(ls)) > 0  # another address still gets in
    closed_at_once = sum(1 for s in idle[2:] if s.recv(1) == b"")
    assert closed_at_once == 4
    time.sleep(3)
    assert all(s.recv(1) == b"" for s in idle[:2])  # dropped after the idle timeout
    with pytest.raises(PacsError, match="rejected the association"):
        scu.echo(node(ls, called="SOMEONE"))
    events = audit(ls.queue.root)
    assert sum(e["event"] == "connection-refused" for e in events) == 4
    assert any(e["event"] == "warning" and "--allow" in e["reason"] for e in events)


def test_an_object_over_the_size_limit_is_refused(listener_factory, ecg, tmp_path):
    ds = one(ecg, "BIG1")
    ls = listener_factory(tmp_path / "spool", max_object_mb=0.05).start()
    with pytest.raises(PacsError, match="0xA700"):
        scu.send(node(ls), [ds])
    [refused] = [e for e in audit(ls.queue.root) if e["event"] == "refused"]
    assert "--max-object-mb" in refused["reason"] and not list((ls.queue.root / "objects").iterdir())


SECRET = {"PatientName": "ZQXSECRET^WOLFGANG", "PatientID": "PIDZQX4711", "PatientBirthDate": "19230405"}


def test_retention_decode_audit_and_no_patient_value_in_any_log(orthanc, ecg_bundle, ecg, pydicom_file,
                                                                tmp_path):  # noqa: F811
    listen = Listen(tmp_path / "spool", ecg_bundle, orthanc.address, "--keep-days", "0.00003", "--allow", "CART1")
    try:
        good = one(ecg, "x")
        ct = pydicom.dcmread(pydicom_file("CT_small.dcm"))  # no bundle takes it: skipped, kept, then purged
        ct.SOPInstanceUID = ct.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        bad = one(ecg, "x")
        for ds in (good, ct, bad):
            for k, v in SECRET.items():
                setattr(ds, k, v)
        from pydicom.dataelem import RawDataElement
        from pydicom.tag import Tag

        for tag, vr, raw in ((0x00101010, "AS", b"ZQXAGE"), (0x00281050, "DS", b"ZQXDS ")):  # undecodable
            bad._dict[Tag(tag)] = RawDataElement(Tag(tag), vr, len(raw), raw, 0, False, True)
        assert scu.send(listen.node(), [good, ct]) == [good.SOPInstanceUID, ct.SOPInstanceUID]
        try:
            scu.send(listen.node(), [bad])
        except PacsError as exc:
            assert "0xC210" in str(exc)
        listen.wait_done(2, timeout=90)
        events = listen.audit()
        [skipped] = [e for e in events if e["event"] == "skipped"]
        wait_for(lambda: any(e["event"] == "purged" and e["job"] == skipped["job"] for e in listen.audit()), 30)
        assert not list((listen.spool / "objects").iterdir())  # done: deleted; skipped: purged after --keep-days
    finally:
        listen.stop()
    text = (listen.spool / "audit.jsonl").read_text() + (tmp_path / "spool.log").read_text()
    for value in (*SECRET.values(), "ZQXAGE", "ZQXDS", "ZQXSECRET"):
        assert value not in text, value


def test_pacs_send_skips_files_that_are_not_dicom(orthanc, ecg, tmp_path):  # noqa: F811
    import sys

    folder = tmp_path / "out"
    folder.mkdir()
    one(ecg, "SENDDIR1").save_as(folder / "a.dcm", enforce_file_format=True)
    (folder / "report.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")
    run = subprocess.run([sys.executable, "-m", "medexport.export.cli", "pacs", "send", "--node", orthanc.address,
                          str(folder)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "sent 1 objects" in run.stdout and "skipped" in run.stderr and "report.pdf" in run.stderr
    assert "Traceback" not in run.stderr
