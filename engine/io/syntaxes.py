"""The one table of DICOM transfer syntaxes the engine reads, decodes and sends (named as pydicom.uid
names them; literals, so that importing the engine does not import pydicom)."""
from __future__ import annotations

IMPLICIT = "1.2.840.10008.1.2"  # ImplicitVRLittleEndian
EXPLICIT = "1.2.840.10008.1.2.1"  # ExplicitVRLittleEndian
NATIVE = (IMPLICIT, EXPLICIT)  # uncompressed little endian: what every peer takes
DEFLATED = "1.2.840.10008.1.2.1.99"  # DeflatedExplicitVRLittleEndian
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"  # JPEGBaseline8Bit
JPEG = (JPEG_BASELINE, "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",  # JPEGExtended12Bit, JPEGLossless,
        "1.2.840.10008.1.2.4.70")  # JPEGLosslessSV1
JPEG_LS = ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81")  # JPEGLSLossless, JPEGLSNearLossless
J2K = ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91")  # JPEG2000Lossless, JPEG2000
RLE = "1.2.840.10008.1.2.5"  # RLELossless

# the order a sender proposes them: uncompressed first, then each compressed family pydicom decodes
NETWORK_ORDER = (EXPLICIT, IMPLICIT, DEFLATED, *JPEG, *JPEG_LS, *J2K, RLE)
