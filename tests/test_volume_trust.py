"""hippocampus-mr vouches only for volumes like its training crops (issue #29): a whole-brain series
or a chest CT is flagged outside its intended use by extent (refused in strict mode) and out of
distribution by its features; a real hippocampus crop is not; the PDF states the intended use."""
from __future__ import annotations

import json

import numpy as np
import pytest

from medexport.engine.intended_use import OutsideIntendedUseError, extent_mismatch
from medexport.engine.manifest import IntendedUse

WHOLE_BRAIN = ("volumes", "hippocampus-mr", "dicom", "Study1", "12-T1post-05670")  # 22 x 512 x 512, T1post
CROP = ("volumes", "hippocampus-mr", "dicom", "Study1", "13_HCropVolume")  # 32 x 51 x 35 at 1 mm
CHEST_CT = ("volumes", "chest-ct", "ct.nii.gz")  # 512 x 512 x 133


def _path(shared, parts) -> str:
    return str(shared.joinpath(*parts))


def _codes(result) -> set:
    return {w.code for w in result.warnings}


def test_registry_extent_covers_every_training_crop():
    """The stated ranges hold all 201 crops the recipe reads, and not a whole-brain series or the chest CT."""
    from medexport.engine.manifest import VolumePreprocess
    from medexport.models.recipes.hippocampus_mr import crop_extents
    from medexport.models.registry import get_config

    config = get_config("hippocampus-mr")
    intended = IntendedUse(**config.intended_for)
    found = crop_extents(VolumePreprocess(**config.preprocess))
    assert len(found) == 201
    for extent, spacing in found:
        assert extent_mismatch(intended, tuple(np.round(extent / spacing)), tuple(spacing), "RAS") is None
    text = extent_mismatch(intended, (512, 512, 22), (0.43, 0.43, 6.5), "RAS")
    assert text.startswith("a volume of 512 x 512 x 22 voxels of 0.43 x 0.43 x 6.5 mm (220 x 220 x 143 mm in RAS axes); "
                           "this model is for volumes of about 37 x 52 x 38 mm with voxels of 0.8-1.25 mm (T1 MR crops "
                           "around one hippocampus")
    assert text.endswith(": its extent is outside 23-51 x 30-74 x 18-59 mm and its voxel size is outside 0.8-1.25 mm")
    assert extent_mismatch(intended, (35, 51, 32), (1.0, 1.0, 1.0), "RAS") is None
    assert extent_mismatch(intended, (35, 51, 32), (1.0, 1.0, 1.5), "RAS").endswith(
        ": its voxel size is outside 0.8-1.25 mm")


def test_manifest_refuses_a_broken_extent():
    from medexport.engine.errors import MedError

    with pytest.raises(MedError, match="extent_mm"):
        IntendedUse(extent_mm=((10, 5), (1, 2), (1, 2)))
    with pytest.raises(MedError, match="spacing_mm"):
        IntendedUse(spacing_mm=(0, 1))
    assert "extent 23-51 x 30-74 x 18-59 mm; voxels of 0.8-1.25 mm" in \
        IntendedUse(extent_mm=((23, 51), (30, 74), (18, 59)), spacing_mm=(0.8, 1.25)).describe()


def test_bundle_carries_the_extent_and_an_ood_reference(hippo_bundle):
    manifest = json.loads((hippo_bundle / "manifest.json").read_text())
    assert manifest["intended_for"]["extent_mm"] == [[23, 51], [30, 74], [18, 59]]
    ood = manifest["ood"]
    assert ood["feature_output"] == "features" and ood["threshold"] > 0
    rate = ood["report"]["in_distribution"]["flag_rate"]
    assert ood["report"]["in_distribution"]["checked_on"] == 20 and rate <= 0.15  # 97.5th percentile of 20
    assert ood["report"]["other_kinds"]["whole-brain MR"]["flag_rate"] == 1.0


def test_whole_brain_series_is_flagged_and_not_assessed(hippo_bundle, shared):
    from medexport.engine import open_bundle

    with open_bundle(hippo_bundle, strict=False) as model:
        result = model.predict(_path(shared, WHOLE_BRAIN))
    first = next(w for w in result.warnings if w.code == "outside_intended_use")
    assert first.message.startswith("a volume of 512 x 512 x 22 voxels of 0.43 x 0.43 x 6.5 mm (220 x 220 x 143 mm "
                                    "in RAS axes); this model is for volumes of about 37 x 52 x 38 mm")
    assert "out_of_distribution" in _codes(result) and result.ood.flagged
    assert result.headline().startswith("Not assessed: outside the model's intended use")


def test_whole_brain_series_is_refused_in_strict_mode(hippo_bundle, shared):
    from medexport.engine import open_bundle

    with open_bundle(hippo_bundle, strict=True) as model, \
            pytest.raises(OutsideIntendedUseError, match=r"512 x 512 x 22 voxels of 0.43 x 0.43 x 6.5 mm \(220 x 220 x 143 mm"):
        model.predict(_path(shared, WHOLE_BRAIN))


def test_chest_ct_is_refused_in_strict_mode_and_flagged_otherwise(hippo_bundle, shared, tmp_path):
    """The whole CT is refused by extent in strict mode (and by its window count otherwise); a crop
    of it the size of a hippocampus crop is still flagged: CT voxels of 0.7 x 0.7 x 2.5 mm, and
    features unlike the training crops."""
    import nibabel

    from medexport.engine import open_bundle
    from medexport.engine.errors import InvalidInputError

    ct = _path(shared, CHEST_CT)
    with open_bundle(hippo_bundle, strict=True) as model, \
            pytest.raises(OutsideIntendedUseError, match=r"a volume of 512 x 512 x 133 voxels of 0.703 x 0.703 x 2.5 mm \(360 x 360 x 332 mm"):
        model.predict(ct)
    img = nibabel.load(ct)
    crop = tmp_path / "ct-crop.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.asarray(img.dataobj)[224:274, 200:270, 54:78].astype(np.float32), img.affine),
                 str(crop))
    with open_bundle(hippo_bundle, strict=False) as model:
        with pytest.raises(InvalidInputError, match="windows"):
            model.predict(ct)
        result = model.predict(str(crop))
    assert {"outside_intended_use", "out_of_distribution"} <= _codes(result), result.warnings
    assert "50 x 70 x 24 voxels of 0.703 x 0.703 x 2.5 mm (35 x 49 x 60 mm in RAS axes)" in \
        next(w.message for w in result.warnings if w.code == "outside_intended_use")


def test_real_hippocampus_crop_is_not_flagged(hippo_bundle, shared):
    from medexport.engine import open_bundle

    with open_bundle(hippo_bundle, strict=True) as model:  # strict: refused if the extent check misfired
        result = model.predict(_path(shared, CROP))
    assert not _codes(result) & {"outside_intended_use", "out_of_distribution", "no_ood_reference"}
    assert not result.ood.flagged and not result.not_assessed


def test_cli_flags_refuses_and_states_the_intended_use_in_the_pdf(hippo_bundle, shared, tmp_path, capsys):
    from pypdf import PdfReader

    from medexport.export import cli

    brain = _path(shared, WHOLE_BRAIN)
    assert cli.main(["predict", str(hippo_bundle), brain, "--json", "--out", str(tmp_path)]) == 0
    row, = json.loads(capsys.readouterr().out)
    codes = [w["code"] for w in row["warnings"]]
    assert "outside_intended_use" in codes and "out_of_distribution" in codes
    text = " ".join(" ".join(p.extract_text().split()) for p in PdfReader(row["report_file"]).pages)
    assert "Intended use: Demonstration of the medexport volume pipeline" in text
    assert "Intended use: -" not in text
    assert "Result: Not assessed" in text and "the model's answer, not vouched for" in text
    assert cli.main(["predict", str(hippo_bundle), brain, "--strict", "--json"]) == 1
    row, = json.loads(capsys.readouterr().out)
    assert "220 x 220 x 143 mm" in row["error"]
