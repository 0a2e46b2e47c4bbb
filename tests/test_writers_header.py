"""Result writers on sources with malformed or absent header values (issue 24, item 5).

Real DICOM files (pydicom's CT_small.dcm, pydicom-data's MR2_UNCR.dcm) are rewritten to carry
one bad value each, byte for byte as a non-conformant modality would send it. The SR (through
``engine.sr.save_sr``, the function the viewer's File > Save DICOM SR calls), the SEG and the
Encapsulated PDF (the listener's path) must be written and read back by pydicom and highdicom,
with the value corrected or left empty, and the bad value must appear in no log line, warning,
printed text, exception message or written object.
"""
from __future__ import annotations

import hashlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from medexport.engine.errors import InvalidInputError, MedError
from medexport.engine.results import ClassificationResult, Provenance, SegmentationResult

PROVENANCE = Provenance("writer-test", "1.0", "ab" * 32, "onnxruntime", "fp32", "cpu")
# keyword, VR, value as sent, value expected in the outputs (None: omitted), whether a note names it
BAD = [
    ("PatientBirthDate", "DA", "1970-01-02", "19700102"),
    ("PatientBirthDate", "DA", "19700230", ""),
    ("PatientBirthDate", "DA", "02/01/1970", ""),
    ("StudyDate", "DA", "2024.13.45", ""),
    ("StudyTime", "TM", "10:30:15", "103015"),
    ("StudyTime", "TM", "25:61:00", ""),
    ("PatientSex", "CS", "FEMALE", "F"),
    ("PatientSex", "CS", "unknown", ""),
    ("PatientName", "PN", "Doe^Jane\x01Secret", ""),
    ("PatientID", "LO", "ID-" + "7" * 70, ""),
    ("ReferringPhysicianName", "PN", "Smith^" + "W" * 70, ""),
    ("AccessionNumber", "SH", "ACC\\NUMBER\\TOOMANY\\" + "9" * 20, ""),
    ("PatientWeight", "DS", "seventy kg", None),
    ("PatientAge", "AS", "45 years", None),
    ("StudyDescription", "LO", "Chest\x00\x07PA", None),
]
ABSENT = ["PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "StudyID", "AccessionNumber"]


def _with(source: str, folder: Path, keyword: str, vr: str, value: str | None, name: str = "bad.dcm") -> Path:
    """``source`` rewritten with ``keyword`` holding ``value`` as raw bytes (None: the attribute removed)."""
    ds = pydicom.dcmread(source)
    tag = Tag(keyword)
    if value is None:
        del ds[tag]
    else:
        data = value.encode("latin-1")
        data += b" " if len(data) % 2 else b""
        ds[tag] = RawDataElement(tag, vr, len(data), data, 0, False, True)
    path = folder / name
    ds.save_as(path)
    return path


def _classification() -> ClassificationResult:
    return ClassificationResult(provenance=PROVENANCE, source="study.dcm", input_sha256="0" * 64, timings_ms={},
                                scores={"Pneumonia": 0.8, "normal": 0.2}, thresholds={"Pneumonia": 0.5})


def _segmentation(path: Path) -> SegmentationResult:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    probability = np.zeros((ds.Rows, ds.Columns), np.float32)
    probability[10:40, 20:60] = 0.9
    return SegmentationResult(provenance=PROVENANCE, source=str(path), input_sha256="0" * 64, timings_ms={},
                              probability=probability, thresholds={"lesion": 0.5},
                              input_meta={"SOPInstanceUID": str(ds.SOPInstanceUID)})


def _write_all(path: Path, out: Path) -> dict:
    """SR as the viewer saves it, SEG + Encapsulated PDF as the listener sends them: name -> bytes."""
    from medexport.engine.pacs.objects import encode, result_objects
    from medexport.engine.pacs.textpdf import report_lines, text_pdf
    from medexport.engine.sr import save_sr

    sr_file = save_sr(_classification(), str(path), out)
    header = pydicom.dcmread(path, stop_before_pixels=True)  # as the listener reads it
    seg = _segmentation(path)
    pdf = text_pdf(report_lines(seg, header, "test"))
    seg_ds, doc = result_objects(seg, str(path), pdf=pdf, src=header)
    return {"SR": sr_file.read_bytes(), "SEG": encode(seg_ds), "PDF": encode(doc), "pdf text": pdf}


def _read_back(objects: dict) -> dict:
    import highdicom as hd

    read = {kind: pydicom.dcmread(io.BytesIO(objects[kind])) for kind in ("SR", "SEG", "PDF")}
    for ds in read.values():
        for _ in ds.iterall():  # every element decodes
            pass
    hd.sr.srread(io.BytesIO(objects["SR"]))
    hd.seg.segread(io.BytesIO(objects["SEG"]))
    assert read["PDF"].EncapsulatedDocument.startswith(b"%PDF-")
    return read


def _sr_notes(sr) -> list[str]:
    found = []

    def walk(ds):
        for elem in ds:
            if elem.VR == "SQ":
                for item in elem.value:
                    name = item.get("ConceptNameCodeSequence")
                    if name and name[0].get("CodeValue") == "121106" and "TextValue" in item:  # a Comment: a warning
                        found.append(str(item.TextValue))
                    walk(item)

    walk(sr)
    return found


@pytest.fixture
def heard(caplog, capfd):
    """Everything logged (any logger, DEBUG up), warned or printed while the block runs."""
    caught = []
    caplog.set_level(logging.DEBUG)

    def text() -> str:
        out, err = capfd.readouterr()
        return "\n".join([caplog.text, out, err, *map(str, caught)])

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield text


@pytest.mark.parametrize("keyword, vr, value, expected", BAD, ids=[f"{b[0]}={b[2][:12]!r}" for b in BAD])
def test_a_malformed_value_is_corrected_or_left_out_and_never_echoed(keyword, vr, value, expected, tmp_path, heard):
    path = _with(get_testdata_file("CT_small.dcm"), tmp_path, keyword, vr, value)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    out = tmp_path / "out"
    out.mkdir()
    objects = _write_all(path, out)
    read = _read_back(objects)
    for kind in ("SR", "SEG", "PDF"):
        if expected is None:
            assert keyword not in read[kind], kind
        else:
            assert str(read[kind].data_element(keyword).value) == expected, kind  # type 2: present, maybe empty
    assert any(note.startswith(keyword) for note in _sr_notes(read["SR"]))  # the SR says what was changed
    assert f"Header: {keyword}".encode() in objects["pdf text"]
    secret = value.encode("latin-1")
    assert all(secret not in data for data in objects.values())  # not in any object written
    said = heard()
    assert value not in said and repr(value)[1:-1] not in said  # nor logged, warned or printed
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before  # the source is never modified


@pytest.mark.parametrize("keyword", ABSENT)
def test_an_absent_type_2_attribute_is_written_present_and_empty(keyword, tmp_path):
    path = _with(get_testdata_file("CT_small.dcm"), tmp_path, keyword, "", None)
    out = tmp_path / "out"
    out.mkdir()
    read = _read_back(_write_all(path, out))
    for kind in ("SR", "SEG", "PDF"):
        assert keyword in read[kind] and not str(read[kind].data_element(keyword).value), kind


def test_an_unknown_character_set_falls_back_to_utf8_and_keeps_the_name(tmp_path, heard):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientName = "Müller^Anna"  # written in ISO_IR 100 (Latin-1) ...
    ds.save_as(tmp_path / "latin1.dcm")
    path = _with(str(tmp_path / "latin1.dcm"), tmp_path, "SpecificCharacterSet", "CS", "ISO_IR 999")  # ... declared wrongly
    out = tmp_path / "out"
    out.mkdir()
    read = _read_back(_write_all(path, out))
    for kind in ("SR", "SEG", "PDF"):
        assert read[kind].SpecificCharacterSet == "ISO_IR 192" and str(read[kind].PatientName) == "Müller^Anna"
    assert any(n.startswith("SpecificCharacterSet: unknown") for n in _sr_notes(read["SR"]))
    assert "Müller" not in heard()


def test_a_japanese_character_set_without_first_value_is_kept(tmp_path):
    """'\\ISO 2022 IR 87' (default repertoire first, empty) is valid DICOM; highdicom wants it spelled out."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    ds.PatientName = "Yamada^Tarou=山田^太郎"
    ds.save_as(tmp_path / "jp.dcm")
    out = tmp_path / "out"
    out.mkdir()
    read = _read_back(_write_all(tmp_path / "jp.dcm", out))
    for kind in ("SR", "SEG", "PDF"):
        assert str(read[kind].PatientName) == "Yamada^Tarou=山田^太郎", kind


@pytest.mark.parametrize("keyword", ["SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"])
def test_a_broken_uid_is_refused_by_tag_without_its_value(keyword, tmp_path, heard):
    from medexport.engine.sr import save_sr

    bad = "1.2.840.Patient-Doe-Jane.7"
    path = _with(get_testdata_file("CT_small.dcm"), tmp_path, keyword, "UI", bad)
    with pytest.raises(InvalidInputError, match=rf"\(0020,000[DE]\)|\(0008,0018\)") as err:
        save_sr(_classification(), str(path), tmp_path)
    assert keyword in str(err.value) and bad not in str(err.value) and "Doe" not in str(err.value)
    assert "Doe" not in heard()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.dcm"]  # nothing half-written


def test_a_real_mr_with_bad_dates_and_sex_gives_all_three_objects(dcm, tmp_path, heard):
    """pydicom-data's MR2_UNCR.dcm with three bad values at once: nothing lost, nothing echoed."""
    path = _with(dcm("MR2_UNCR.dcm"), tmp_path, "PatientBirthDate", "DA", "1961-07-31", "a.dcm")
    path = _with(str(path), tmp_path, "StudyTime", "TM", "9h30", "b.dcm")
    path = _with(str(path), tmp_path, "PatientSex", "CS", "weiblich", "c.dcm")
    out = tmp_path / "out"
    out.mkdir()
    read = _read_back(_write_all(path, out))
    for kind in ("SR", "SEG", "PDF"):
        assert (read[kind].PatientBirthDate, read[kind].StudyTime, read[kind].PatientSex) == ("19610731", "", "")
    said = heard()
    assert not any(v in said for v in ("1961-07-31", "9h30", "weiblich"))


def test_save_sr_refuses_only_with_med_error_on_a_non_dicom(tmp_path):
    (tmp_path / "x.dcm").write_bytes(b"not dicom at all")
    from medexport.engine.sr import save_sr

    with pytest.raises(MedError):
        save_sr(_classification(), str(tmp_path / "x.dcm"), tmp_path)
