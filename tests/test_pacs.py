"""Query/retrieve/send against a real PACS (Orthanc): echo, find, get, run models, send SR/SEG/PDF back."""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pydicom
import pytest
from pacs_fixtures import orthanc  # noqa: F401 (session fixture)

from medexport.engine import open_bundle
from medexport.engine.pacs import PacsError, scu
from medexport.engine.pacs.nodes import Node, get_node, load_nodes

CXR, ECG = "RG1_UNCR.dcm", "waveform_ecg.dcm"
COMPRESSED = ["RG1_J2KR.dcm", "emri_small_jpeg_ls_lossless.dcm", "OBXXXX1A_rle.dcm", "JPEG-LL.dcm"]


@pytest.fixture(scope="module")
def stored(orthanc, dcm, pydicom_file):  # noqa: F811
    """The chest X-ray, the ECG and the compressed files, stored in Orthanc by C-STORE."""
    files = [dcm(CXR), pydicom_file(ECG)] + [dcm(n) for n in COMPRESSED]
    uids = scu.send(orthanc.node(), files)
    assert len(uids) == len(files)
    return {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID: f for f in files}


def test_echo_and_an_unreachable_node_is_a_message(orthanc):  # noqa: F811
    assert scu.echo(orthanc.node()) < 5000
    assert scu.echo(orthanc.web_node()) < 5000
    from pacs_fixtures import free_port

    with pytest.raises(PacsError, match="cannot connect|did not answer|rejected"):
        scu.echo(Node("nowhere", ae_title="NOBODY", host="127.0.0.1", port=free_port()))


def test_find_by_patient_and_by_date(orthanc, stored, dcm, pydicom_file):  # noqa: F811
    cxr = pydicom.dcmread(dcm(CXR), stop_before_pixels=True)
    ecg = pydicom.dcmread(pydicom_file(ECG), stop_before_pixels=True)
    for node in (orthanc.node(), orthanc.web_node()):
        rows = scu.find(node, patient_id=cxr.PatientID)
        assert [r["StudyInstanceUID"] for r in rows] == [cxr.StudyInstanceUID]
        assert rows[0]["ModalitiesInStudy"] == "CR" and rows[0]["StudyDescription"] == cxr.StudyDescription
        day = cxr.StudyDate
        around = scu.find(node, date=f"{int(day) - 1}-{int(day) + 1}")
        assert cxr.StudyInstanceUID in {r["StudyInstanceUID"] for r in around}
        assert ecg.StudyInstanceUID not in {r["StudyInstanceUID"] for r in around}
        assert scu.find(node, date="19000101-19000102") == []
    ecg_rows = scu.find(orthanc.node(), modality="ECG")
    assert [r["StudyInstanceUID"] for r in ecg_rows] == [ecg.StudyInstanceUID]


def test_get_a_chest_xray_and_an_ecg_and_run_the_models(orthanc, stored, dcm, pydicom_file, pneumonia_bundle,  # noqa: F811
                                                        ecg_bundle, tmp_path):
    cxr = pydicom.dcmread(dcm(CXR), stop_before_pixels=True)
    ecg = pydicom.dcmread(pydicom_file(ECG), stop_before_pixels=True)
    seen = []
    got = scu.get(orthanc.node(), cxr.StudyInstanceUID, tmp_path / "cxr", progress=lambda i, n: seen.append(i))
    assert len(got) == 2 and seen[-1] == 2  # the film uncompressed and as JPEG 2000
    [cxr_file] = [p for p in got if p.stem == cxr.SOPInstanceUID]
    [ecg_file] = scu.get(orthanc.node(), ecg.StudyInstanceUID, tmp_path / "ecg")
    with open_bundle(pneumonia_bundle) as model:
        retrieved, original = model.predict(str(cxr_file)), model.predict(dcm(CXR))
    assert retrieved.scores == pytest.approx(original.scores, abs=1e-6)
    with open_bundle(ecg_bundle) as model:
        r = model.predict(str(ecg_file))
    assert set(r.scores) == {"normal", "af", "other", "noisy"} and len(r.beats) >= 4


def test_send_sr_seg_and_encapsulated_pdf_and_read_them_back(orthanc, pneumonia_bundle, seg_bundle, dcm):  # noqa: F811
    from medexport.engine.pacs.objects import result_objects
    from medexport.engine.pacs.textpdf import report_lines, text_pdf

    cxr, mr = dcm(CXR), dcm("MR2_UNCR.dcm")
    with open_bundle(pneumonia_bundle) as model:
        r = model.predict(cxr)
    header = pydicom.dcmread(cxr, stop_before_pixels=True)
    pdf = text_pdf(report_lines(r, header, "test"))
    sr, doc = result_objects(r, cxr, pdf=pdf)
    with open_bundle(seg_bundle) as model:
        [seg] = result_objects(model.predict(mr), mr)
    node = orthanc.node()
    assert scu.send(node, [sr, doc, seg]) == [sr.SOPInstanceUID, doc.SOPInstanceUID, seg.SOPInstanceUID]
    again, _ = result_objects(r, cxr, pdf=pdf)  # same source, same bundle: same UIDs, one copy on the PACS
    assert again.SOPInstanceUID == sr.SOPInstanceUID and again.SeriesInstanceUID == sr.SeriesInstanceUID
    scu.send(node, [again])

    def read_back(uid):
        [found] = orthanc.find(SOPInstanceUID=uid)
        return pydicom.dcmread(__import__("io").BytesIO(orthanc.rest(f"/instances/{found['ID']}/file")))

    back = read_back(sr.SOPInstanceUID)
    assert back.Modality == "SR" and back.StudyInstanceUID == header.StudyInstanceUID
    text = str(back.ContentSequence)
    assert r.model_id in text and f"{r.scores['pneumonia']:.4f}"[:5] in text
    back = read_back(doc.SOPInstanceUID)
    assert back.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.1" and back.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert back.EncapsulatedDocument[:len(pdf)] == pdf and back.PatientID == header.PatientID
    from pypdf import PdfReader

    page = PdfReader(__import__("io").BytesIO(back.EncapsulatedDocument[:len(pdf)])).pages[0].extract_text()
    assert r.headline()[:20] in page and "not a medical device" in page
    back = read_back(seg.SOPInstanceUID)
    assert back.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and back.SegmentSequence[0].SegmentLabel == "membrane"
    assert len(orthanc.find(SeriesInstanceUID=sr.SeriesInstanceUID)) == 1  # sent twice, stored once


@pytest.mark.parametrize("name", COMPRESSED)
def test_a_compressed_study_round_trips(orthanc, stored, dcm, tmp_path, name):  # noqa: F811
    original = pydicom.dcmread(dcm(name))
    for node in (orthanc.node(), orthanc.web_node()):
        paths = scu.get(node, original.StudyInstanceUID, tmp_path / node.name)
        [back] = [pydicom.dcmread(p) for p in paths if pydicom.dcmread(p).SOPInstanceUID == original.SOPInstanceUID]
        assert back.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID, node.name
        assert back.PixelData == original.PixelData
        assert np.array_equal(back.pixel_array, original.pixel_array)


def test_cli_echo_find_get_send_without_torch(orthanc, stored, dcm, tmp_path, monkeypatch):  # noqa: F811
    """The commands a clinic's admin types; they never import torch."""
    env_home = tmp_path / "home"
    monkeypatch.setenv("MEDEXPORT_HOME", str(env_home))
    code = ("import sys; from medexport.export.cli import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)")

    def cli(*args):
        return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)

    assert cli("pacs", "add", "clinic", orthanc.address).returncode == 0
    assert load_nodes()["clinic"] == get_node("clinic") and get_node("clinic").port == orthanc.dicom_port
    done = cli("pacs", "echo", "--node", "clinic")
    assert done.returncode == 0 and "answered in" in done.stdout, done.stderr
    cxr = pydicom.dcmread(dcm(CXR), stop_before_pixels=True)
    found = cli("pacs", "find", "--node", "clinic", "--patient-id", cxr.PatientID, "--json")
    assert found.returncode == 0 and cxr.StudyInstanceUID in found.stdout and "1 studies" in found.stderr
    got = cli("pacs", "get", "--node", "clinic", "--study", cxr.StudyInstanceUID, "-o", str(tmp_path / "got"))
    assert got.returncode == 0 and re.match(r"\d+ instances in", got.stdout)
    assert (tmp_path / "got" / f"{cxr.SOPInstanceUID}.dcm").is_file()
    sent = cli("pacs", "send", "--node", "clinic", str(tmp_path / "got"))
    assert sent.returncode == 0 and re.match(r"sent \d+ objects", sent.stdout)
    bad = cli("pacs", "echo", "--node", "nosuch")
    assert bad.returncode == 2 and "no PACS node named 'nosuch'" in bad.stderr and "Traceback" not in bad.stderr


def test_viewer_finds_retrieves_runs_and_sends_back(qtbot, orthanc, stored, dcm, pneumonia_bundle, tmp_path):  # noqa: F811
    """The PACS panel: find by patient, retrieve and open, run, send SR + Encapsulated PDF (the Qt report);
    an unreachable node is a message in the panel. Screenshot: $PACS_SCREENSHOT."""
    import os

    from medexport.desktop.qt_main import MainWindow
    from medexport.desktop.state import AppState
    from medexport.engine.pacs.nodes import nodes_path, save_nodes

    nodes = load_nodes()
    nodes["orthanc"] = orthanc.node()
    save_nodes(nodes)
    assert nodes_path().is_file()
    window = MainWindow(AppState(bundle_folders=[str(pneumonia_bundle.parent)]))
    qtbot.addWidget(window)
    window.resize(1300, 900)
    window.show()
    panel = window.pacs_panel
    panel.reload_nodes()
    window.pacs_dock.show()
    panel.node.setCurrentIndex(panel.node.findText(orthanc.node().describe()))
    cxr = pydicom.dcmread(dcm(CXR), stop_before_pixels=True)
    panel.patient_id.setText(cxr.PatientID)
    assert panel.find()
    qtbot.waitUntil(lambda: not panel.worker.isRunning(), timeout=30000)
    qtbot.wait(50)
    assert panel.table.rowCount() == 1 and panel.table.item(0, 3).text().startswith("CR")
    assert panel.table.item(0, 2).text() == f"{cxr.StudyDate[:4]}-{cxr.StudyDate[4:6]}-{cxr.StudyDate[6:]}"
    if os.environ.get("PACS_SCREENSHOT"):
        window.grab().save(os.environ["PACS_SCREENSHOT"])
    assert panel.retrieve()
    qtbot.waitUntil(lambda: not panel.worker.isRunning(), timeout=60000)
    qtbot.waitUntil(lambda: window.state.study is not None, timeout=10000)
    assert pydicom.dcmread(window.state.study.path, stop_before_pixels=True).StudyInstanceUID == cxr.StudyInstanceUID
    window.run_current()
    qtbot.waitUntil(lambda: not window.worker.isRunning(), timeout=60000)
    qtbot.wait(50)
    assert panel.send()
    qtbot.waitUntil(lambda: not panel.worker.isRunning(), timeout=60000)
    qtbot.wait(50)
    assert "Sent 3 objects" in panel.status.text(), panel.status.text()  # SR, PDF and the overlay capture
    study = orthanc.find("Study", StudyInstanceUID=cxr.StudyInstanceUID)[0]
    kinds = {orthanc.rest(f"/series/{s}")["MainDicomTags"]["Modality"] for s in study["Series"]}
    assert kinds == {"CR", "DOC", "SR", "OT"}
    from pacs_fixtures import free_port

    panel.node.addItem("dead", Node("dead", ae_title="NOBODY", host="127.0.0.1", port=free_port()))
    panel.node.setCurrentIndex(panel.node.count() - 1)
    assert panel.find()
    qtbot.waitUntil(lambda: not panel.worker.isRunning(), timeout=30000)
    qtbot.wait(50)
    assert panel.status.text().startswith("Find failed: cannot connect") and panel.find_button.isEnabled()
