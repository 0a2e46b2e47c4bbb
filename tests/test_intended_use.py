"""Intended use from the DICOM header: warnings naming the tag, refusal in strict mode."""
from __future__ import annotations

import subprocess
import sys

import pydicom
import pytest

from medexport.engine import open_bundle
from medexport.engine.errors import MedError
from medexport.engine.intended_use import OutsideIntendedUseError, age_in_years, contradictions
from medexport.engine.manifest import IntendedUse
from medexport.models.data import pydicom_data, shared_data

PAEDIATRIC_AP = IntendedUse(modalities=("CR", "DX"), body_parts=("CHEST",), view_positions=("AP",), age_years=(1, 5))


def _codes(result) -> list[str]:
    return [w.code for w in result.warnings]


def _paediatric_chest(tmp_path, **tags):
    """RG1 (an adult PA chest CR) re-labelled as a paediatric AP film, written to a new file."""
    ds = pydicom.dcmread(pydicom_data() / "RG1_UNCR.dcm")
    ds.ViewPosition, ds.PatientAge = "AP", "004Y"
    for k, v in tags.items():
        setattr(ds, k, v)
    out = tmp_path / "chest.dcm"
    ds.save_as(out)
    return out


def test_age_strings():
    assert age_in_years("005Y") == 5 and age_in_years("018M") == 1.5 and age_in_years("030D") == pytest.approx(0.082, abs=1e-3)
    assert age_in_years("") is None and age_in_years("5 years") is None


def test_contradictions_name_tag_and_value():
    found = contradictions(PAEDIATRIC_AP, {"Modality": "MR", "BodyPartExamined": "HEAD", "ViewPosition": "",
                                           "PatientAge": "058Y"})
    assert any("(0008,0060) Modality is 'MR'" in f for f in found)
    assert any("(0018,0015) BodyPartExamined is 'HEAD'" in f for f in found)
    assert any("(0010,1010) PatientAge is '058Y'" in f for f in found)
    assert not any("ViewPosition" in f for f in found)  # empty: contradicts nothing
    assert contradictions(PAEDIATRIC_AP, {"Modality": "DX", "BodyPartExamined": "chest", "PatientAge": "003Y"}) == []


def test_leg_and_mr_are_flagged_by_the_pneumonia_bundle(pneumonia_bundle):
    with open_bundle(pneumonia_bundle) as model:
        leg = model.predict(pydicom_data() / "RG3_UNCR.dcm")
        mr = model.predict(pydicom_data() / "MR2_UNCR.dcm")
        adult_pa = model.predict(pydicom_data() / "RG1_UNCR.dcm")
    assert "outside_intended_use" in _codes(leg)
    assert any("BodyPartExamined is 'EXTREMITY'" in w.message for w in leg.warnings)
    assert any("Modality is 'MR'" in w.message for w in mr.warnings)
    assert any("ViewPosition is 'PA'" in w.message for w in adult_pa.warnings)
    assert leg.to_dict()["warnings"][0]["code"] == "outside_intended_use"


def test_a_study_it_is_for_gets_no_intended_use_warning(pneumonia_bundle, tmp_path):
    with open_bundle(pneumonia_bundle, strict=True) as model:
        r = model.predict(_paediatric_chest(tmp_path))
    assert "outside_intended_use" not in _codes(r) and "no_intended_use_check" not in _codes(r)


def test_a_picture_says_it_was_not_checked(pneumonia_bundle):
    picture = next((shared_data() / "images" / "kermany-cxr224" / "train" / "NORMAL").glob("*.jpeg"))
    with open_bundle(pneumonia_bundle) as model:
        r = model.predict(picture)
    assert "no_intended_use_check" in _codes(r)


def test_strict_mode_refuses_before_inference(pneumonia_bundle, tmp_path, monkeypatch):
    with open_bundle(pneumonia_bundle, strict=True) as model:
        with pytest.raises(OutsideIntendedUseError, match="EXTREMITY") as info:
            model.predict(pydicom_data() / "RG3_UNCR.dcm")
    assert isinstance(info.value, MedError)
    monkeypatch.setenv("MEDEXPORT_STRICT", "1")
    with open_bundle(pneumonia_bundle) as model:
        assert model.strict
        with pytest.raises(OutsideIntendedUseError, match="PatientAge is '030Y'"):
            model.predict(_paediatric_chest(tmp_path, PatientAge="030Y"))


def test_cli_strict_refuses_and_prints_warning_otherwise(pneumonia_bundle):
    leg = str(pydicom_data() / "RG3_UNCR.dcm")
    run = [sys.executable, "-m", "medexport.export.cli", "predict", str(pneumonia_bundle), leg]
    plain = subprocess.run(run, capture_output=True, text=True)
    assert plain.returncode == 0 and "WARNING [outside_intended_use]" in plain.stdout
    # a flagged answer does not look confident: no "POSITIVE" headline, the model's answer said apart
    assert "decision: Not assessed: outside the model's intended use" in plain.stdout
    assert "not vouched for:" in plain.stdout and "-> POSITIVE" not in plain.stdout
    strict = subprocess.run(run + ["--strict"], capture_output=True, text=True)
    assert strict.returncode == 1 and "EXTREMITY" in strict.stderr and "Traceback" not in strict.stderr


def test_manifest_records_and_checks_intended_for(pneumonia_bundle):
    with open_bundle(pneumonia_bundle) as model:
        intended = model.manifest.intended_for
    assert intended.modalities == ("CR", "DX") and intended.age_years == (1.0, 5.0)
    with pytest.raises(MedError, match="age_years"):
        IntendedUse(age_years=(5, 1))


def test_sr_and_batch_csv_carry_the_warnings(pneumonia_bundle, tmp_path):
    import csv

    from medexport.engine.sr import save_sr
    from medexport.engine.studies import Study, batch_row, write_batch_csv

    leg = str(pydicom_data() / "RG3_UNCR.dcm")
    with open_bundle(pneumonia_bundle) as model:
        r = model.predict(leg)
    sr = pydicom.dcmread(save_sr(r, leg, tmp_path))

    def items(ds):
        for item in ds.get("ContentSequence", []):
            yield item
            yield from items(item)

    def code(seq):  # codes over 16 characters are Long Code Values
        return seq[0].get("CodeValue") or seq[0].get("LongCodeValue")

    warned = [code(i.ConceptCodeSequence) for i in items(sr)
              if i.ValueType == "CODE" and code(i.ConceptNameCodeSequence) == "warning"]
    assert "outside_intended_use" in warned
    table = write_batch_csv([batch_row(Study(leg, "image", "RG3"), r, None)], tmp_path / "batch.csv")
    row = next(csv.DictReader(open(table, newline="")))
    assert "outside_intended_use" in row["warning_codes"] and "EXTREMITY" in row["warnings"]


def test_the_listener_routes_by_declared_modality(pneumonia_bundle):
    from medexport.engine.bundle_read import read_manifest
    from medexport.engine.pacs.listener import bundle_accepts, not_taken

    manifest = read_manifest(pneumonia_bundle)[0]
    read = lambda name: pydicom.dcmread(pydicom_data() / name, stop_before_pixels=False)  # noqa: E731
    assert bundle_accepts(manifest, read("RG1_UNCR.dcm"))  # a PA chest CR: runs, and its result warns about the view
    assert "(0018,0015) BodyPartExamined is 'EXTREMITY'" in not_taken(manifest, read("RG3_UNCR.dcm"))  # body part routes
    assert not bundle_accepts(manifest, read("MR2_UNCR.dcm"))
    assert not bundle_accepts(manifest, read("693_UNCR.dcm"))


def test_a_flagged_answer_is_not_assessed_but_keeps_its_scores(pneumonia_bundle, tmp_path):
    with open_bundle(pneumonia_bundle) as model:
        leg = model.predict(pydicom_data() / "RG3_UNCR.dcm")
        child = model.predict(_paediatric_chest(tmp_path))
    assert leg.not_assessed[0] == "outside_intended_use"
    assert leg.headline().startswith("Not assessed: outside the model's intended use")
    assert leg.decision() in ("below threshold", "POSITIVE: pneumonia") and "POSITIVE" not in leg.headline()
    d = leg.to_dict()
    assert d["decision"] == leg.headline() and d["model_decision"] == leg.decision() and d["scores"] == {
        k: round(float(v), 6) for k, v in leg.scores.items()}
    if not child.not_assessed:  # a film the model is for answers plainly
        assert child.headline() == child.decision()
