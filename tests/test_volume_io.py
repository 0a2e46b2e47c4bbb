"""Reading volumes (issue 29, part 1): real DICOM series, enhanced multi-frame, NIfTI, and every refusal.

Refusals are made on edited copies of a real series (the shared hippocampus crop, 32 slices of
51 x 35, and the 22-slice brain T1), never on the shared files themselves.
"""
from __future__ import annotations

import hashlib
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medexport.engine import InvalidInputError, VolumeStudy, limits, read_volume
from medexport.models.data import shared_data

VOLUMES = shared_data() / "volumes"
HIPPO = VOLUMES / "hippocampus-mr"
CROP = HIPPO / "dicom" / "Study1" / "13_HCropVolume"
OTHER_CROP = HIPPO / "dicom" / "Study3" / "11_HCropVolume"
T1 = HIPPO / "dicom" / "Study1" / "12-T1post-05670"
NIFTI = HIPPO / "images" / "hippocampus_001.nii.gz"


def _files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.dcm"))


def _digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture
def crop(tmp_path) -> Path:
    """A writable copy of the real 32-slice crop series."""
    out = tmp_path / "series"
    shutil.copytree(CROP, out)
    return out


def _by_position(folder: Path) -> list[Path]:
    """The copy's files in position order (the test's own reference, from pydicom)."""
    def z(path):
        return float(pydicom.dcmread(path, stop_before_pixels=True).ImagePositionPatient[2])

    return sorted(_files(folder), key=z)


def _edit(path: Path, change) -> None:
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path)


def _refused(source, *words) -> InvalidInputError:
    with pytest.raises(InvalidInputError) as info:
        read_volume(source)
    message = str(info.value)
    for word in words:
        assert word in message, message
    assert info.value.expected and info.value.fix, message  # found / expected / fix
    return info.value


# -- readers on real data -------------------------------------------------------------------------
def test_t1_series_geometry_matches_its_headers_and_nibabel():
    v = read_volume(T1)
    assert isinstance(v, VolumeStudy) and v.kind == "dicom" and v.shape == (22, 512, 512)
    assert v.voxels.dtype == np.float32 and not v.voxels.flags.writeable
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in v.files]
    row, col = np.array(headers[0].ImageOrientationPatient[:3]), np.array(headers[0].ImageOrientationPatient[3:])
    normal = np.cross(row, col)
    along = [float(np.array(h.ImagePositionPatient, float) @ normal) for h in headers]
    assert along == sorted(along)  # sorted along the slice normal
    # the step is the position step (6.5 mm), not (0018,0050) Slice Thickness (5 mm)
    assert v.spacing[0] == pytest.approx(6.5, abs=1e-3) and float(headers[0].SliceThickness) == 5
    assert v.spacing[1:] == (0.4297, 0.4297)
    assert np.allclose(v.affine @ [0, 0, 0, 1], [*map(float, headers[0].ImagePositionPatient), 1])
    assert v.slice_uids == tuple(str(h.SOPInstanceUID) for h in headers) and len(set(v.slice_uids)) == 22
    assert v.voxel_volume_ml == pytest.approx(6.5 * 0.4297 ** 2 / 1000, rel=1e-4)
    from nibabel.nicom import dicomwrappers  # an independent reader: each slice's own affine and pixels

    for k in (0, 7, 21):
        wrapper = dicomwrappers.wrapper_from_file(v.files[k])
        for r, c in ((0, 0), (100, 400), (511, 3)):
            assert np.allclose(v.affine @ [k, r, c, 1], wrapper.affine @ [r, c, 0, 1], atol=0.01)
        assert np.array_equal(v.voxels[k], wrapper.get_data())


def test_file_order_and_instance_numbers_do_not_decide_the_order(crop):
    reference = read_volume(crop)
    files = _files(crop)
    random.Random(7).shuffle(files)
    numbers = list(range(1, len(files) + 1))
    random.Random(8).shuffle(numbers)
    for path, number in zip(files, numbers):  # (0020,0013) Instance Number scrambled
        _edit(path, lambda ds: setattr(ds, "InstanceNumber", number))
    shuffled = read_volume([str(p) for p in files])
    assert np.array_equal(shuffled.voxels, read_volume(crop).voxels)
    assert np.array_equal(shuffled.voxels, reference.voxels) and np.array_equal(shuffled.affine, reference.affine)
    assert shuffled.slice_uids == reference.slice_uids
    z = [float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in shuffled.files]
    assert z == sorted(z)


@pytest.mark.parametrize("series", sorted((HIPPO / "dicom").glob("Study*/*_HCropVolume")), ids=lambda p: p.name)
def test_hippocampus_crop_series(series):
    v = read_volume(series)
    first = _by_position(series)[0]
    ds = pydicom.dcmread(first)
    assert v.shape == (len(_files(series)), ds.Rows, ds.Columns) and v.spacing == (1.0, 1.0, 1.0)
    assert np.array_equal(v.voxels[0], ds.pixel_array.astype(np.float32))
    assert np.allclose(v.affine @ [0, 0, 0, 1], [*map(float, ds.ImagePositionPatient), 1])
    assert v.voxel_volume_ml == pytest.approx(0.001) and v.meta["Modality"] == "MR"


def test_per_slice_rescale_is_applied_slice_by_slice(crop):
    stored = {}
    for i, path in enumerate(_by_position(crop)):
        ds = pydicom.dcmread(path)
        stored[i] = ds.pixel_array.astype(np.float64)
        ds.RescaleSlope, ds.RescaleIntercept = f"{1 + i / 8:g}", f"{-100 + 3 * i}"
        ds.save_as(path)
    v = read_volume(crop)
    for i, values in stored.items():
        assert np.allclose(v.voxels[i], values * (1 + i / 8) + (-100 + 3 * i))


def test_nifti_voxels_and_affine_are_nibabels_in_lps():
    import nibabel

    v = read_volume(NIFTI)
    image = nibabel.load(NIFTI)
    assert v.kind == "nifti" and v.shape == image.shape and v.slice_uids == ()
    assert np.array_equal(v.voxels, image.get_fdata(dtype=np.float32))
    assert np.allclose(v.affine, np.diag([-1, -1, 1, 1]) @ image.affine)
    assert v.spacing == tuple(float(z) for z in image.header.get_zooms())


def test_chest_ct_nifti():
    v = read_volume(VOLUMES / "chest-ct" / "ct.nii.gz")
    assert v.shape == (512, 512, 133) and v.spacing == (0.703125, 0.703125, 2.5)
    assert v.voxels.min() >= -2048 and -1100 < np.median(v.voxels[:, :, 60]) < 200  # HU (scl_inter -1024 applied)
    assert math.isclose(v.voxel_volume_ml * v.voxels.size, 0.703125 ** 2 * 2.5 * v.voxels.size / 1000)


def test_enhanced_ct_frames_sorted_along_the_normal():
    from pydicom.data import get_testdata_file

    path = get_testdata_file("eCT_Supplemental.dcm")
    ds = pydicom.dcmread(path)
    v = read_volume(path)
    assert v.kind == "dicom-enhanced" and v.shape == (2, 512, 512)
    # orientation [-1 0 0 0 1 0]: the normal is -z, so frame 2 (z = -149) comes before frame 1 (z = -159)
    assert v.frames == (2, 1) and v.spacing == pytest.approx((10.0, 0.388672, 0.388672))
    assert np.allclose(v.affine @ [0, 0, 0, 1], [99.5, -301.5, -149.0, 1])
    assert np.array_equal(v.voxels[0], ds.pixel_array[1].astype(np.float32) - 1024)  # shared rescale
    assert v.slice_uids == (str(ds.SOPInstanceUID),) * 2


def test_legacy_converted_enhanced_mr_equals_the_classic_series(tmp_path):
    """The real T1 series converted to one multi-frame object (per-frame functional groups) by highdicom."""
    from highdicom.legacy import LegacyConvertedEnhancedMRImage

    datasets = [pydicom.dcmread(f) for f in _files(T1)]
    random.Random(3).shuffle(datasets)
    enhanced = LegacyConvertedEnhancedMRImage(datasets, pydicom.uid.generate_uid(), 99, pydicom.uid.generate_uid(), 1)
    path = tmp_path / "enhanced.dcm"
    enhanced.save_as(path)
    classic, multi = read_volume(T1), read_volume(path)
    assert multi.kind == "dicom-enhanced" and multi.shape == classic.shape
    assert np.array_equal(multi.voxels, classic.voxels) and np.allclose(multi.affine, classic.affine)
    assert sorted(multi.frames) == list(range(1, 23))


# -- refusals -------------------------------------------------------------------------------------
def test_missing_slice_refused_before_decoding(crop):
    files = _by_position(crop)
    files[10].unlink()
    for path in files[:10] + files[11:]:  # every pixel data truncated: only a header refusal can come first
        _edit(path, lambda ds: setattr(ds, "PixelData", ds.PixelData[: len(ds.PixelData) // 2]))
    before = _digest(crop)
    error = _refused(crop, "(0020,0032)", "missing", "2.00 x the median step")
    assert "1 slice(s) missing" in str(error)
    assert _digest(crop) == before  # inputs never modified


def test_duplicate_position_refused(crop):
    files = _by_position(crop)
    copy = crop / "copy.dcm"
    shutil.copy(files[5], copy)
    _edit(copy, lambda ds: setattr(ds, "SOPInstanceUID", pydicom.uid.generate_uid()))
    _refused(crop, "same (0020,0032) Image Position (Patient)")


def test_the_same_instance_twice_refused(crop):
    shutil.copy(_files(crop)[3], crop / "again.dcm")
    _refused(crop, "(0008,0018) SOP Instance UID")


@pytest.mark.parametrize("keyword, value, tag", [
    ("ImageOrientationPatient", [0, 1, 0, 0, 0, -1], "(0020,0037)"),
    ("PixelSpacing", [1.2, 1.2], "(0028,0030)"),
    ("SeriesInstanceUID", "1.2.3.4", "(0020,000E)"),
    ("FrameOfReferenceUID", "1.2.3.5", "(0020,0052)"),
    ("GantryDetectorTilt", 12.5, "(0018,1120)"),
    ("ImagePositionPatient", None, "(0020,0032)"),
])
def test_contradictory_slice_refused(crop, keyword, value, tag):
    def change(ds):
        if value is None:
            del ds[keyword]
        else:
            setattr(ds, keyword, value)

    _edit(_by_position(crop)[12], change)
    _refused(crop, tag)


def test_mixed_size_refused(crop):
    def smaller(ds):
        ds.PixelData = ds.pixel_array[:-1].tobytes()
        ds.Rows -= 1

    _edit(_by_position(crop)[4], smaller)
    _refused(crop, "(0028,0010) Rows / (0028,0011) Columns")


def test_tilted_gantry_refused(crop):
    tilt = math.tan(math.radians(15))
    for k, path in enumerate(_by_position(crop)):
        _edit(path, lambda ds: setattr(ds, "ImagePositionPatient", [0.0, k * tilt, float(k + 1)]))
    _refused(crop, "gantry tilt of about 15.0 degrees", "not supported")


def test_uneven_step_refused(crop):
    path = _by_position(crop)[8]
    _edit(path, lambda ds: setattr(ds, "ImagePositionPatient", [0.0, 0.0, 9.3]))
    _refused(crop, "step varies", "(0020,0032)")


def test_two_series_in_one_folder_refused(crop):
    for path in _files(OTHER_CROP):
        shutil.copy(path, crop / f"other-{path.name}")
    _refused(crop, "2 different (0020,000E) Series Instance UID")


def test_one_slice_or_no_dicom_refused(tmp_path, crop):
    _refused(_files(crop)[0], "1 slice(s)")
    (crop / "notes.txt").write_text("not a slice")
    _refused(crop, "notes.txt")
    _refused(tmp_path / "nowhere", "does not exist")
    _refused(42, "int")


def test_enhanced_without_functional_groups_refused():
    from pydicom.data import get_testdata_file

    _refused(get_testdata_file("emri_small.dcm"), "(5200,9230) Per-frame Functional Groups Sequence")


def test_volume_limits_checked_before_decoding(crop, monkeypatch):
    monkeypatch.setattr(limits, "MAX_VOLUME_VOXELS", 32 * 51 * 35 - 1)
    _refused(crop, "57,120 voxels", "engine/limits.py")
    _refused(NIFTI, "engine/limits.py")
    monkeypatch.setattr(limits, "MAX_SERIES_FILES", 31)
    _refused(crop, "32 files")


def test_nifti_refusals(tmp_path):
    import nibabel

    image = nibabel.load(NIFTI)
    data = image.get_fdata(dtype=np.float32)
    four = tmp_path / "4d.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.stack([data, data], -1), image.affine), four)
    _refused(four, "shape (35, 51, 35, 2)")
    nan = data.copy()
    nan[3, 4, 5] = np.nan
    path = tmp_path / "nan.nii"
    nibabel.save(nibabel.Nifti1Image(nan, image.affine), path)
    _refused(path, "NaN")
    bare = nibabel.Nifti1Image(data, None)
    bare.header.set_sform(None, code=0)
    bare.header.set_qform(None, code=0)
    path = tmp_path / "bare.nii"
    nibabel.save(bare, path)
    _refused(path, "sform_code 0")
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(NIFTI.read_bytes()[:4000])
    _refused(cut, "could not be read as NIfTI")
