"""The one table of DICOM transfer syntaxes the engine reads, decodes and sends: for each, whether its
pixel data is compressed and may be lossy, which installed pydicom plugin decodes it, and whether it
can be decoded at reduced resolution (named as pydicom.uid names them; literals, so that importing the
engine does not import pydicom).

Decoding plugins: pydicom tries its plugins in a fixed order, and the first that can decode a syntax
is rarely the fastest. Measured on pydicom-data's RG1 chest film (CR 1955 x 1841, 15 bits) on the
2-core CI machine, full decode, ms:

| syntax            | chosen                   | pydicom's default          |
|-------------------|--------------------------|----------------------------|
| JPEG baseline     | Pillow (libjpeg-turbo) 9 | pylibjpeg (libjpeg) 42     |
| JPEG 2000         | Pillow (OpenJPEG, 2 threads) 449 | pylibjpeg (OpenJPEG, 1 thread) 618 |
| JPEG-LS           | pyjpegls (CharLS) 161    | pylibjpeg (libjpeg) 497    |
| RLE               | pylibjpeg-rle 26         | pydicom's numpy RLE 301    |

Each chosen plugin decodes what pydicom's default decodes, except for baseline JPEG, whose decoders
may differ by one grey level (IDCT rounding). A preferred plugin that is missing, or refuses a
file, falls back to pydicom's own order (io/dicom/pixels.py).
"""
from __future__ import annotations

from dataclasses import dataclass

IMPLICIT = "1.2.840.10008.1.2"  # ImplicitVRLittleEndian
EXPLICIT = "1.2.840.10008.1.2.1"  # ExplicitVRLittleEndian
DEFLATED = "1.2.840.10008.1.2.1.99"  # DeflatedExplicitVRLittleEndian


@dataclass(frozen=True)
class Syntax:
    uid: str
    name: str  # as pydicom.uid names it
    family: str  # native (uncompressed), deflate (the whole dataset deflated), jpeg, jpeg-ls, jpeg2000, rle
    lossy: bool = False  # the pixel data may differ from what was acquired
    plugin: str = ""  # the pydicom decoding plugin to try first (the table above); "": pydicom's own order
    # a reduced-resolution decode (io/dicom/pixels.py): "blocks" averaged in place from the bytes,
    # "wavelet" (OpenJPEG's reduce), "dct" (DCT scaling); "": decoded in full, then block-averaged
    reduced: str = ""

    @property
    def compressed(self) -> bool:
        """Encapsulated (compressed) pixel data."""
        return self.family not in ("native", "deflate")


# in the order a sender proposes them: uncompressed first, then each compressed family pydicom decodes
TABLE = (
    Syntax(EXPLICIT, "ExplicitVRLittleEndian", "native", reduced="blocks"),
    Syntax(IMPLICIT, "ImplicitVRLittleEndian", "native", reduced="blocks"),
    Syntax(DEFLATED, "DeflatedExplicitVRLittleEndian", "deflate"),
    Syntax("1.2.840.10008.1.2.4.50", "JPEGBaseline8Bit", "jpeg", lossy=True, plugin="pillow", reduced="dct"),
    Syntax("1.2.840.10008.1.2.4.51", "JPEGExtended12Bit", "jpeg", lossy=True),
    Syntax("1.2.840.10008.1.2.4.57", "JPEGLossless", "jpeg"),
    Syntax("1.2.840.10008.1.2.4.70", "JPEGLosslessSV1", "jpeg"),
    Syntax("1.2.840.10008.1.2.4.80", "JPEGLSLossless", "jpeg-ls", plugin="pyjpegls"),
    Syntax("1.2.840.10008.1.2.4.81", "JPEGLSNearLossless", "jpeg-ls", lossy=True, plugin="pyjpegls"),
    Syntax("1.2.840.10008.1.2.4.90", "JPEG2000Lossless", "jpeg2000", plugin="pillow", reduced="wavelet"),
    Syntax("1.2.840.10008.1.2.4.91", "JPEG2000", "jpeg2000", lossy=True, plugin="pillow", reduced="wavelet"),
    Syntax("1.2.840.10008.1.2.5", "RLELossless", "rle", plugin="pylibjpeg"),
)
BY_UID = {s.uid: s for s in TABLE}
NATIVE = tuple(s.uid for s in TABLE if s.family == "native")  # uncompressed little endian: what every peer takes
NETWORK_ORDER = tuple(s.uid for s in TABLE)


def uid_of(ds) -> str:
    """(0002,0010) Transfer Syntax UID of a dataset, "" when it has no file meta."""
    return str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""


def syntax_of(ds) -> Syntax | None:
    """The table's row for a dataset's transfer syntax; None for one the table does not hold."""
    return BY_UID.get(uid_of(ds))
