"""Query/retrieve/send against a real PACS (Orthanc): echo, find, get, run models, send SR/SEG/PDF back."""
from __future__ import annotations

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
COMPRESSED = ["RG1_J2KR.dcm", "emri_small_jpeg_ls_lossless.dcm", "emri_small_RLE.dcm", "JPEG-LL.dcm"]


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
    [cxr_file] = scu.get(orthanc.node(), cxr.StudyInstanceUID, tmp_path / "cxr", progress=lambda i, n: seen.append(i))
    [ecg_file] = scu.get(orthanc.node(), ecg.StudyInstanceUID, tmp_path / "ecg")
    assert seen and seen[-1] == 1
    with open_bundle(pneumonia_bundle) as model:
        retrieved, original = model.predict(str(cxr_file)), model.predict(dcm(CXR))
    assert retrieved.scores == pytest.approx(original.scores, abs=1e-6) and retrieved.input_sha256 == original.input_sha256
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
    assert got.returncode == 0 and "1 instances" in got.stdout
    sent = cli("pacs", "send", "--node", "clinic", str(tmp_path / "got"))
    assert sent.returncode == 0 and "sent 1 objects" in sent.stdout
    bad = cli("pacs", "echo", "--node", "nosuch")
    assert bad.returncode == 2 and "no PACS node named 'nosuch'" in bad.stderr and "Traceback" not in bad.stderr
