"""The listener gathers a series before a volume bundle runs on it, and routes by intended use, against
a real PACS (Orthanc): a real MR series (the hippocampus crops' DICOM) and a chest film sent in one
association; one volume job on the whole series (not one per slice), SEG / SR / PDF in Orthanc
referencing the series, the film to the image bundle only; ``kill -9`` while gathering; an instance
arriving after its series ran starts a new gathering (issue 29 part 3)."""
from __future__ import annotations

import copy
import io
import signal
import time

import pydicom
import pytest
from pacs_fixtures import orthanc  # noqa: F401 (session fixture)
from pydicom.uid import generate_uid
from test_listener import Listen
from test_listener_kinds import wrap
from waiting import wait_for

from medexport.engine.pacs import scu

CROP = "volumes/hippocampus-mr/dicom/Study2/14_HCropVolume"  # 35 real MR slices


def mr_series(shared, patient: str, folder: str = CROP) -> list:
    """The real MR series of ``folder``, re-identified for one test: a new patient ID and new study,
    series and instance UIDs (everything else, pixels and geometry included, as stored)."""
    study, series = generate_uid(), generate_uid()
    out = []
    for path in sorted((shared / folder).glob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.PatientID, ds.PatientName = patient, f"SERIES^{patient}"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out.append(ds)
    return out


@pytest.fixture(scope="module")
def two_bundles(tmp_path_factory, hippo_bundle, pneumonia_bundle):
    """hippocampus-mr (a volume bundle, MR head) beside pneumonia-cxr (an image bundle, CR/DX chest)."""
    folder = tmp_path_factory.mktemp("series-bundles")
    for b in (hippo_bundle, pneumonia_bundle):
        (folder / b.name).symlink_to(b, target_is_directory=True)
    return folder


def instances_in_orthanc(orthanc, patient: str) -> dict:  # noqa: F811
    """Modality -> the datasets Orthanc holds for ``patient``."""
    out: dict = {}
    for found in orthanc.find("Instance", PatientID=patient):
        ds = pydicom.dcmread(io.BytesIO(orthanc.rest(f"/instances/{found['ID']}/file")))
        out.setdefault(str(ds.Modality), []).append(ds)
    return out


def test_a_series_runs_once_on_the_volume_bundle_and_a_film_goes_to_the_image_bundle(
        orthanc, two_bundles, shared, cxr, tmp_path):  # noqa: F811
    series = mr_series(shared, "SERIESMR1")
    film = wrap(cxr[0], "CR", "SERIESCR1", BodyPartExamined="CHEST", ViewPosition="AP", PatientAge="003Y")
    listen = Listen(tmp_path / "spool", two_bundles, orthanc.address, "--allow", "MRI1", "--series-quiet", "2")
    try:
        sent = series[:20] + [film] + series[20:]  # one association: MR slices with a chest film among them
        assert scu.send(listen.node("MRI1"), sent) == [str(d.SOPInstanceUID) for d in sent]
        assert wait_for(lambda: listen.count("done") + listen.count("failed") >= 2, timeout=120)
        time.sleep(3)  # nothing else may run: one job per series, not one per slice
        assert listen.count("done") == 2 and listen.count("failed") == 0 and listen.count("pending") == 0
        events = listen.audit()
        ran = [e for e in events if e["event"] == "ran"]
        [volume] = [e for e in ran if "series_instance_uid" in e]
        [image] = [e for e in ran if "series_instance_uid" not in e]
        assert volume["bundles"] == ["hippocampus-mr"] and volume["instances"] == len(series) == 35
        assert volume["series_instance_uid"] == series[0].SeriesInstanceUID
        assert "(0008,0060) Modality is 'MR'" in volume["not_taken"]["pneumonia-cxr"]
        assert image["bundles"] == ["pneumonia-cxr"]
        assert "(0008,0060) Modality is 'CR'" in image["not_taken"]["hippocampus-mr"]
        gathered = [e for e in events if e["event"] == "received" and "series" in e]
        assert len(gathered) == 35 and {e["bundles"][0] for e in gathered} == {"hippocampus-mr"}
        assert [e["instances"] for e in gathered] == list(range(1, 36))
        [complete] = [e for e in events if e["event"] == "series-complete"]
        assert complete["instances"] == 35 and complete["generation"] == 0 and complete["quiet_s"] == 2
        assert not list((listen.spool / "series" / "closed").iterdir())  # delivered: the slices are gone
        assert not list((listen.spool / "series" / "gathering").iterdir())
        assert not list((listen.spool / "objects").iterdir())

        # the same slice again after its series ran: a new gathering, and the audit says why
        again = copy.deepcopy(series[5])
        assert scu.send(listen.node("MRI1"), [again]) == [str(again.SOPInstanceUID)]
        # the job's file moves before its audit line is written: wait for the line
        assert wait_for(lambda: any(e["event"] == "failed" for e in listen.audit()), timeout=60)
        last = [e for e in listen.audit() if e["event"] == "received"][-1]
        assert last["generation"] == 1 and last["instances"] == 1
        assert "starts a new gathering" in last["new_gathering"] and complete["job"] in last["new_gathering"]
        assert listen.count("failed") == 1 and listen.count("done") == 2  # one slice is no volume: nothing sent
        [failed] = [e for e in listen.audit() if e["event"] == "failed"]
        assert "1 slice" in failed["reason"]
    finally:
        listen.stop()

    mr = instances_in_orthanc(orthanc, "SERIESMR1")
    slices = {str(d.SOPInstanceUID) for d in series}
    assert {k: len(v) for k, v in mr.items()} == {"DOC": 1, "SEG": 1, "SR": 1}
    [seg], [sr], [doc] = mr["SEG"], mr["SR"], mr["DOC"]
    [ref] = seg.ReferencedSeriesSequence
    assert ref.SeriesInstanceUID == series[0].SeriesInstanceUID
    assert {str(i.ReferencedSOPInstanceUID) for i in ref.ReferencedInstanceSequence} == slices
    assert int(seg.NumberOfFrames) == 2 * 35 and len(seg.SegmentSequence) == 2  # anterior, posterior
    assert seg.StudyInstanceUID == sr.StudyInstanceUID == doc.StudyInstanceUID == series[0].StudyInstanceUID
    evidence = {str(i.ReferencedSOPInstanceUID) for s in sr.CurrentRequestedProcedureEvidenceSequence
                for r in s.ReferencedSeriesSequence for i in r.ReferencedSOPSequence}
    assert slices | {str(seg.SOPInstanceUID)} <= evidence
    assert bytes(doc.EncapsulatedDocument).startswith(b"%PDF-")
    cr = instances_in_orthanc(orthanc, "SERIESCR1")
    assert "SEG" not in cr and len(cr["SR"]) == 1 and len(cr["DOC"]) == 1  # the film: pneumonia-cxr's results only


def test_kill_9_while_gathering_keeps_the_slices_and_the_series_completes(orthanc, two_bundles, shared,
                                                                            tmp_path):  # noqa: F811
    series = mr_series(shared, "SERIESMR2")
    listen = Listen(tmp_path / "spool", two_bundles, orthanc.address, "--series-quiet", "600")
    gathering = listen.spool / "series" / "gathering"
    assert scu.send(listen.node(), series[:20]) == [str(d.SOPInstanceUID) for d in series[:20]]
    [folder] = list(gathering.iterdir())
    assert len(list(folder.glob("*.dcm"))) == 20
    listen.proc.send_signal(signal.SIGKILL)  # mid-gathering: nothing has run yet
    listen.proc.wait()
    listen.log.close()
    assert listen.count("pending") == listen.count("done") == 0

    listen.args[listen.args.index("--series-quiet") + 1] = "5"
    listen.start()  # same spool, same port
    try:
        assert [p.name for p in gathering.iterdir()] == [folder.name]  # still there after the restart
        assert scu.send(listen.node(), series[20:]) == [str(d.SOPInstanceUID) for d in series[20:]]  # the rest
        assert wait_for(lambda: listen.count("done") + listen.count("failed") >= 1, timeout=120)
        time.sleep(6)
        assert listen.count("done") == 1 and listen.count("failed") == 0
        [ran] = [e for e in listen.audit() if e["event"] == "ran"]
        assert ran["instances"] == 35 and ran["bundles"] == ["hippocampus-mr"]
    finally:
        listen.stop()
    mr = instances_in_orthanc(orthanc, "SERIESMR2")
    assert {k: len(v) for k, v in mr.items()} == {"SEG": 1, "SR": 1, "DOC": 1}
    assert len(mr["SEG"][0].ReferencedSeriesSequence[0].ReferencedInstanceSequence) == 35


def test_series_quiet_in_listen_status_and_refused_when_negative(tmp_path):
    import json
    import subprocess
    import sys

    from medexport.engine.errors import ConfigurationError
    from medexport.engine.pacs.listener import Listener
    from medexport.engine.pacs.queue import JobQueue

    JobQueue(tmp_path / "spool")
    for bad in (-1, 0):
        with pytest.raises(ConfigurationError, match=f"--series-quiet is {bad}"):
            Listener(tmp_path / "spool", [], series_quiet_s=bad)
    status = subprocess.run([sys.executable, "-m", "medexport.export.cli", "listen", "status", "--spool",
                             str(tmp_path / "spool"), "--json"], capture_output=True, text=True, timeout=120)
    assert json.loads(status.stdout)["series"] == {"gathering": 0, "gathering_instances": 0, "closed_kept": 0}


def test_routing_names_modality_and_body_part(hippo_bundle, pneumonia_bundle, shared, cxr):
    from medexport.engine.bundle_read import read_manifest
    from medexport.engine.pacs.listener import bundle_accepts, not_taken

    hippo, chest = read_manifest(hippo_bundle)[0], read_manifest(pneumonia_bundle)[0]
    [mr] = mr_series(shared, "ROUTE1")[:1]
    film = wrap(cxr[0], "CR", "ROUTE2", BodyPartExamined="CHEST", ViewPosition="PA")
    assert bundle_accepts(hippo, mr, series=True) and not bundle_accepts(hippo, mr)  # whole series only
    assert not_taken(hippo, mr) == "a volume model runs on whole series"
    assert bundle_accepts(chest, film) and not bundle_accepts(chest, mr)
    assert "(0008,0060) Modality is 'MR'" in not_taken(chest, mr)
    knee = copy.deepcopy(mr)
    knee.BodyPartExamined = "KNEE"
    assert "(0018,0015) BodyPartExamined is 'KNEE'" in not_taken(hippo, knee, series=True)
    brain = copy.deepcopy(mr)
    brain.BodyPartExamined = "BRAIN"
    assert bundle_accepts(hippo, brain, series=True)
    del brain.Modality
    assert not_taken(hippo, brain, series=True).startswith("(0008,0060) Modality is absent")


def test_a_series_closed_but_not_queued_when_killed_is_queued_on_recovery(shared, tmp_path):
    """The window between closing a gathering (its folder renamed) and queueing its job, in process."""
    from medexport.engine.pacs.queue import JobQueue
    from medexport.engine.pacs.series import SeriesSpool, series_job_id

    files = sorted((shared / CROP).glob("*.dcm"))[:3]
    queue = JobQueue(tmp_path / "spool")
    spool = SeriesSpool(queue, quiet_s=0.2)
    for path in files:
        g = spool.add(path, pydicom.dcmread(path, stop_before_pixels=True), "MRI1")
    assert (g.generation, g.instances, g.new) == (0, 3, False)
    assert spool.close_quiet() == []  # not quiet yet
    [(job_id, data)] = spool.close_quiet(time.time() + 1)  # closed; the process dies before queue.put
    uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    assert job_id == series_job_id(uid, 0) and data["instances"] == 3 and data["kind"] == "series"
    again = SeriesSpool(queue, quiet_s=0.2)  # the restart
    assert again.recover() == [(job_id, {k: v for k, v in data.items() if k != "completed"})]
    assert queue.put(job_id, data) == "queued" and again.recover() == []
    late = again.add(files[0], pydicom.dcmread(files[0], stop_before_pixels=True), "MRI1")
    assert (late.generation, late.new, late.after_job, late.after_state) == (1, True, job_id, "pending")
    assert len(again.files(job_id)) == 3  # the closed series is still whole
