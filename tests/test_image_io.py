"""Reading real DICOM (pydicom-data, pydicom) and PNG files into display greyscale."""
import numpy as np
import pytest

from medexport.engine.errors import InvalidInputError
from medexport.engine.io import read_image
from medexport.engine.io.dicom import window


def test_png_chest_xray(cxr):
    study = read_image(cxr[0])
    assert study.kind == "png" and study.pixels.shape == (512, 512)
    assert study.pixels.dtype == np.float32 and 0 <= study.pixels.min() < study.pixels.max() <= 1
    assert len(study.sha256) == 64


def test_monochrome1_radiograph_is_inverted(dcm):
    """RG1 is MONOCHROME1 (low stored value = white): after reading, 1.0 must be white."""
    import pydicom

    ds = pydicom.dcmread(dcm("RG1_UNCR.dcm"))
    study = read_image(dcm("RG1_UNCR.dcm"))
    assert study.meta["greyscale"]["photometric"] == "MONOCHROME1"
    raw = ds.pixel_array.astype(float)
    # brightest stored values must come out darkest
    assert study.pixels[raw >= np.percentile(raw, 99)].mean() < study.pixels[raw <= np.percentile(raw, 1)].mean()


@pytest.mark.parametrize("compressed,reference", [
    ("RG1_J2KR.dcm", "RG1_UNCR.dcm"),  # JPEG 2000 lossless
    ("emri_small_RLE.dcm", "emri_small.dcm"),  # RLE
    ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm"),  # JPEG-LS
    ("MR2_J2KR.dcm", "MR2_UNCR.dcm"),
])
def test_lossless_compressed_equals_uncompressed(dcm, compressed, reference):
    a = read_image(dcm(compressed), frame=0)
    b = read_image(dcm(reference), frame=0)
    np.testing.assert_array_equal(a.pixels, b.pixels)


def test_lossy_jpeg2000_close_to_original(dcm):
    a, b = read_image(dcm("RG1_J2KI.dcm")).pixels, read_image(dcm("RG1_UNCI.dcm")).pixels
    assert np.abs(a - b).mean() < 0.02


def test_window_from_header_is_applied(dcm):
    import pydicom
    from pydicom.pixels import apply_modality_lut

    path = dcm("693_UNCR.dcm")  # CT with rescale and window
    ds = pydicom.dcmread(path)
    study = read_image(path)
    hu = apply_modality_lut(ds.pixel_array, ds)
    c, w = study.meta["greyscale"]["center"], study.meta["greyscale"]["width"]
    assert study.pixels[hu <= c - w / 2].max() == 0.0 and study.pixels[hu >= c + w / 2].min() == 1.0


def test_voi_lut_and_modality_lut_files(dcm):
    assert read_image(dcm("vlut_04.dcm")).meta["greyscale"]["voi"] == "lut"
    study = read_image(dcm("mlut_18.dcm"))
    assert study.pixels.max() == 1.0 and study.pixels.min() == 0.0


def test_window_linear_matches_standard():
    values = np.array([0, 39.5, 40, 40.5, 100], np.float32)
    out = window(values, center=40, width=1)  # width 1: a threshold at c - 0.5
    assert list(out) == [0, 0, 1, 1, 1]  # PS3.3 C.11.2.1.2: x <= c - 0.5 -> min
    out = window(np.array([-1000, 40, 1000], np.float32), 40, 400)
    assert out[0] == 0 and out[2] == 1 and abs(out[1] - 0.5012) < 1e-3


def test_multiframe_needs_a_frame(dcm):
    with pytest.raises(InvalidInputError, match=r"\(0028,0008\) Number of Frames"):
        read_image(dcm("emri_small.dcm"))
    assert read_image(dcm("emri_small.dcm"), frame=3).frames == 10
    with pytest.raises(InvalidInputError, match="frame 10"):
        read_image(dcm("emri_small.dcm"), frame=10)


def test_colour_dicom_is_refused_naming_the_tag(dcm):
    with pytest.raises(InvalidInputError, match=r"\(0028,0004\) Photometric Interpretation RGB"):
        read_image(dcm("US1_UNCR.dcm"))


def test_waveform_has_no_pixel_data(pydicom_file):
    with pytest.raises(InvalidInputError, match=r"\(7FE0,0010\) Pixel Data"):
        read_image(pydicom_file("waveform_ecg.dcm"))


def test_undecodable_jpeg_names_transfer_syntax(pydicom_file):
    with pytest.raises(InvalidInputError, match=r"transfer syntax JPEG .*1\.2\.840\.10008\.1\.2\.4\.\d+"):
        read_image(pydicom_file("JPEG-lossy.dcm"))


def test_not_an_image(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    with pytest.raises(InvalidInputError, match="neither DICOM nor a picture"):
        read_image(bad)
    with pytest.raises(InvalidInputError, match="does not exist"):
        read_image(tmp_path / "missing.dcm")


def test_truncated_dicom_is_a_clear_error(dcm, tmp_path):
    data = open(dcm("RG1_UNCR.dcm"), "rb").read()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(InvalidInputError):
        read_image(cut)


def test_input_file_is_never_modified(dcm, tmp_path):
    import hashlib
    import shutil

    copy = tmp_path / "rg.dcm"
    shutil.copy(dcm("RG3_UNCI.dcm"), copy)
    before = hashlib.sha256(copy.read_bytes()).hexdigest()
    study = read_image(copy)
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == before == study.sha256


def test_array_inputs():
    assert read_image(np.full((30, 40), 255, np.uint8)).pixels.max() == 1.0
    with pytest.raises(InvalidInputError, match="2-D greyscale"):
        read_image(np.zeros((3, 30, 40)))
    with pytest.raises(InvalidInputError, match="NaN"):
        read_image(np.array([[np.nan, 1.0]]))
