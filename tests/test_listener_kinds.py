"""Every demo bundle's kind of object end to end through ``medexport listen`` into a real Orthanc:
a chest film (CR), a fetal ultrasound frame with pixel spacing (US), a blood smear (colour SM) and
an ECG; the SR, SEG (for masks) and PDF land in Orthanc (issue 24 item 1)."""
from __future__ import annotations

import copy

import numpy as np
import pydicom
import pytest
from pacs_fixtures import orthanc  # noqa: F401 (session fixture)
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from test_listener import Listen

from medexport.engine.pacs import scu

CLASSES = {"CR": "1.2.840.10008.5.1.4.1.1.1", "US": "1.2.840.10008.5.1.4.1.1.6.1",
           "SM": "1.2.840.10008.5.1.4.1.1.7"}  # SM as Secondary Capture: Orthanc and pynetdicom take it


def wrap(image_path, modality: str, patient: str, **attrs) -> Dataset:
    """An image file as a single-frame DICOM object of ``modality`` (grey, or RGB for a colour image)."""
    img = Image.open(image_path)
    colour = img.mode not in ("L", "I;16", "I")
    arr = np.asarray(img.convert("RGB" if colour else "L"), dtype=np.uint8)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CLASSES[modality], generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CLASSES[modality], meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientName, ds.PatientID = modality, f"KIND^{patient}", patient
    ds.PatientBirthDate = ds.PatientSex = ds.AccessionNumber = ds.ReferringPhysicianName = ""
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "20260101", "120000", "1", 1, 1
    ds.Rows, ds.Columns = arr.shape[:2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = (3, "RGB") if colour else (1, "MONOCHROME2")
    if colour:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = arr.tobytes()
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def in_orthanc(orthanc, patient: str) -> dict:  # noqa: F811
    found = orthanc.find("Instance", PatientID=patient)
    out: dict = {}
    for f in found:
        modality = orthanc.rest(f"/instances/{f['ID']}/simplified-tags").get("Modality")
        out[modality] = out.get(modality, 0) + 1
    return out


@pytest.fixture(scope="module")
def all_bundles(tmp_path_factory, pneumonia_bundle, fetal_bundle, det_bundle, ecg_bundle):
    folder = tmp_path_factory.mktemp("listen-bundles")
    for b in (pneumonia_bundle, fetal_bundle, det_bundle, ecg_bundle):
        (folder / b.name).symlink_to(b, target_is_directory=True)
    return folder


def test_every_bundle_kind_runs_through_the_listener_into_orthanc(orthanc, all_bundles, shared, cxr,
                                                                   pydicom_file, tmp_path):  # noqa: F811
    film = wrap(cxr[0], "CR", "KINDCXR", BodyPartExamined="CHEST", ViewPosition="AP", PatientAge="003Y")
    us = wrap(sorted((shared / "segmentation" / "hc18" / "images").glob("*_HC.png"))[0], "US", "KINDUS",
              PixelSpacing=[0.15, 0.15])
    smear = wrap(sorted((shared / "detection" / "bccd" / "JPEGImages").glob("*.jpg"))[0], "SM", "KINDSM")
    ecg = pydicom.dcmread(pydicom_file("waveform_ecg.dcm"))
    del ecg.WaveformAnnotationSequence
    ecg = copy.deepcopy(ecg)
    ecg.PatientID, ecg.SOPInstanceUID = "KINDECG", generate_uid()
    ecg.file_meta.MediaStorageSOPInstanceUID = ecg.SOPInstanceUID
    listen = Listen(tmp_path / "spool", all_bundles, orthanc.address, "--allow", "CART1")
    try:
        sent = [film, us, smear, ecg]
        assert scu.send(listen.node(), sent) == [str(d.SOPInstanceUID) for d in sent]
        listen.wait_done(4, timeout=300)
        assert listen.count("done") == 4 and listen.count("failed") == 0, listen.audit()[-6:]
        events = listen.audit()
        assert sum(e["event"] == "done" for e in events) == 4 and not any(e["event"] == "skipped" for e in events)
        assert not list((listen.spool / "objects").iterdir())  # delivered: the patient data is gone
    finally:
        listen.stop()
    # the overlay (heatmap, ellipse, boxes) burnt into a secondary capture (OT) any PACS viewer shows
    assert in_orthanc(orthanc, "KINDCXR") == {"SR": 1, "DOC": 1, "OT": 1}
    assert in_orthanc(orthanc, "KINDUS") == {"SR": 1, "SEG": 1, "DOC": 1, "OT": 1}  # the head mask as a SEG
    assert in_orthanc(orthanc, "KINDSM") == {"SR": 1, "DOC": 1, "OT": 1}
    assert in_orthanc(orthanc, "KINDECG") == {"SR": 1, "DOC": 1}  # an ECG has no image to draw on
