"""The viewer's Qt-free core: studies, model choice, runs, audit log, batch, SR."""
import json
import os
import subprocess
from pathlib import Path

import pytest

from medexport.desktop import audit
from medexport.desktop.state import AppState
from medexport.engine.studies import open_paths, write_batch_csv


@pytest.fixture
def state(pneumonia_bundle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the viewer also searches ./bundles: a developer's demo bundles stay out
    s = AppState(bundle_folders=[str(pneumonia_bundle.parent)])
    s.discover()
    yield s
    s.close()


def test_open_mixed_folder_groups_and_kinds(dcm, cxr, shared, tmp_path):
    studies, problems = open_paths([cxr[0], dcm("RG1_UNCI.dcm"), dcm("emri_small.dcm"),
                                    str(shared / "ecg" / "cinc2017-af" / "A00001.hea")])
    assert [s.kind for s in studies] == ["image", "image", "image", "ecg"] and not problems
    assert studies[2].frames == 10
    bad = tmp_path / "notes.txt"
    bad.write_text("x")
    studies, problems = open_paths([str(bad)])
    assert not studies and "not an image or ECG" in problems[0]


def test_dicom_waveform_is_an_ecg_study(pydicom_file):
    studies, _ = open_paths([pydicom_file("waveform_ecg.dcm")])
    assert studies[0].kind == "ecg"


def test_model_choice_run_and_audit(state, cxr):
    assert state.chosen["image"].model_id == "pneumonia-cxr"
    assert state.runtime_of(state.chosen["image"]) == "openvino fp32"
    state.open([cxr[0]])
    events = []
    state.subscribe(events.append)
    before = len(audit.read_all())
    result = state.run(state.study)
    # an adult NIH film: the model's decision is at the bundle's threshold; flagged, the headline says
    # the model does not vouch for it
    expected = "POSITIVE: pneumonia" if result.scores["pneumonia"] >= result.thresholds["pneumonia"] else "below threshold"
    assert state.result_of(state.study) is result and result.decision() == expected
    if result.not_assessed:
        assert result.headline().startswith("Not assessed: ") and "POSITIVE" not in result.headline()
    else:
        assert result.headline() == expected
    entries = audit.read_all()
    assert len(entries) == before + 1
    last = entries[-1]
    assert last["input_sha256"] == result.input_sha256 and last["bundle_sha256"] == result.bundle_sha256
    assert "PatientName" not in json.dumps(last) and set(last["scores"]) == {"normal", "pneumonia"}


def test_batch_rows_keep_errors_and_csv_never_overwrites(state, cxr, pydicom_file, tmp_path):
    state.open([*cxr, pydicom_file("JPEG-lossy.dcm")])
    rows = state.run_all()
    assert len(rows) == 3 and rows[2]["error"] and "transfer syntax" in rows[2]["error"]
    assert all(r["error"] == "" for r in rows[:2])
    first = write_batch_csv(rows, tmp_path / "batch.csv")
    second = write_batch_csv(rows, tmp_path / "batch.csv")
    assert first != second and second.name == "batch (2).csv"
    assert first.read_text().splitlines()[0].startswith("file,path,kind,error")


def test_cancel_before_run_records_nothing(state, cxr):
    import threading

    from medexport.desktop.state import Cancelled

    state.open([cxr[0]])
    cancel = threading.Event()
    cancel.set()
    before = len(audit.read_all())
    with pytest.raises(Cancelled):
        state.run(state.study, cancel)
    assert len(audit.read_all()) == before and state.result_of(state.study) is None


def test_structured_report_references_the_source(state, dcm, tmp_path):
    import pydicom

    from medexport.engine.sr import save_sr

    src = dcm("RG3_UNCI.dcm")
    state.open([src])
    result = state.run(state.study)
    path = save_sr(result, src, tmp_path)
    sr = pydicom.dcmread(path)
    source = pydicom.dcmread(src, stop_before_pixels=True)
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert evidence.ReferencedSOPInstanceUID == source.SOPInstanceUID
    values = []

    def walk(ds):
        for elem in ds:
            if elem.VR == "SQ":
                for item in elem.value:
                    walk(item)
            elif elem.keyword in ("TextValue", "CodeMeaning"):
                values.append(str(elem.value))

    walk(sr)
    assert "pneumonia score" in values and f"bundle_sha256={result.bundle_sha256}" in values  # the whole hash
    codes = []

    def coded(ds):
        for elem in ds:
            if elem.VR == "SQ":
                for item in elem.value:
                    if "CodeValue" in item:
                        codes.append((item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning))
                    coded(item)

    from dataclasses import replace

    positive = replace(result, scores={"normal": 0.01, "pneumonia": 0.99})
    coded(pydicom.dcmread(save_sr(positive, src, tmp_path / "positive")))
    assert ("233604007", "SCT", "Pneumonia") in codes  # a finding in SNOMED CT, not only in the private scheme
    from medexport.engine.codes import IMAGE_FINDINGS, code_for

    assert code_for(IMAGE_FINDINGS, "Pneumonia") == ("233604007", "SCT", "Pneumonia")
    assert code_for(IMAGE_FINDINGS, "my finding") == ("my finding", "99MEDEXPORT", "my finding")
    assert Path(save_sr(result, src, tmp_path)).name.endswith("(2).dcm")  # never overwritten


def test_sr_needs_dicom_input(state, cxr, tmp_path):
    from medexport.engine.sr import save_sr
    from medexport.engine import InvalidInputError

    state.open([cxr[0]])
    result = state.run(state.study)
    with pytest.raises(InvalidInputError, match="is not DICOM"):
        save_sr(result, cxr[0], tmp_path)


def test_audit_log_names_no_file_and_no_folder(state, tmp_path, cxr, dcm):
    import shutil

    folder = tmp_path / "Doe_Jane"
    folder.mkdir()
    named = folder / "Doe_Jane_1234.png"
    shutil.copy(cxr[0], named)
    dicom = folder / "Doe_Jane_1234.dcm"
    shutil.copy(dcm("RG1_UNCI.dcm"), dicom)
    state.open([str(named), str(dicom)])
    before = len(audit.read_all())
    for study in state.studies[-2:]:
        state.run(study)
    text = audit.audit_path().read_text(encoding="utf-8")
    for secret in ("Doe", "Jane", "1234", str(tmp_path)):
        assert secret not in text
    png, dicom_entry = audit.read_all()[before:]
    assert "study_uid" not in png and png["input_sha256"]
    assert dicom_entry["sop_instance_uid"] == state.result_of(state.studies[-1]).input_meta["SOPInstanceUID"]


def test_recent_list_keeps_one_entry_whole():
    from medexport.desktop.state import RECENT_MAX, recent_paths

    assert recent_paths("/data/a.dcm") == ["/data/a.dcm"]  # QSettings gives a one-entry list back as a str
    assert recent_paths(None) == [] and recent_paths("") == []
    assert recent_paths("/data/a.dcm", add="/data/b.dcm") == ["/data/b.dcm", "/data/a.dcm"]
    assert recent_paths(["/a", "/b"], add="/b") == ["/b", "/a"]
    assert len(recent_paths([f"/{i}" for i in range(30)], add="/x")) == RECENT_MAX


def test_selftest_checks_threads_runtime_files_and_audit(pneumonia_bundle, tmp_path, monkeypatch, capsys):
    from medexport.desktop import app

    monkeypatch.setenv("HOME", str(tmp_path))
    assert app.selftest([str(pneumonia_bundle.parent)]) == 0
    out = capsys.readouterr().out
    assert "4 threads: 0 results differ" in out and "PASS no runtime wrote under ~/intel" in out
    assert "PASS the audit log records hashes and UIDs" in out and "FAIL" not in out
    for path in ("heatmap", "DICOM SR", "PDF report"):  # every save path, on a synthetic DICOM
        assert f"PASS save pneumonia-cxr {path}" in out
    assert "PASS save batch CSV" in out
    before = app._intel_files()
    (tmp_path / "intel").mkdir()
    (tmp_path / "intel" / "openvino_ga_cid").write_text("id")
    assert app.no_runtime_files(before).startswith("FAIL")


def test_a_save_path_that_breaks_fails_the_selftest(pneumonia_bundle, monkeypatch):
    """As in a frozen app whose highdicom lost sqlite3: the self-test says which save failed."""
    from medexport.desktop import save_check
    from medexport.engine import sr
    from medexport.desktop.catalog import find_bundles
    from medexport.desktop.trust import open_options

    def broken(*args, **kw):
        raise ModuleNotFoundError("No module named 'sqlite3'")

    monkeypatch.setattr(sr, "save_sr", broken)
    bundles, _ = find_bundles([pneumonia_bundle.parent])
    lines = save_check.save_paths_work(bundles, open_options())
    assert "FAIL save pneumonia-cxr DICOM SR: ModuleNotFoundError: No module named 'sqlite3'" in lines
    assert any(line.startswith("PASS save pneumonia-cxr PDF report") for line in lines)


def test_install_bundle_and_the_default_model_has_evidence(shared, user_bundle_unvalidated, tmp_path, cache_dir):
    """A user's unvalidated model never becomes the default over a validated one; File > Install
    bundle... checks a bundle before copying it, and says where bundles go."""
    from medexport.desktop.catalog import install_bundle
    from medexport.desktop.paths import installed_bundles_dir, reports_dir
    from medexport.engine.errors import MedError

    from medexport.export.build import BuildOptions, build

    validated = tmp_path / "validated" / "pneumonia-cxr"
    build("pneumonia-cxr", validated,
          BuildOptions(targets=["onnxruntime"], val=f"{shared}/images/pneumoniamnist_trainval.npz:val:120"),
          emit=lambda m: None)
    folder = tmp_path / "models"
    folder.mkdir()
    installed = install_bundle(user_bundle_unvalidated, folder)
    assert (installed / "manifest.json").is_file()
    with pytest.raises(MedError, match="already installed"):
        install_bundle(user_bundle_unvalidated, folder)
    state = AppState(bundle_folders=[str(folder), str(validated.parent)])
    state.discover()
    ids = {b.model_id: b for b in state.bundles}
    assert ids["aaa-untrained"].validated is False and ids["pneumonia-cxr"].validated is True
    assert state.chosen["image"].model_id == "pneumonia-cxr"  # 'aaa-...' sorts first by name, not by evidence
    with pytest.raises(MedError, match=str(installed_bundles_dir())):
        AppState(bundle_folders=[str(tmp_path / "empty")]).model_for(type("S", (), {"kind": "ecg"})())
    from pathlib import Path

    assert reports_dir() == Path.home() / "medexport reports"  # no Documents folder: the home folder's
    (Path.home() / "Documents").mkdir(exist_ok=True)
    assert reports_dir() == Path.home() / "Documents" / "medexport reports" and reports_dir().is_dir()


def test_the_viewer_audit_writes_whole_lines_and_counts_what_a_full_disk_lost(tmp_path):
    """The viewer and the listener share one durable JSON-lines writer (engine/jsonl.py)."""
    from medexport.engine.jsonl import JsonLines

    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(tmp_path)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a tiny tmpfs")
    try:
        log = JsonLines(tmp_path / "audit.jsonl", kind="action")
        log.append({"action": "predict", "n": 0})
        filler = tmp_path / "filler"
        with open(filler, "wb", buffering=0) as fh:  # the disk fills up
            try:
                while True:
                    fh.write(b"\0" * 4096)
            except OSError:
                pass
        with pytest.raises(OSError):
            log.append({"action": "predict", "n": 1, "pad": "x" * 8192})
        assert [json.loads(x)["n"] for x in (tmp_path / "audit.jsonl").read_text().splitlines()] == [0]
        filler.unlink()
        log.append({"action": "save", "n": 2})
        lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
        assert [x["action"] for x in lines] == ["predict", "audit-gap", "save"]
        assert lines[1]["lines_lost"] == {"predict": 1}
    finally:
        subprocess.run(["umount", str(tmp_path)], capture_output=True)
