"""The decoders the engine picks (engine/io/dicom/syntaxes.py, pixels.py) and reading pixel data in place
(engine/io/dicom.read_dataset): same pixels as pydicom's own path, on real files."""
from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import get_frame
from pydicom.pixels import pixel_array
from pydicom.uid import JPEGLSLossless, RLELossless

from medexport.engine.io.dicom import pixels
from medexport.engine.io.dicom import decode_pixels, pixel_bytes, read_dataset, reduce_decoded, single_frame
from medexport.engine.io.image import read_image


@pytest.fixture(scope="module")
def rg1_copies(tmp_path_factory, dcm):
    """RG1 (CR 1955 x 1841, 15 bits) re-encoded as JPEG-LS and RLE (lossless)."""
    folder = tmp_path_factory.mktemp("rg1")
    out = {}
    for name, uid in (("jpeg_ls", JPEGLSLossless), ("rle", RLELossless)):
        ds = pydicom.dcmread(dcm("RG1_UNCR.dcm"))
        ds.compress(uid)
        ds.save_as(folder / f"{name}.dcm")
        out[name] = str(folder / f"{name}.dcm")
    return out


def pydicom_files(dcm) -> list[str]:
    own = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent
    return sorted(glob.glob(str(Path(dcm("RG1_UNCR.dcm")).parent / "*.dcm"))) + sorted(glob.glob(str(own / "*.dcm")))


def test_fast_plugins_decode_what_pydicom_decodes(dcm, rg1_copies):
    """Lossless syntaxes: bit-identical to pydicom's default plugin."""
    for path in (dcm("RG1_J2KR.dcm"), rg1_copies["jpeg_ls"], rg1_copies["rle"]):
        ds = pydicom.dcmread(path)
        assert pixels.preferred_plugin(ds), path  # one of the fast ones is installed and chosen
        np.testing.assert_array_equal(decode_pixels(ds, path), pixel_array(pydicom.dcmread(path)))


def test_signed_jpeg2000_keeps_pydicoms_choice(dcm):
    ds = pydicom.dcmread(dcm("693_J2KR.dcm"))  # PixelRepresentation 1
    assert pixels.preferred_plugin(ds) == ""
    np.testing.assert_array_equal(decode_pixels(ds, "693_J2KR.dcm"), pixel_array(pydicom.dcmread(dcm("693_J2KR.dcm"))))


def test_pixel_data_read_in_place_is_pydicoms_value(dcm):
    """Every readable file of pydicom-data and pydicom's test set: the same elements and the same
    Pixel Data bytes whether pixel data was deferred into the file's bytes or read by pydicom."""
    checked = deferred = 0
    for path in pydicom_files(dcm):
        try:
            reference = pydicom.dcmread(path)
            want = reference.PixelData if "PixelData" in reference else None
        except Exception:  # noqa: BLE001 - files pydicom itself cannot read are not this test's subject
            continue
        data = Path(path).read_bytes()
        ds = read_dataset(path, data)
        assert len(ds) == len(reference), path
        if want is not None:
            deferred += ds.get_item(0x7FE00010, keep_deferred=True).value is None
            assert bytes(pixel_bytes(ds, data)) == want, path
            assert ds.PixelData == want, path
        checked += 1
    assert checked > 100 and deferred > 50


def test_single_frame_is_pydicoms_frame(dcm):
    checked = 0
    for path in pydicom_files(dcm):
        try:
            ref = pydicom.dcmread(path)
            if not ref.file_meta.TransferSyntaxUID.is_compressed or int(ref.get("NumberOfFrames", 1) or 1) != 1:
                continue
            want = get_frame(ref.PixelData, 0, number_of_frames=1)
        except Exception:  # noqa: BLE001 - files pydicom itself cannot read are not this test's subject
            continue
        data = Path(path).read_bytes()
        assert single_frame(pixel_bytes(read_dataset(path, data), data)) == want, path
        assert single_frame(ref.PixelData) == want, path  # a value as pydicom holds it (no delimiter)
        checked += 1
    assert checked > 30


def test_full_decodes_are_block_averaged_like_uncompressed(dcm, rg1_copies):
    """JPEG-LS and RLE have no reduced mode: decoded in full, then the same block mean as the
    uncompressed original, so the build's check on RG1_UNCR covers them exactly."""
    reference = read_image(dcm("RG1_UNCR.dcm"), min_size=(224, 224))
    assert reference.reduction.step == 8
    for path in rg1_copies.values():
        study = read_image(path, min_size=(224, 224))
        assert "decoded in full, 8 x 8 block mean" in study.meta["decoded"]
        np.testing.assert_array_equal(study.pixels, reference.pixels)
        assert study.reduction == reference.reduction
    assert reduce_decoded(np.zeros((300, 300), np.uint16), (224, 224), "x") is None  # no level to drop
    assert reduce_decoded(np.zeros((900, 900), np.int16), (224, 224), "x") is None  # signed: full


def test_a_panicking_rust_decoder_is_a_clear_error(tmp_path):
    """pylibjpeg-rle panics (pyo3 PanicException, a BaseException) on an RLE segment offset that
    points 5 bytes early (found by tests/test_fuzz.py): the reader names the file and the syntax."""
    from pydicom.data import get_testdata_file
    from pydicom.encaps import encapsulate

    from medexport.engine.errors import InvalidInputError

    ds = pydicom.dcmread(get_testdata_file("MR_small_RLE.dcm"))
    frame = bytearray(get_frame(ds.PixelData, 0, number_of_frames=1))
    assert frame[8] == 156  # the second segment's offset, low byte
    frame[8] = 151
    ds.PixelData = encapsulate([bytes(frame)])
    ds.save_as(tmp_path / "bad_rle.dcm")
    with pytest.raises(InvalidInputError, match="RLE Lossless.*could not be decoded"):
        read_image(str(tmp_path / "bad_rle.dcm"))
