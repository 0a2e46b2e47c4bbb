"""tests/study_factory.py makes objects the demo bundles take: each kind runs through its bundle in
strict mode (a header that contradicts the bundle's intended use is refused) and warns of nothing
about intended use; the ultrasound's calibration is read from its header."""
from __future__ import annotations

import pytest
import study_factory

from medexport.engine import open_bundle
from medexport.engine.pacs.listener import bundle_accepts

BUNDLE_OF = {"chest_film": "pneumonia_bundle", "ultrasound": "fetal_bundle", "smear": "det_bundle",
             "ecg": "ecg_bundle"}


@pytest.mark.parametrize("kind", study_factory.KINDS)
def test_each_kind_is_a_study_its_bundle_is_for(kind, request, tmp_path):
    bundle = request.getfixturevalue(BUNDLE_OF[kind])
    ds = study_factory.MAKERS[kind](3, "FACTORY0003", "FACTORY^THREE", study_factory.birth_date(kind, 3))
    path = tmp_path / f"{kind}.dcm"
    ds.save_as(path, enforce_file_format=True)
    with open_bundle(bundle, strict=True) as model:
        assert bundle_accepts(model.manifest, ds)
        result = model.predict(str(path))
    codes = [w.code for w in result.warnings]
    assert "outside_intended_use" not in codes and "no_intended_use_check" not in codes, result.warnings
    if kind == "ultrasound":
        assert result.spacing_source.startswith("DICOM (0018,6011)") and result.in_mm
        assert result.pixel_spacing_mm[0] == pytest.approx(ds.SequenceOfUltrasoundRegions[0].PhysicalDeltaY * 10)


def test_mixed_cycles_the_kinds_with_distinct_patients_and_fresh_uids():
    studies = study_factory.mixed(8, "MIX")
    assert [study_factory.kind_of(ds) for ds in studies] == list(study_factory.KINDS) * 2
    for key in ("PatientID", "PatientName", "PatientBirthDate", "StudyInstanceUID", "SOPInstanceUID"):
        assert len({str(ds.get(key)) for ds in studies}) == 8, key
    assert all(ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID for ds in studies)
