"""Reduced-resolution decoding (engine/io/dicom/pixels.py) and the one-pass crop + resize."""
from __future__ import annotations

import numpy as np
import pytest

from medexport.engine.io.dicom import pixels as dicom_pixels
from medexport.engine.io.image import read_image
from medexport.engine.manifest import ImagePreprocess
from medexport.engine.preprocess import decode_size, image_to_tensor, resize

SPEC = ImagePreprocess(size=(224, 224))


def read_reduced(path, **kw):
    return read_image(path, min_size=decode_size(SPEC, 2), **kw)


def test_reduced_decoding_only_where_the_artifact_was_checked(dcm):
    """An artifact whose build check failed (decode_margin 0) decodes in full unless forced;
    --full-decode (or MEDEXPORT_REDUCED_DECODE=0) wins over a passed check."""
    assert decode_size(SPEC, 0) is None
    assert read_image(dcm("RG1_J2KR.dcm"), min_size=decode_size(SPEC, 0)).reduction is None
    assert decode_size(SPEC, 1) == (224, 224) and decode_size(SPEC, 2) == (448, 448)
    with dicom_pixels.full_resolution():
        assert decode_size(SPEC, 2) is None
    with dicom_pixels.reduced_resolution():
        assert decode_size(SPEC, 0) == (448, 448) and decode_size(SPEC, 1) == (224, 224)


def test_levels_stop_before_the_model_input():
    assert dicom_pixels.levels_for((1955, 1841), (224, 224)) == 3  # 245 x 231; 1/16 would be 123 x 116
    assert dicom_pixels.levels_for((1760, 1760), (224, 224)) == 2  # 1/8 is 220 < 224
    assert dicom_pixels.levels_for((300, 300), (224, 224)) == 0
    assert dicom_pixels.levels_for((8192, 8192), (8, 8), limit=5) == 5


def test_jpeg2000_reduced_where_pillow_would_refuse(dcm):
    # Pillow's own ``reduce`` rounds 1841 / 4 down to 460 while OpenJPEG gives 461: 1/4 and below
    # failed with "broken data stream" on this file; the reader sets the size OpenJPEG produces
    study = read_reduced(dcm("RG1_J2KR.dcm"))
    assert study.pixels.shape == (489, 461)  # >= 2 x 224 (preprocess.DECODE_MARGIN)
    assert study.full_shape == (1955, 1841)
    assert "reduce 2" in study.meta["decoded"]


def test_reduced_values_keep_their_meaning(dcm):
    """Stored values come back unscaled (Pillow widens 15 bits to 16): the display chain gives the
    same greyscale as the full decode averaged over the same 8 x 8 blocks."""
    reduced = read_reduced(dcm("RG1_J2KR.dcm"))
    full = read_image(dcm("RG1_J2KR.dcm"), min_size=decode_size(SPEC))
    assert full.pixels.shape == (1955, 1841) and full.reduction is None
    blocks = full.pixels[:1952, :1840].reshape(488, 4, 460, 4).mean((1, 3))
    assert np.abs(reduced.pixels[:488, :460] - blocks).mean() < 0.01


@pytest.mark.parametrize("name", ["693_J2KR.dcm", "693_UNCR.dcm", "JPEG-LL.dcm"])  # signed; lossless JPEG
def test_full_decode_where_no_exact_reduction(dcm, name):
    study = read_reduced(dcm(name))
    assert study.reduction is None and "decoded" not in study.meta


def test_uncompressed_block_mean_is_the_full_decode_averaged(dcm):
    import pydicom

    study = read_reduced(dcm("RG1_UNCR.dcm"))
    assert study.pixels.shape == (488, 460) and study.reduction.step == 4
    ds = pydicom.dcmread(dcm("RG1_UNCR.dcm"))
    from medexport.engine.io.dicom import to_display

    blocks = ds.pixel_array[:1952, :1840].reshape(488, 4, 460, 4).astype(np.float64).mean((1, 3))
    expected, _ = to_display(ds, blocks.astype(np.float32), "RG1_UNCR.dcm")
    np.testing.assert_allclose(study.pixels, expected, atol=1e-5)


def test_jpeg_baseline_dct_scaling(dcm, tmp_path):
    from medexport.export.reencode import jpeg_baseline_copy

    path = tmp_path / "baseline.dcm"
    jpeg_baseline_copy(dcm("RG1_UNCR.dcm"), path)
    reduced = read_reduced(str(path))
    full = read_image(str(path))
    assert reduced.pixels.shape == (489, 461) and "DCT scaling 1/4" in reduced.meta["decoded"]
    a, _ = image_to_tensor(reduced.pixels, SPEC, reduced.reduction)
    b, _ = image_to_tensor(full.pixels, SPEC, full.reduction)
    assert np.abs(a - b).mean() < 0.02  # normalised units


def test_one_pass_crop_and_resize_matches_the_old_path():
    rng = np.random.default_rng(0)
    pixels = rng.random((601, 433), dtype=np.float32)
    spec = ImagePreprocess(size=(224, 224), crop="center_square", mean=(0.5,), std=(0.25,))
    tensor, geometry = image_to_tensor(pixels, spec)
    side = 433
    top = (601 - side) // 2
    old = (resize(pixels[top:top + side, :side], (224, 224), "box") - 0.5) / 0.25
    assert geometry.crop == (top, 0, side, side)
    np.testing.assert_allclose(tensor[0, 0], old, atol=1e-5)


def test_geometry_stays_on_the_full_image(dcm):
    study = read_reduced(dcm("RG1_J2KR.dcm"))
    _, geometry = image_to_tensor(study.pixels, SPEC, study.reduction)
    assert geometry.source_shape == (1955, 1841) and geometry.crop == ((1955 - 1841) // 2, 0, 1841, 1841)


def test_reduced_decode_check_in_the_validation_report(pneumonia_bundle, tmp_path):
    """The build's check (export/steps/validate.py) on the golden studies, pydicom-data's
    uncompressed and JPEG 2000 images and a baseline JPEG: reduced vs full decode through the
    artifact at 1x and 2x its input. The artifact's decode_margin is the smallest margin within its
    tolerance, and the engine reads that way by default."""
    import json

    from medexport.engine import open_bundle
    from medexport.engine.bundle_read import read_manifest
    from medexport.export.steps import validate

    manifest = read_manifest(pneumonia_bundle)[0]
    for artifact in manifest.artifacts:
        report = json.loads((pneumonia_bundle / artifact.report).read_text())["reduced_decode"]
        margins = report["margins"]
        assert set(margins) == {"1", "2"} and all(m["reduced"] >= 5 for m in margins.values())
        passing = [int(m) for m, a in margins.items() if a["max_disagreement"] <= artifact.tolerance]
        assert artifact.decode_margin == report["decode_margin"] == min(passing, default=0)
        assert any("DCT scaling" in s["decoded"] for s in margins["2"]["studies"])
    with open_bundle(pneumonia_bundle, backend="openvino", precision="fp32") as model:
        inputs = validate.reduced_decode_inputs(model.task, validate.reduced_decode_paths("image", tmp_path), 2)
        again = validate.reduced_decode_agreement(model.task, model.infer, inputs, 0.05)
        checked = next(a for a in manifest.artifacts if a.key == "openvino-fp32")
        assert model.task.decode_margin == checked.decode_margin
        rg1 = next(p for p in validate.reduced_decode_paths("image", tmp_path) if p.endswith("RG1_UNCR.dcm"))
        assert ("decoded" in model.predict(rg1).input_meta) == (checked.decode_margin > 0)
    report = json.loads((pneumonia_bundle / "reports" / "openvino-fp32.json").read_text())["reduced_decode"]
    assert abs(again["max_disagreement"] - report["margins"]["2"]["max_disagreement"]) < 1e-4
    assert again["passed"], again


def test_resize_box_at_an_offset_matches_crop_then_resize():
    """Pillow 13's resize(box=...) goes wrong from the middle row on when the box starts more than
    a pixel in (seen on F and L images); the engine crops whole pixels first."""
    rng = np.random.default_rng(1)
    pixels = rng.random((601, 601), dtype=np.float32)
    out = resize(pixels, (224, 224), "box", (84, 0, 517, 433))
    np.testing.assert_allclose(out, resize(pixels[0:433, 84:517], (224, 224), "box"), atol=1e-6)
