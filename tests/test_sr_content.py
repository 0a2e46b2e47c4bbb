"""The SR says what the model found in standard terms, read back with highdicom: each score with its
operating threshold, fetal biometry in LOINC with UCUM units, the ECG's heart rate, RR statistics and
deciding leads, detections counted per label, and a flagged study's finding qualified, its warnings whole."""
from __future__ import annotations

import io
from dataclasses import replace

import highdicom as hd
import pytest
from pydicom.sr.codedict import codes

from medexport.engine import open_bundle
from medexport.engine.sr import build_sr
from medexport.models.data import pydicom_data


def _read_back(result, path: str):
    """The SR as a PACS would hold it: encoded, then parsed by highdicom."""
    buf = io.BytesIO()
    build_sr(result, path).save_as(buf, enforce_file_format=True)
    return hd.sr.srread(io.BytesIO(buf.getvalue()))


def _code(concept) -> tuple[str, str]:
    return concept.value, concept.scheme_designator


def _main_group(sr):
    return sr.content.get_image_measurement_groups()[0]


def _evaluations(group) -> list[tuple[tuple, tuple]]:
    return [(_code(item.ConceptNameCodeSequence[0]), _code(item.ConceptCodeSequence[0]))
            for item in group[0].ContentSequence if item.ValueType == "CODE"]


def _measurements(group) -> dict:
    """(code value, scheme) -> (value, UCUM unit, method code or None)."""
    return {_code(m.name): (m.value, m.unit.value, m.method.value if m.method else None)
            for m in group.get_measurements()}


def _texts(group) -> list[str]:
    return [item.TextValue for item in group[0].ContentSequence
            if item.ValueType == "TEXT" and item.ConceptNameCodeSequence[0].CodeValue == "121106"]


def _codes(*named) -> set:
    return {(c.value, c.scheme_designator) for c in named}


@pytest.fixture(scope="module")
def leg_result(pneumonia_bundle):
    leg = str(pydicom_data() / "RG3_UNCR.dcm")  # a leg film: outside the pneumonia model's intended use
    with open_bundle(pneumonia_bundle) as model:
        return model.predict(leg), leg


def test_a_flagged_study_is_not_evaluated_and_its_warnings_are_whole(leg_result):
    r, leg = leg_result
    assert "outside_intended_use" in r.not_assessed
    group = _main_group(_read_back(r, leg))
    evaluations = _evaluations(group)
    finding = ("121071", "DCM")
    assert (finding, ("373121007", "SCT")) in evaluations  # Finding = Not Evaluated
    assert not [v for name, v in evaluations if name == finding and v != ("373121007", "SCT")]  # no plain finding
    answer = {v for name, v in evaluations if name == ("unvouched-answer", "99MEDEXPORT")}
    assert answer == {("233604007", "SCT") if lab == "pneumonia" else (lab, "99MEDEXPORT") for lab in r.finding_labels()}
    assert (("not-assessed-because", "99MEDEXPORT"), ("outside_intended_use", "99MEDEXPORT")) in evaluations
    texts = _texts(group)
    long = [w.message for w in r.warnings if len(w.message) > 64]
    assert long, "the leg film's intended-use warning is longer than a code meaning may be"
    assert all(w.message in texts for w in r.warnings)  # each warning in words, whole
    measured = _measurements(group)
    for label, threshold in r.thresholds.items():
        assert measured[(f"{label}-score", "99MEDEXPORT")][0] == pytest.approx(r.scores[label], abs=1e-6)
        assert measured[(f"{label}-threshold", "99MEDEXPORT")][:2] == (pytest.approx(threshold, abs=1e-6), "1")


def test_an_unflagged_positive_study_is_a_plain_finding(leg_result):
    r, leg = leg_result
    positive = replace(r, warnings=(), scores={**r.scores, "pneumonia": 0.99})
    evaluations = _evaluations(_main_group(_read_back(positive, leg)))
    assert (("121071", "DCM"), ("233604007", "SCT")) in evaluations
    assert not [e for e in evaluations if e[0] == ("unvouched-answer", "99MEDEXPORT")]


def test_fetal_biometry_is_recorded_in_loinc_with_ucum_units(fetal_bundle, tmp_path):
    from study_factory import ultrasound

    path = str(tmp_path / "us.dcm")
    ultrasound(0, "P1", "Test^Fetal", "19900101").save_as(path, enforce_file_format=True)
    with open_bundle(fetal_bundle) as model:
        r = model.predict(path)
    assert r.in_mm and r.ellipse is not None
    measured = _measurements(_main_group(_read_back(r, path)))
    loinc = {"head_circumference_mm": codes.cid12005.HeadCircumference,
             "biparietal_diameter_mm": codes.cid12005.BiparietalDiameter,
             "occipitofrontal_diameter_mm": codes.cid12005.OccipitalFrontalDiameter}
    for key, code in loinc.items():
        value, unit, _ = measured[(code.value, "LN")]
        assert (value, unit) == (pytest.approx(r.measurements[key], abs=1e-3), "mm")
    assert not [k for k in measured if k[0].startswith(("head_circ", "biparietal", "occipito"))]  # no private codes
    ga = r.measurements["gestational_age_weeks"]
    if ga is not None:
        value, unit, method = measured[(codes.LN.GestationalAge.value, "LN")]
        assert (value, unit, method) == (pytest.approx(ga, abs=1e-3), "wk", codes.cid12013.HCHadlock1984.value)


def test_the_ecg_sr_has_heart_rate_rr_statistics_and_the_deciding_leads(ecg_bundle, pydicom_file):
    path = pydicom_file("waveform_ecg.dcm")
    with open_bundle(ecg_bundle) as model:
        r = model.predict(path)
    group = _main_group(_read_back(r, path))
    measured = _measurements(group)
    assert measured[(codes.LN.HeartRate.value, "LN")][:2] == (pytest.approx(r.stats["heart_rate_bpm"]), "{H.B.}/min")
    assert measured[("rr_cv", "99MEDEXPORT")][0] == pytest.approx(r.stats["rr_cv"])
    assert measured[("n_beats", "99MEDEXPORT")][0] == len(r.beats)
    leads = [v for name, v in _evaluations(group) if name == (codes.DCM.LeadID.value, "DCM")]
    names = {"I": "LeadI", "II": "LeadII", "III": "LeadIII", "aVR": "AvrAugmentedVoltageRight",
             "aVL": "AvlAugmentedVoltageLeft", "aVF": "AvfAugmentedVoltageFoot"}
    assert leads == [(getattr(codes.cid3001, names.get(lead, f"Lead{lead}")).value, "MDC") for lead in r.leads]
    assert any(t.startswith("decided by lead") for t in _texts(group))


def test_detections_are_counted_per_label(det_bundle, tmp_path):
    from study_factory import smear

    path = str(tmp_path / "smear.dcm")
    smear(0, "P2", "Test^Smear", "19900101").save_as(path, enforce_file_format=True)
    with open_bundle(det_bundle) as model:
        r = model.predict(path)
    assert sum(r.counts.values()) > 0
    sr = _read_back(r, path)
    groups = sr.content.get_image_measurement_groups()
    counted = {}
    for g in groups[1:]:
        m = _measurements(g)
        counted[_code(g.finding_type)] = m[("111406", "DCM")][0]  # Number of similar findings
    from medexport.engine.codes import BLOOD_CELLS, code_for

    assert counted == {code_for(BLOOD_CELLS, k)[:2]: n for k, n in r.counts.items()}
    assert len(sr.content.get_planar_roi_measurement_groups()) == len(r.detections)
