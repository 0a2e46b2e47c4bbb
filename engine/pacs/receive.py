"""What the listener checks before it answers a C-STORE: a decodable object, the UID the command
named, a size limit; and the association rules (idle timeout, called AE, connections per peer)."""
from __future__ import annotations

import struct
from pathlib import Path

from medexport.engine.errors import InvalidInputError

from .spool import describe

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
VERIFICATION = "1.2.840.10008.1.1"


def check_object(path: Path, affected_uid: str | None = None):
    """Decode a received object completely (``path``: the file pynetdicom streamed it to); refuse it
    (InvalidInputError) when it cannot be understood or is not the instance the C-STORE named."""
    import pydicom
    from pydicom.errors import BytesLengthException, InvalidDicomError
    from pydicom.uid import UID

    try:
        ds = pydicom.dcmread(path)
        for _ in ds.iterall():  # every element and sequence item decodes
            pass
        for _ in ds.file_meta.iterall() if getattr(ds, "file_meta", None) is not None else ():  # the meta too
            pass
    except (InvalidDicomError, BytesLengthException, ValueError, TypeError, KeyError, EOFError, OverflowError,
            NotImplementedError, AttributeError, IndexError, struct.error, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:  # the disk, not the object (pydicom's own
            raise  # "No tag to read" OSError has no errno: the c-store fuzz target found it, with the length errors)
        raise InvalidInputError(f"the object cannot be decoded ({describe(exc)})",
                                expected="a well-formed DICOM dataset") from None
    for key, tag in (("SOPClassUID", "(0008,0016)"), ("SOPInstanceUID", "(0008,0018)")):
        if not str(ds.get(key, "")).strip():
            raise InvalidInputError(f"the object has no {tag} {key}", expected="(0008,0016) and (0008,0018) present")
    if affected_uid is not None and str(ds.SOPInstanceUID) != str(affected_uid):
        raise InvalidInputError("(0008,0018) SOP Instance UID of the dataset differs from the C-STORE's "
                                "(0000,1000) Affected SOP Instance UID", expected="the same UID in both",
                                fix="fix the sender: it must name the instance it sends")
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if not isinstance(syntax, UID) or not syntax.is_transfer_syntax:  # absent, or several values (fuzz: 4965)
        raise InvalidInputError("(0002,0010) Transfer Syntax UID is missing or not a transfer syntax",
                                expected="a DICOM transfer syntax UID in the file meta",
                                fix="fix the sender: its file meta information is damaged")
    if "PixelData" in ds and not syntax.is_compressed:
        sizes = [_count(ds, k, d) for k, d in (("Rows", 0), ("Columns", 0), ("SamplesPerPixel", 1),
                                               ("BitsAllocated", 8), ("NumberOfFrames", 1))]
        need = sizes[0] * sizes[1] * sizes[2] * sizes[3] // 8 * (sizes[4] or 1)
        if len(ds.PixelData) < need:
            raise InvalidInputError(f"(7FE0,0010) Pixel Data has {len(ds.PixelData):,} bytes",
                                    expected=f"{need:,} bytes for its Rows, Columns, Samples, Bits and Frames")
    return ds


def _count(ds, keyword: str, default: int) -> int:
    """A pixel-size attribute as a non-negative integer, or the refusal that names it."""
    from pydicom.datadict import tag_for_keyword

    value = ds.get(keyword, default)
    try:
        number = int(value if value not in (None, "") else default)
    except (TypeError, ValueError):
        number = -1
    if number < 0:
        tag = tag_for_keyword(keyword)
        raise InvalidInputError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {keyword} is not a whole number",
                                expected="a non-negative integer", fix="fix the sender: the image header is damaged")
    return number


def make_ae(ae_title: str, allow: list[str], idle_s: float, max_associations: int):
    """The SCP's application entity: every storage class, verification, the called AE checked,
    calling AEs restricted to ``allow`` (when given), associations dropped after ``idle_s`` idle."""
    from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, AllStoragePresentationContexts

    ae = AE(ae_title=ae_title)
    ae.maximum_associations = max_associations
    ae.network_timeout = ae.dimse_timeout = ae.acse_timeout = idle_s
    ae.require_called_aet = True
    if allow:
        ae.require_calling_aet = allow
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(VERIFICATION)
    return ae


def cap_per_peer(server, limit: int, on_refused) -> None:
    """Close a new TCP connection at once when its address already holds ``limit`` associations
    (idle ones included), so one host cannot take every slot."""
    def verify_request(request, client_address) -> bool:
        host = client_address[0]
        held = sum(1 for a in server.active_associations if a.is_alive() and a.requestor.address == host)
        if held < limit:
            return True
        on_refused(host, held)
        return False

    server.verify_request = verify_request
