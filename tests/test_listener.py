"""``medexport listen`` against a real PACS (Orthanc): studies arrive, the ECG model runs, SR and PDF
go to Orthanc. A 200-study burst from 4 senders, the same burst with ``kill -9`` halfway, refusals."""
from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pydicom
import pytest
from pacs_fixtures import free_port, orthanc  # noqa: F401 (session fixture)
from pydicom.uid import generate_uid

from medexport.engine.pacs import PacsError
from medexport.engine.pacs.nodes import Node

BURST, SENDERS = 200, 4
load = pytest.mark.skipif(os.environ.get("MEDEXPORT_SKIP_LOAD") == "1", reason="MEDEXPORT_SKIP_LOAD=1")


class Listen:
    """A ``medexport listen`` subprocess on a free port, with its spool folder."""

    def __init__(self, spool: Path, bundle: Path, forward: str, *extra: str):
        self.spool, self.port = spool, free_port()
        self.args = [sys.executable, "-m", "medexport.export.cli", "listen", "--bundles", str(bundle), "--port",
                     str(self.port), "--host", "127.0.0.1", "--ae-title", "MEDEXPORT", "--forward", forward,
                     "--spool", str(spool), "--allow-unsigned", *extra]  # the session's bundles are unsigned
        self.start()

    def start(self) -> None:
        self.log = open(self.spool.parent / f"{self.spool.name}.log", "ab")
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=self.log)
        line = self.proc.stdout.readline().decode()
        assert "listening as MEDEXPORT" in line, (line, (self.spool.parent / f"{self.spool.name}.log").read_text()[-3000:])

    def node(self, calling: str = "CART1") -> Node:
        return Node("listener", ae_title="MEDEXPORT", host="127.0.0.1", port=self.port, calling_ae=calling)

    def count(self, state: str) -> int:
        return len(list((self.spool / state).glob("*.json")))

    def wait_done(self, n: int, timeout: float = 150) -> None:
        deadline = time.monotonic() + timeout
        while self.count("done") + self.count("failed") < n and time.monotonic() < deadline:
            assert self.proc.poll() is None, "the listener died"
            time.sleep(0.2)

    def audit(self) -> list[dict]:
        return [json.loads(line) for line in (self.spool / "audit.jsonl").read_text().splitlines()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
        self.log.close()


@pytest.fixture(scope="module")
def ecg_template(pydicom_file, tmp_path_factory):
    """The pydicom 12-lead ECG without its 77 annotation items (they make the SR writer 4x slower)."""
    ds = pydicom.dcmread(pydicom_file("waveform_ecg.dcm"))
    del ds.WaveformAnnotationSequence
    return ds


def studies(template, n: int, patient: str) -> list:
    """``n`` ECG objects, each its own study, all for one test patient."""
    out = []
    for i in range(n):
        ds = copy.deepcopy(template)
        ds.PatientID, ds.PatientName = patient, f"LOAD^{patient}"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.AccessionNumber = f"A{i:05d}"
        out.append(ds)
    return out


def burst(node: Node, datasets: list, senders: int, stop: threading.Event | None = None) -> set:
    """Send ``datasets`` split over ``senders`` concurrent associations; the SOP UIDs answered Success.
    A sender whose association breaks (the listener killed) stops; its remaining objects stay unsent."""
    from pynetdicom import AE

    ok, lock = set(), threading.Lock()

    def send(part):
        ae = AE(ae_title=node.calling_ae)
        ae.add_requested_context(part[0].SOPClassUID, part[0].file_meta.TransferSyntaxUID)
        assoc = ae.associate(node.host, node.port, ae_title=node.ae_title)
        if not assoc.is_established:
            return
        for ds in part:
            if stop is not None and stop.is_set():
                break
            try:
                status = assoc.send_c_store(ds)
            except (RuntimeError, OSError):
                break
            if not status or int(status.Status) != 0:
                break
            with lock:
                ok.add(str(ds.SOPInstanceUID))
        assoc.release() if assoc.is_established else None

    threads = [threading.Thread(target=send, args=(datasets[i::senders],)) for i in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return ok


def results_in_orthanc(orthanc, patient: str) -> dict:  # noqa: F811
    """Modality -> number of result instances Orthanc holds for ``patient`` (and the series they are in)."""
    out = {}
    for modality in ("SR", "DOC"):
        found = orthanc.find("Instance", PatientID=patient, Modality=modality)
        out[modality] = len(found)
        out[f"{modality}_series"] = len({f["ParentSeries"] for f in found})  # one series per source object
    return out


@pytest.fixture(scope="module")
def ecg_only(ecg_bundle):
    return ecg_bundle


@pytest.mark.slow
@pytest.mark.load
@load
def test_a_burst_of_200_studies_from_4_senders_all_reach_the_pacs(orthanc, ecg_only, ecg_template, tmp_path):  # noqa: F811
    listen = Listen(tmp_path / "spool", ecg_only, orthanc.address, "--workers", "2")
    try:
        t0 = time.monotonic()
        sent = burst(listen.node(), studies(ecg_template, BURST, "BURST1"), SENDERS)
        received_s = time.monotonic() - t0
        assert len(sent) == BURST
        listen.wait_done(BURST)
        total_s = time.monotonic() - t0
        assert listen.count("done") == BURST and listen.count("failed") == 0
        assert results_in_orthanc(orthanc, "BURST1") == {"SR": BURST, "SR_series": BURST, "DOC": BURST,
                                                          "DOC_series": BURST}
        events = [e["event"] for e in listen.audit()]
        assert events.count("received") == BURST and events.count("done") == BURST
        print(f"\n200 studies: received in {received_s:.1f} s, all results in Orthanc after {total_s:.1f} s")
    finally:
        listen.stop()


@pytest.mark.slow
@pytest.mark.load
@load
def test_kill_9_halfway_loses_nothing_and_duplicates_nothing(orthanc, ecg_only, ecg_template, tmp_path):  # noqa: F811
    listen = Listen(tmp_path / "spool", ecg_only, orthanc.address, "--workers", "2")
    datasets = studies(ecg_template, BURST, "BURST2")
    by_uid = {str(ds.SOPInstanceUID): ds for ds in datasets}
    killer_done = threading.Event()

    def kill_halfway():
        while len(list((listen.spool / "objects").glob("*.dcm"))) + listen.count("done") < BURST // 2:
            time.sleep(0.02)
        listen.proc.send_signal(signal.SIGKILL)  # mid-receive and mid-processing
        listen.proc.wait()
        killer_done.set()

    killer = threading.Thread(target=kill_halfway)
    killer.start()
    acknowledged = burst(listen.node(), datasets, SENDERS)
    killer.join(120)
    assert killer_done.is_set() and listen.proc.returncode == -signal.SIGKILL
    done_before = listen.count("done")
    assert done_before < BURST and len(acknowledged) < BURST, "the kill came too late to test anything"
    listen.log.close()
    listen.start()  # same spool, same port
    recovered = [e for e in listen.audit() if e["event"] == "recovered"]
    # the senders re-send what was never acknowledged (a modality keeps unacknowledged objects)
    rest = [ds for uid, ds in by_uid.items() if uid not in acknowledged]
    assert burst(listen.node(), rest, SENDERS) == {str(ds.SOPInstanceUID) for ds in rest}
    try:
        listen.wait_done(BURST)
        assert listen.count("done") == BURST and listen.count("failed") == 0 and listen.count("pending") == 0
        assert results_in_orthanc(orthanc, "BURST2") == {"SR": BURST, "SR_series": BURST, "DOC": BURST,
                                                          "DOC_series": BURST}
        print(f"\nkill -9 after {len(acknowledged)} acknowledged, {done_before} done, {len(recovered)} running jobs "
              f"recovered; all {BURST} in Orthanc once")
    finally:
        listen.stop()


def test_refusals_unknown_ae_and_a_corrupt_object_and_it_keeps_serving(orthanc, ecg_only, ecg_template, tmp_path):  # noqa: F811
    from medexport.engine.pacs import scu

    listen = Listen(tmp_path / "spool", ecg_only, orthanc.address, "--allow", "CART1", "--allow", "XRAY")
    try:
        with pytest.raises(PacsError, match="rejected the association"):
            scu.echo(listen.node("INTRUDER"))
        assert scu.echo(listen.node("CART1")) > 0
        image = pydicom.dcmread(__import__("pydicom.data", fromlist=["x"]).get_testdata_file("CT_small.dcm"))
        image.PixelData = image.PixelData[: len(image.PixelData) // 2]  # truncated in transit
        with pytest.raises(PacsError, match="0xC210"):
            scu.send(listen.node("XRAY"), [image])
        [good] = studies(ecg_template, 1, "REFUSE1")
        assert scu.send(listen.node("CART1"), [good]) == [good.SOPInstanceUID]  # still serving
        listen.wait_done(1, timeout=60)
        audit = listen.audit()
        assert any(e["event"] == "association-rejected" and e["calling_ae"] == "INTRUDER" for e in audit)
        [refused] = [e for e in audit if e["event"] == "refused"]
        assert refused["calling_ae"] == "XRAY" and "(7FE0,0010) Pixel Data" in refused["reason"]
        assert results_in_orthanc(orthanc, "REFUSE1")["SR"] == 1
    finally:
        listen.stop()


def test_an_unreachable_forward_node_is_retried_then_failed_with_the_reason(ecg_only, ecg_template, tmp_path):
    from medexport.engine.pacs import scu

    dead = f"NOBODY@127.0.0.1:{free_port()}"
    listen = Listen(tmp_path / "spool", ecg_only, dead, "--max-attempts", "3", "--backoff", "0.2")
    try:
        [ds] = studies(ecg_template, 1, "RETRY1")
        scu.send(listen.node(), [ds])
        listen.wait_done(1, timeout=60)
        [failed] = [json.loads(p.read_text()) for p in (listen.spool / "failed").glob("*.json")]
        assert failed["attempts"] == 3 and len(failed["errors"]) == 3 and "cannot connect" in failed["reason"]
        assert [e["event"] for e in listen.audit()].count("retry") == 2
        assert (listen.spool / "objects" / f"{failed['id']}.dcm").is_file()  # kept for a person to re-queue
    finally:
        listen.stop()
    assert not os.listdir(listen.spool / "running")


def test_a_job_rerun_after_its_results_were_sent_stores_nothing_twice(orthanc, ecg_only, ecg_template, tmp_path):  # noqa: F811
    """The window ``kill -9`` may hit: results sent, done-marker not yet written. The re-run sends
    the same UIDs and Orthanc keeps one copy of each."""
    from medexport.engine.pacs.files import durable_replace
    from medexport.engine.pacs.listener import Listener
    from medexport.engine.pacs.objects import encode

    listener = Listener(tmp_path / "spool", [ecg_only], forward=orthanc.node(calling_ae="MEDEXPORT"))
    [ds] = studies(ecg_template, 1, "RERUN1")
    try:
        for attempt in range(2):
            durable_replace(listener.queue.root / "objects" / "x.dcm", encode(ds))
            (listener.queue.root / "done" / "x.json").unlink(missing_ok=True)  # as if killed before the marker
            assert listener.queue.put("x", {"sop_instance_uid": ds.SOPInstanceUID}) == "queued"
            listener.process(listener.queue.claim())
            assert listener.queue.is_done("x")
    finally:
        listener.stop()
    audit = [json.loads(line) for line in (tmp_path / "spool" / "audit.jsonl").read_text().splitlines()]
    sent = [e["result_uids"] for e in audit if e["event"] == "done"]
    assert len(sent) == 2 and sent[0] == sent[1] and len(sent[0]) == 2
    assert results_in_orthanc(orthanc, "RERUN1") == {"SR": 1, "SR_series": 1, "DOC": 1, "DOC_series": 1}


def test_the_listener_refuses_unsigned_bundles_without_a_trust_store(ecg_only, tmp_path):
    """The one trust policy: the service requires a store (its environment file names one) and runs
    unsigned bundles only when told to with --allow-unsigned."""
    env = {k: v for k, v in os.environ.items() if k != "MEDEXPORT_TRUST"} | {"MEDEXPORT_HOME": str(tmp_path / "home")}
    proc = subprocess.run([sys.executable, "-m", "medexport.export.cli", "listen", "--bundles", str(ecg_only),
                           "--port", "0", "--host", "127.0.0.1", "--spool", str(tmp_path / "spool")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "no trust store is configured" in proc.stderr and "Traceback" not in proc.stderr
