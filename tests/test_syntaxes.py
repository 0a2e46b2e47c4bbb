"""The one transfer-syntax table (engine/io/dicom/syntaxes.py) against pydicom's own facts."""
import pydicom
import pydicom.uid
from pydicom.pixels import get_decoder

from medexport.engine.io.dicom import syntaxes


def test_the_table_says_what_pydicom_says():
    assert len(syntaxes.BY_UID) == len(syntaxes.TABLE)
    for row in syntaxes.TABLE:
        uid = getattr(pydicom.uid, row.name)
        assert uid == row.uid and uid.is_transfer_syntax, row
        assert row.compressed == uid.is_compressed and (row.family == "deflate") == uid.is_deflated, row
        assert (row.uid in syntaxes.NATIVE) == (uid.is_little_endian and not uid.is_compressed and not uid.is_deflated)
        if row.plugin:  # a plugin pydicom has for this syntax, installed here (pyproject's dependencies)
            assert row.plugin in get_decoder(uid).available_plugins, row
        assert row.reduced in ("", "blocks", "wavelet", "dct"), row
        # lossy unless the syntax is uncompressed or lossless by its DICOM name (JPEG-LS near-lossless is lossy)
        lossless = row.family in ("native", "deflate") or ("Lossless" in row.name and "Near" not in row.name)
        assert row.lossy != lossless, row
    assert {r.family for r in syntaxes.TABLE if r.reduced == "blocks"} == {"native"}  # averaged in place from the bytes


def test_a_dataset_finds_its_row(pydicom_file):
    ds = pydicom.dcmread(pydicom_file("MR_small_RLE.dcm"), stop_before_pixels=True)
    assert syntaxes.syntax_of(ds).family == "rle" and syntaxes.uid_of(ds) == pydicom.uid.RLELossless
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRBigEndian  # read by pydicom, not in the table
    assert syntaxes.syntax_of(ds) is None and syntaxes.uid_of(ds) == pydicom.uid.ExplicitVRBigEndian
    assert syntaxes.uid_of(pydicom.Dataset()) == ""
