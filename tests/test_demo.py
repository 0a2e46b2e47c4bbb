"""`medexport demo`: hippocampus-mr is one of the demo bundles, and the headless demo prints its three
volumes for a real DICOM MR series and a held-out NIfTI (issue 29, "Everywhere else")."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from medexport.export import demo

pytestmark = pytest.mark.slow


def test_hippocampus_is_a_demo_with_int8_and_real_volume_studies():
    opts = demo.DEMOS["hippocampus-mr"]
    assert set(opts["targets"]) == {"openvino", "onnxruntime"} and "int8" in opts["precisions"]
    studies = demo.demo_studies()["hippocampus-mr"]
    assert Path(studies[0]).is_dir() and len(list(Path(studies[0]).iterdir())) == 32  # a DICOM MR series
    assert studies[1].endswith(".nii.gz") and Path(studies[1]).is_file()
    from medexport.models.registry import WEIGHTS_DIR

    val = (WEIGHTS_DIR / "hippocampus-mr.val.csv").read_text()
    assert Path(studies[1]).name in val  # held out from training


def test_headless_demo_prints_the_three_volumes_of_a_series_and_a_nifti(hippo_bundle, tmp_path, capsys):
    from medexport.engine.signing import sign_bundle

    signed = tmp_path / "hippocampus-mr"
    shutil.copytree(hippo_bundle, signed)
    sign_bundle(signed, demo.DEMO_SIGN_KEY)  # as build_demos signs it; run_headless trusts only the demo key
    assert not demo.is_current(signed, "hippocampus-mr", demo.DEMOS["hippocampus-mr"])  # lacks the demo's artifacts
    assert demo.run_headless([signed], {"hippocampus-mr": demo.demo_studies()["hippocampus-mr"]}) == 0
    out = capsys.readouterr().out
    assert out.startswith("PASS hippocampus-mr")
    volumes = re.findall(r"decision: anterior ([\d.]+) mL, posterior ([\d.]+) mL, total ([\d.]+) mL", out)
    assert len(volumes) == 2, out
    for anterior, posterior, total in volumes:  # an adult hippocampus crop: each part 1-3 mL
        assert 1.0 < float(anterior) < 3.0 and 1.0 < float(posterior) < 3.0
        assert float(total) == pytest.approx(float(anterior) + float(posterior), abs=0.011)
    assert "32 x 51 x 35 voxels" in out and "dicom" in out and "nifti" in out


def test_a_skipped_artifact_must_be_one_the_build_makes_and_never_a_needed_fp32_rung():
    from medexport.engine.errors import ConfigurationError
    from medexport.export.build import BuildOptions, _check_skip

    _check_skip(BuildOptions(**demo.DEMOS["hippocampus-mr"]))  # the demo's own skip is valid
    with pytest.raises(ConfigurationError, match="tensorrt-int8, which this build does not make"):
        _check_skip(BuildOptions(targets=["openvino"], precisions=["fp32", "int8"], skip=("tensorrt-int8",)))
    with pytest.raises(ConfigurationError, match="openvino-fp32 cannot be skipped"):
        _check_skip(BuildOptions(targets=["openvino"], precisions=["fp32", "int8"], skip=("openvino-fp32",)))
    _check_skip(BuildOptions(targets=["openvino"], precisions=["fp32", "int8"], skip=("openvino-fp32", "openvino-int8")))
