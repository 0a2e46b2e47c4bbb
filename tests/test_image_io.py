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


def test_waveform_has_no_pixel_data_and_is_called_an_ecg(pydicom_file, tmp_path):
    with pytest.raises(InvalidInputError, match=r"is a DICOM ECG waveform .*ecg-rhythm"):
        read_image(pydicom_file("waveform_ecg.dcm"))
    import pydicom

    ds = pydicom.dcmread(pydicom_file("waveform_ecg.dcm"))
    del ds.WaveformSequence  # a report-like object without pixels
    ds.save_as(tmp_path / "no-pixels.dcm")
    with pytest.raises(InvalidInputError, match=r"\(7FE0,0010\) Pixel Data"):
        read_image(str(tmp_path / "no-pixels.dcm"))


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


# -- every picture mode shows the same greyscale (issue #12, item 3) ----------------------------
def _grey(cxr):
    """A real chest X-ray, small, stretched to the full 0..255 range."""
    from PIL import Image, ImageOps

    with Image.open(cxr[0]) as img:
        return ImageOps.autocontrast(img.convert("L").resize((320, 256)))  # >= the model's 224 px


def _variants(grey):
    from PIL import Image

    arr = np.asarray(grey)
    rgb = grey.convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    perm = np.random.default_rng(0).permutation(256)  # palette entry i shows grey perm[i]: indices are not greys
    palette = Image.fromarray(np.argsort(perm)[arr].astype(np.uint8), "P")
    palette.putpalette(np.repeat(perm, 3).astype(np.uint8).tobytes())
    return {
        "palette.png": (palette, {}), "palette.bmp": (palette, {}),
        "cmyk.jpg": (rgb.convert("CMYK"), {"quality": 100}), "cmyk.tif": (rgb.convert("CMYK"), {}),
        "la.png": (grey.convert("LA"), {}), "rgba.png": (grey.convert("RGBA"), {}), "rgb.png": (rgb, {}),
        "i16.png": (Image.fromarray(arr.astype(np.uint16) * 257), {}),
        "i16.tif": (Image.fromarray(arr.astype(np.uint16) * 257), {}),
        "i32.tif": (Image.fromarray(arr.astype(np.int32) * 1000 - 70000), {}),  # signed, full range: min-max
        "float.tif": (Image.fromarray(arr.astype(np.float32) / 255), {}),
        "bilevel.png": (grey.point(lambda v: 255 * (v > 127)).convert("1"), {}),
        "exif.png": (Image.fromarray(np.rot90(arr, 1).copy()), {"exif": exif}),
    }


@pytest.fixture(scope="module")
def mode_files(cxr, tmp_path_factory):
    folder = tmp_path_factory.mktemp("modes")
    grey = _grey(cxr)
    arr = np.asarray(grey)
    assert arr.min() == 0 and arr.max() == 255  # so that min-max of the 32-bit copy is the same scale
    grey.save(folder / "grey.png")
    out = {}
    for name, (img, kw) in _variants(grey).items():
        img.save(folder / name, **kw)
        out[name] = folder / name
    return folder / "grey.png", out


@pytest.mark.parametrize("name", [
    "palette.png", "palette.bmp", "cmyk.jpg", "cmyk.tif", "la.png", "rgba.png", "rgb.png", "i16.png",
    "i16.tif", "i32.tif", "float.tif", "bilevel.png", "exif.png"])
def test_every_picture_mode_gives_the_grey_of_the_8_bit_file(mode_files, name):
    reference, files = mode_files
    grey = read_image(reference).pixels
    if name == "bilevel.png":
        grey = (grey > 127 / 255).astype(np.float32)
    pixels = read_image(files[name]).pixels
    assert pixels.shape == grey.shape
    tolerance = 0.02 if name.endswith(".jpg") else 1e-6  # JPEG is lossy even at quality 100
    assert np.abs(pixels - grey).mean() <= tolerance, name


def test_picture_modes_give_the_same_scores(pneumonia_bundle, mode_files):
    from medexport.engine.open import open_bundle

    reference, files = mode_files
    with open_bundle(pneumonia_bundle) as model:
        want = model.predict(reference).scores
        for name, path in files.items():
            if name == "bilevel.png":
                continue  # thresholded: a different picture
            got = model.predict(path).scores
            assert max(abs(got[k] - want[k]) for k in want) < 0.01, name


def test_transparent_and_colour_pictures_are_refused(tmp_path, cxr):
    from PIL import Image

    grey = _grey(cxr).convert("LA")
    grey.putalpha(128)
    grey.save(tmp_path / "see-through.png")
    with pytest.raises(InvalidInputError, match="transparent"):
        read_image(tmp_path / "see-through.png")
    Image.new("RGB", (40, 40), (200, 30, 30)).save(tmp_path / "red.png")
    with pytest.raises(InvalidInputError, match="colour image"):
        read_image(tmp_path / "red.png")


def test_multi_page_tiff_needs_a_page(tmp_path, cxr):
    grey = _grey(cxr)
    grey.save(tmp_path / "pages.tif", save_all=True, append_images=[grey.rotate(90)])
    with pytest.raises(InvalidInputError, match="2 pages"):
        read_image(tmp_path / "pages.tif")
    assert read_image(tmp_path / "pages.tif", frame=1).frames == 2
