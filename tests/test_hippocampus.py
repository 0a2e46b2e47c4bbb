"""hippocampus-mr: a 3-D segmentation through the engine, volumes in mL (issue 29, part 2)."""
from __future__ import annotations

import numpy as np
import pytest

from medexport.engine.compare import dice
from medexport.engine.errors import BundleError, InvalidInputError
from medexport.engine.manifest import VolumePreprocess
from medexport.engine.preprocess import (blend_windows, from_model_axes, reorientation, to_model_axes, volume_windows,
                                         window_starts)
from medexport.engine.tasks.volume_segmentation import labels_from

HIPPO = "volumes/hippocampus-mr"


@pytest.fixture(scope="module")
def hippo(hippo_bundle):
    from medexport.engine.open import open_bundle

    with open_bundle(hippo_bundle, backend="onnxruntime", threads=2) as model:
        yield model


def _held_out(shared) -> str:
    """The first validation volume of the recipe's split (never trained on)."""
    from medexport.models.registry import WEIGHTS_DIR

    row = (WEIGHTS_DIR / "hippocampus-mr.val.csv").read_text().splitlines()[1]
    return row.split(",")[0].rsplit("/", 1)[1]


def test_nifti_mask_on_source_grid_matches_its_label(hippo, shared):
    import nibabel

    name = _held_out(shared)
    r = hippo.predict(str(shared / HIPPO / "images" / name))
    truth = np.asarray(nibabel.load(str(shared / HIPPO / "labels" / name)).dataobj)
    assert r.mask.shape == truth.shape and r.mask.dtype == np.uint8
    scores = [dice(r.mask == k, truth == k) for k in (1, 2)]
    assert np.mean(scores) >= 0.8, scores
    assert set(r.measurements) == {"anterior_volume_ml", "posterior_volume_ml", "total_volume_ml"}


def test_volumes_in_ml_are_voxel_counts_times_voxel_volume(hippo, shared):
    from medexport.engine import read_volume

    source = str(shared / HIPPO / "dicom" / "Study2" / "14_HCropVolume")
    r, study = hippo.predict(source), read_volume(source)
    for k, label in enumerate(r.labels, start=1):
        assert r.measurements[f"{label}_volume_ml"] == pytest.approx((r.mask == k).sum() * study.voxel_volume_ml, abs=1e-4)
    assert r.measurements["total_volume_ml"] == pytest.approx((r.mask > 0).sum() * study.voxel_volume_ml, abs=1e-4)


def test_dicom_series_folder_and_file_list_give_one_mask_in_slice_order(hippo, shared):
    from medexport.engine import read_volume

    folder = shared / HIPPO / "dicom" / "Study1" / "13_HCropVolume"
    study = read_volume(str(folder))
    r = hippo.predict(str(folder))
    assert r.mask.shape == study.shape == (32, 51, 35)  # slices x rows x columns
    assert r.slice_uids == study.slice_uids and len(r.slice_uids) == 32
    assert 0.5 < r.measurements["total_volume_ml"] < 8.0  # an adult hippocampus: ~2-5 mL
    assert "outside_intended_use" not in {w.code for w in r.warnings}
    shuffled = sorted(folder.iterdir(), key=lambda p: p.name[::-1])
    assert np.array_equal(hippo.predict([str(p) for p in shuffled]).mask, r.mask)


def test_blended_windows_equal_one_pass_on_a_volume_that_fits_one_patch(hippo, shared):
    """The engine's one-window answer (argmax of the logits) equals the Gaussian-blended path."""
    name = _held_out(shared)
    prepared = hippo.prepare(str(shared / HIPPO / "images" / name))
    assert len(prepared.meta["origins"]) == 1
    logits = hippo.infer(prepared.feeds["volume"])["logits"]
    blended = labels_from(iter(hippo.task.scores({"logits": logits})), prepared.meta, hippo.task.spec)
    assert np.array_equal(blended, hippo.predict(str(shared / HIPPO / "images" / name)).mask)


def test_sliding_windows_cover_the_volume_with_weights_that_sum_to_one():
    spec = VolumePreprocess(patch=(16, 16, 16), overlap=0.5)
    assert window_starts(40, 16, 0.5) == [0, 8, 16, 24]  # MONAI: step patch x (1 - overlap), last flush
    assert window_starts(41, 16, 0.5) == [0, 8, 16, 24, 25]
    shape = (41, 20, 16)
    origins = volume_windows(shape, spec)
    constant = np.zeros((3, 16, 16, 16), np.float32)
    constant[1] = 1.0
    out = blend_windows([constant] * len(origins), origins, shape, spec)
    assert np.allclose(out[1], 1.0) and np.allclose(out[0], 0.0)  # a partition of unity everywhere


def test_reorientation_round_trips_and_follows_the_affine():
    rng = np.random.default_rng(0)
    voxels = rng.random((4, 5, 6))
    dicom_identity = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)  # slice=z, row=y, col=x (LPS)
    turn = reorientation(dicom_identity, "RAS")
    assert turn == ((2, 1, 0), (0, 1))  # columns run to the left and rows to the back: both flipped for RAS
    assert np.array_equal(from_model_axes(to_model_axes(voxels, turn), turn), voxels)
    nifti_ras = np.diag([-1.0, -1.0, 1.0, 1.0])  # a RAS identity NIfTI, as LPS
    assert reorientation(nifti_ras, "RAS") == ((0, 1, 2), ())


def test_manifest_refuses_a_malformed_volume_preprocess():
    with pytest.raises(BundleError, match="preprocess.patch"):
        VolumePreprocess(patch=(40, 56))
    with pytest.raises(BundleError, match="preprocess.orientation"):
        VolumePreprocess(orientation="RRS")


def test_a_volume_too_small_for_the_window_is_refused(hippo, tmp_path):
    import nibabel

    path = tmp_path / "tiny.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.random.default_rng(0).random((10, 12, 10)).astype(np.float32), np.eye(4)), path)
    with pytest.raises(InvalidInputError, match="half of this model's window"):
        hippo.predict(str(path))


def test_guard_measures_what_predict_answers(hippo, shared, tmp_path):
    """The build's guard (windows from export/volume_data, blended as the engine does) gives the
    Dice and volume error of the masks predict returns; a changed label map counts as a drop."""
    import nibabel

    from medexport.export.guards import GUARDS
    from medexport.export.volume_data import volume_dataset
    from medexport.models.registry import WEIGHTS_DIR

    rows = (WEIGHTS_DIR / "hippocampus-mr.val.csv").read_text().splitlines()[:3]
    listed = tmp_path / "val.csv"
    listed.write_text("\n".join(rows) + "\n")
    val = volume_dataset(str(listed), hippo.task.spec)
    scores = hippo.task.scores(hippo.infer(val.inputs))
    guard = GUARDS["dice_volume"](tuple(hippo.manifest.labels), hippo.manifest.postprocess, hippo.task.spec, max_drop=0.01)
    expected = []
    for line in rows[1:]:
        image, label = (shared / p for p in line.split(","))
        mask, truth = hippo.predict(str(image)).mask, np.asarray(nibabel.load(str(label)).dataobj)
        expected.append(np.mean([dice(mask == k, truth == k) for k in (1, 2)]))
    assert guard.value(val, scores) == pytest.approx(np.mean(expected), abs=1e-9)
    worse = scores.copy()
    worse[:, 0] += 1.0  # background wins every voxel: no hippocampus left
    report = guard.report(val, scores, worse)
    assert not report.passed and report.data["dice_drop"] > 0.01
    assert guard.report(val, scores, scores).passed
