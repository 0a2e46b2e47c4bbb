"""Shadow runs beside the listener and from a PACS (issue 30): ``listen --shadow CANDIDATE`` keeps the
candidate's results in the spool and the audit log and sends nothing more to the forward node (counted
in a real Orthanc); ``shadow --spool`` reports exactly the studies between the two thresholds;
``shadow --pacs`` retrieves them from Orthanc and says the same; a failing candidate leaves the live
result alone. pneumonia-cxr against its own site-calibrated version on real Kermany films."""
from __future__ import annotations

import copy
import csv
import json
import subprocess
import sys

import numpy as np
import pydicom
import pytest
from pacs_fixtures import orthanc  # noqa: F401 (session fixture)
from PIL import Image
from pydicom.uid import generate_uid
from test_listener import Listen
from test_listener_kinds import in_orthanc, wrap
from test_shadow import _films, calibrated  # noqa: F401 (module fixture)

from medexport.engine.pacs import scu
from medexport.engine.pacs.listener import job_key

MARGIN = 1e-3  # films this close to a threshold are left out: the set between them is then beyond doubt


def _bounds(current, candidate) -> tuple[float, float]:
    """The two thresholds in the current bundle's scores: a study changes decision exactly between them."""
    from medexport.engine import read_manifest
    from medexport.engine.calibrate import rescale_scores

    cur, _, _ = read_manifest(current)
    cand, _, _ = read_manifest(candidate)
    t_cur, t_cand = cur.postprocess.thresholds["pneumonia"], cand.postprocess.thresholds["pneumonia"]
    ratio = cand.postprocess.temperature / cur.postprocess.temperature
    t_back = float(rescale_scores(np.array([1 - t_cand, t_cand]), "softmax", ratio)[1])
    return tuple(sorted((t_cur, t_back)))


@pytest.fixture(scope="module")
def films(tmp_path_factory, pneumonia_bundle, calibrated, shared):  # noqa: F811
    """24 films as CR objects: every one whose score lies between the thresholds (up to 8) and others,
    none within MARGIN of a threshold; (datasets, SOP UIDs that change decision)."""
    from medexport.engine import open_bundle

    lo, hi = _bounds(pneumonia_bundle, calibrated)
    pool = [f for fs in _films(shared, 150, 100).values() for f in fs]
    folder = tmp_path_factory.mktemp("films")
    datasets = []
    for i, f in enumerate(pool):
        grey = folder / f"{i}.png"  # the films are stored as RGB JPEGs of a grey image
        Image.open(f).convert("L").save(grey)
        ds = wrap(grey, "CR", "SHADOW1", BodyPartExamined="CHEST", ViewPosition="AP", PatientAge="003Y")
        ds.save_as(folder / f"{i}.dcm", enforce_file_format=True)
        datasets.append(ds)
    with open_bundle(pneumonia_bundle) as model:
        scores = [model.predict(str(folder / f"{i}.dcm")).scores["pneumonia"] for i in range(len(pool))]
    clear = [i for i, s in enumerate(scores) if min(abs(s - lo), abs(s - hi)) > MARGIN]
    between = [i for i in clear if lo <= scores[i] < hi][:8]
    others = [i for i in clear if not lo <= scores[i] < hi][:24 - len(between)]
    assert between, "no film between the thresholds: the test would prove nothing"
    chosen = [datasets[i] for i in sorted(between + others)]
    return chosen, {str(datasets[i].SOPInstanceUID) for i in between}


def medexport(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medexport.export.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


def _changes(out) -> list[dict]:
    with open(out / "changes.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_listen_shadow_spools_the_candidate_and_shadow_spool_reports_the_changes(
        orthanc, pneumonia_bundle, calibrated, films, tmp_path):  # noqa: F811
    datasets, changing = films
    spool = tmp_path / "spool"
    listen = Listen(spool, pneumonia_bundle, orthanc.address, "--allow", "CART1", "--shadow", calibrated)
    try:
        assert scu.send(listen.node(), datasets) == [str(d.SOPInstanceUID) for d in datasets]
        listen.wait_done(len(datasets), timeout=300)
        assert listen.count("done") == len(datasets) and listen.count("failed") == 0
        audit = listen.audit()
    finally:
        listen.stop()
    n = len(datasets)
    # the forward node got the live results only: one SR, one PDF, one overlay per film, nothing of the candidate
    assert in_orthanc(orthanc, "SHADOW1") == {"SR": n, "DOC": n, "OT": n}
    [started] = [e for e in audit if e["event"] == "started"]
    assert [s["model_id"] for s in started["shadow"]] == ["pneumonia-cxr"]
    shadows = [e for e in audit if e["event"] == "shadow"]
    assert len(shadows) == n and not any(e["event"] == "shadow-failed" for e in audit)
    assert {e["sop_instance_uid"] for e in shadows if e["changed"]} == changing
    assert all(e["current"]["bundle_sha256"] != e["candidate"]["bundle_sha256"] for e in shadows)
    for ds in datasets:  # each job's study and record kept, though the received object was delivered and deleted
        job = spool / "shadow" / job_key(str(ds.SOPInstanceUID))
        assert pydicom.dcmread(job / "study.dcm").SOPInstanceUID == ds.SOPInstanceUID
        assert json.loads((job / "pneumonia-cxr.json").read_text())["candidate"]["model_id"] == "pneumonia-cxr"
    assert not list((spool / "objects").iterdir())

    out = tmp_path / "report"
    proc = medexport("shadow", calibrated, "--current", pneumonia_bundle, "--spool", spool, "-o", out)
    assert proc.returncode == 0, proc.stderr
    rows = _changes(out)
    assert {r["sop_instance_uid"] for r in rows} == changing
    assert {r["file"] for r in rows} == {str(spool / "shadow" / job_key(u) / "study.dcm") for u in changing}
    report = json.loads((out / "shadow.json").read_text())
    assert report["compared"] == n and report["changed"] == len(changing) and report["source"]["studies_kept"] == n
    flips = report["agreement"]["per_label"]["pneumonia"]
    assert flips["to_positive"] + flips["to_negative"] == len(changing)
    assert report["speed"]["candidate"]["n"] == n and report["speed"]["candidate"]["p50_ms"] > 0
    assert (out / "shadow.pdf").read_bytes().startswith(b"%PDF")

    proc = medexport("listen", "status", "--spool", spool, "--json")
    shadow = json.loads(proc.stdout)["shadow"]["pneumonia-cxr"]
    assert (shadow["runs"], shadow["changed"], shadow["candidate_failed"]) == (n, len(changing), 0)

    # the spool holds no run of other bundles: said, with the fix
    proc = medexport("shadow", pneumonia_bundle, "--current", calibrated, "--spool", spool, "-o", tmp_path / "none")
    assert proc.returncode != 0 and "holds no shadow run" in proc.stderr and "Traceback" not in proc.stderr


def test_shadow_pacs_retrieves_the_studies_and_reports_the_same_changes(orthanc, pneumonia_bundle, calibrated,
                                                                       films, tmp_path):  # noqa: F811
    from medexport.export.shadow import shadow_pacs

    datasets, changing = films
    renamed, changes = [], set()
    for ds in datasets:  # the same films for another patient, as a PACS holds them
        copy_ = copy.deepcopy(ds)
        copy_.PatientID, copy_.PatientName = "SHADOWPACS", "KIND^SHADOWPACS"
        copy_.StudyInstanceUID, copy_.SeriesInstanceUID, copy_.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
        copy_.file_meta.MediaStorageSOPInstanceUID = copy_.SOPInstanceUID
        renamed.append(copy_)
        if str(ds.SOPInstanceUID) in changing:
            changes.add(str(copy_.SOPInstanceUID))
    node = orthanc.node(calling_ae="MEDEXPORT")
    scu.send(node, renamed)
    path, report = shadow_pacs(calibrated, pneumonia_bundle, node, {"patient_id": "SHADOWPACS"}, tmp_path / "out",
                               emit=lambda m: None)
    rows = _changes(tmp_path / "out")
    assert {r["sop_instance_uid"] for r in rows} == changes
    assert all(r["file"].startswith("orthanc:") and r["file"].endswith(".dcm") for r in rows)
    assert report["studies"] == len(renamed) and report["compared"] == len(renamed)
    assert report["source"]["retrieved_studies"] == len(renamed) and "ORTHANC" in report["source"]["pacs"]


def test_a_failing_candidate_leaves_the_live_result_alone(orthanc, pneumonia_bundle, calibrated, films,
                                                          tmp_path):  # noqa: F811
    """After a reload, the candidate's runtime is closed before the job runs: the live results reach
    Orthanc, the record and the audit say why the candidate gave none."""
    from medexport.engine.pacs.listener import Listener
    from medexport.engine.pacs.objects import encode

    datasets, _ = films
    ds = copy.deepcopy(datasets[0])
    ds.PatientID, ds.SOPInstanceUID = "SHADOWFAIL", generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    listener = Listener(tmp_path / "spool", [pneumonia_bundle], forward=orthanc.node(calling_ae="MEDEXPORT"),
                        shadow=[calibrated])
    try:
        assert listener.reload([pneumonia_bundle])  # SIGHUP: new live models, the candidate stays
        listener.shadows.candidates["pneumonia-cxr"].close()
        job = job_key(str(ds.SOPInstanceUID))
        (listener.queue.root / "objects" / f"{job}.dcm").write_bytes(encode(ds))
        listener.queue.put(job, {"sop_instance_uid": str(ds.SOPInstanceUID)})
        listener.process(listener.queue.claim())
        assert listener.queue.is_done(job)
    finally:
        listener.stop()
    assert in_orthanc(orthanc, "SHADOWFAIL") == {"SR": 1, "DOC": 1, "OT": 1}
    rec = json.loads((tmp_path / "spool" / "shadow" / job / "pneumonia-cxr.json").read_text())
    assert "used before load()" in rec["candidate"]["error"] and rec["current"]["decision"]
    audit = [json.loads(line) for line in (tmp_path / "spool" / "audit.jsonl").read_text().splitlines()]
    [shadow] = [e for e in audit if e["event"] == "shadow"]
    assert "used before load()" in shadow["candidate"]["error"]
    assert [e["event"] for e in audit].count("done") == 1


def test_a_candidate_without_its_live_bundle_is_refused(pneumonia_bundle, calibrated, tmp_path):  # noqa: F811
    import shutil

    from medexport.engine.errors import ConfigurationError
    from medexport.engine.pacs.listener import Listener

    other = tmp_path / "other-model"  # the same bundle under another model id
    shutil.copytree(pneumonia_bundle, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["model_id"] = "chest-other"
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigurationError, match="matches 0 live bundles of model id pneumonia-cxr"):
        Listener(tmp_path / "spool", [other], shadow=[calibrated])
    with pytest.raises(ConfigurationError, match="is the live bundle itself"):
        Listener(tmp_path / "spool", [pneumonia_bundle], shadow=[pneumonia_bundle])
    with pytest.raises(ConfigurationError, match="two --shadow candidates"):
        Listener(tmp_path / "spool", [pneumonia_bundle], shadow=[calibrated, calibrated])
