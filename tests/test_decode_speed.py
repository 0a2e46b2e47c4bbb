"""Reduced-resolution decoding (engine/io/fast_decode.py) and the one-pass crop + resize."""
from __future__ import annotations

import numpy as np
import pytest

from medexport.engine.io import fast_decode
from medexport.engine.io.image import read_image
from medexport.engine.manifest import ImagePreprocess
from medexport.engine.preprocess import decode_size, image_to_tensor, resize

SPEC = ImagePreprocess(size=(224, 224))


def test_levels_stop_before_the_model_input():
    assert fast_decode.levels_for((1955, 1841), (224, 224)) == 3  # 245 x 231; 1/16 would be 123 x 116
    assert fast_decode.levels_for((1760, 1760), (224, 224)) == 2  # 1/8 is 220 < 224
    assert fast_decode.levels_for((300, 300), (224, 224)) == 0
    assert fast_decode.levels_for((8192, 8192), (8, 8), limit=5) == 5


def test_jpeg2000_reduced_where_pillow_would_refuse(dcm):
    # Pillow's own ``reduce`` rounds 1841 / 4 down to 460 while OpenJPEG gives 461: 1/4 and below
    # failed with "broken data stream" on this file; the reader sets the size OpenJPEG produces
    study = read_image(dcm("RG1_J2KR.dcm"), min_size=decode_size(SPEC))
    assert study.pixels.shape == (245, 231)
    assert study.full_shape == (1955, 1841)
    assert "reduce 3" in study.meta["decoded"]


def test_reduced_values_keep_their_meaning(dcm):
    """Stored values come back unscaled (Pillow widens 15 bits to 16): the display chain gives the
    same greyscale as the full decode averaged over the same 8 x 8 blocks."""
    reduced = read_image(dcm("RG1_J2KR.dcm"), min_size=decode_size(SPEC))
    with fast_decode.full_resolution():
        full = read_image(dcm("RG1_J2KR.dcm"), min_size=decode_size(SPEC))
    assert full.pixels.shape == (1955, 1841) and full.source_shape is None
    blocks = full.pixels[:1952, :1840].reshape(244, 8, 230, 8).mean((1, 3))
    assert np.abs(reduced.pixels[:244, :230] - blocks).mean() < 0.01


@pytest.mark.parametrize("name", ["RG1_UNCR.dcm", "693_J2KR.dcm"])  # uncompressed; signed JPEG 2000
def test_full_decode_where_no_exact_reduction(dcm, name):
    study = read_image(dcm(name), min_size=decode_size(SPEC))
    assert study.source_shape is None and "decoded" not in study.meta


def test_jpeg_baseline_dct_scaling(dcm, tmp_path):
    from medexport.export.bench_worker import jpeg_baseline_copy

    path = tmp_path / "baseline.dcm"
    jpeg_baseline_copy(dcm("RG1_UNCR.dcm"), path)
    reduced = read_image(str(path), min_size=decode_size(SPEC))
    full = read_image(str(path))
    assert reduced.pixels.shape == (245, 231) and "DCT scaling 1/8" in reduced.meta["decoded"]
    a, _ = image_to_tensor(reduced.pixels, SPEC, reduced.source_shape)
    b, _ = image_to_tensor(full.pixels, SPEC, full.source_shape)
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
    study = read_image(dcm("RG1_J2KR.dcm"), min_size=decode_size(SPEC))
    _, geometry = image_to_tensor(study.pixels, SPEC, study.source_shape)
    assert geometry.source_shape == (1955, 1841) and geometry.crop == ((1955 - 1841) // 2, 0, 1841, 1841)


def test_reduced_decode_keeps_scores_within_tolerance(pneumonia_bundle):
    """The build's check (export/steps/validate.py) on the golden studies and pydicom-data's JPEG
    2000 images: reduced vs full decode through the artifact, within its golden tolerance."""
    from medexport.engine import open_bundle
    from medexport.export.steps import validate

    with open_bundle(pneumonia_bundle, backend="openvino", precision="fp32") as model:
        inputs = validate.reduced_decode_inputs(model.task, validate.reduced_decode_paths("image"))
        report = validate.reduced_decode_agreement(model.task, model.infer, inputs,
                                                   model.task.golden_tolerance["fp32"])
    assert report["reduced"] >= 4, report
    assert report["passed"], report


def test_resize_box_at_an_offset_matches_crop_then_resize():
    """Pillow 13's resize(box=...) goes wrong from the middle row on when the box starts more than
    a pixel in (seen on F and L images); the engine crops whole pixels first."""
    rng = np.random.default_rng(1)
    pixels = rng.random((601, 601), dtype=np.float32)
    out = resize(pixels, (224, 224), "box", (84, 0, 517, 433))
    np.testing.assert_allclose(out, resize(pixels[0:433, 84:517], (224, 224), "box"), atol=1e-6)
