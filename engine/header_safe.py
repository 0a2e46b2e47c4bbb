"""A source header made safe to copy into a result object (SR, SEG, Encapsulated PDF).

Writers copy the patient and study attributes of the object a result was computed on. A value
that breaks the standard (a birth date ``1970-01-02``, a Patient's Sex ``FEMALE``, an unknown
Specific Character Set) or an absent type-2 attribute must not lose the result: the copy holds
the value corrected where the correction is unambiguous, else empty (type 2) or omitted, and
says so in ``notes`` (attribute names only). No value of the source ever goes into a note,
an exception message or a log line: values are decoded and checked here without pydicom's
validation warnings (which quote them).
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass, field

from .errors import InvalidInputError

SAFE_CHARSET = "ISO_IR 192"  # UTF-8: every decoded value can be written in it
# groups whose top-level attributes highdicom copies (Patient, Clinical Trial, General / Patient Study, Visit)
COPIED_GROUPS = (0x0008, 0x0010, 0x0012, 0x0032, 0x0038, 0x0040)
STUDY_TAGS = (0x0020000D, 0x00200010)  # Study Instance UID, Study ID
TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
         "ReferringPhysicianName", "StudyID", "AccessionNumber")
REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
CHARSET_VRS = {"SH", "LO", "ST", "LT", "UC", "UT", "PN"}  # decoded with Specific Character Set
TEXT_VRS = CHARSET_VRS | {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "UR"}
SINGLE_VALUED = {"ST", "LT", "UT", "UR"}  # a backslash is text, not a separator
FREE_TEXT = {"ST", "LT", "UT"}  # may hold line breaks and tabs
SEX = {"M": "M", "F": "F", "O": "O", "MALE": "M", "FEMALE": "F", "OTHER": "O"}
DATE_SEPARATED = re.compile(r"(\d{4})[-./](\d{2})[-./](\d{2})")
TIME_COLONS = re.compile(r"(\d{2}):(\d{2})(?::(\d{2})(\.\d{1,6})?)?")
SECRET_MIN_LENGTH = 3  # shorter values (a sex code, a digit) cannot be told from the message's own text


@dataclass
class SafeHeader:
    """``dataset``: a copy to hand to the writers; ``notes``: what was changed (names, no values)."""

    dataset: object
    notes: list[str] = field(default_factory=list)
    secrets: set[str] = field(default_factory=set)  # the source's text values: never to be shown

    def redact(self, text: str) -> str:
        for value in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(value, "<value>")
        return text


def safe_header(ds) -> SafeHeader:
    """The copy of ``ds`` (read by pydicom) that the SR / SEG / PDF writers take; ``ds`` is left unchanged."""
    from pydicom.dataset import Dataset, FileDataset

    out = Dataset()
    for elem in ds.elements():
        if not elem.tag >> 16 & 1:  # private elements are never copied into a result (nor decoded here)
            out[elem.tag] = elem  # the element objects are shared: replaced below, never changed in place
    if isinstance(ds, FileDataset) or getattr(ds, "file_meta", None) is not None:
        out.file_meta = ds.file_meta
    safe = SafeHeader(out)
    encodings, charset = _charset(ds, safe)
    for elem in list(out.elements()):
        if elem.tag in STUDY_TAGS or (elem.tag >> 16 in COPIED_GROUPS and elem.tag & 0xFFFF):
            _clean(out, elem, encodings, safe)
    _set(out, 0x00080005, "CS", charset)
    _required(out, safe)
    return safe


@contextmanager
def refusing(safe: SafeHeader | None, what: str):
    """Turn a library's refusal while building ``what`` into an InvalidInputError, without values
    (its message only with the source's values redacted; without ``safe``, its type alone)."""
    try:
        yield
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError, UnicodeError) as exc:
        detail = f"{type(exc).__name__}: {safe.redact(str(exc))}" if safe is not None else type(exc).__name__
        raise InvalidInputError(f"the {what} cannot be built from this source's header ({detail})",
                                expected="a source object whose header conforms to DICOM PS3.5 / PS3.3",
                                fix="correct the source's header at the modality or the PACS") from None


# -- helpers --------------------------------------------------------------------------------------
def _charset(ds, safe: SafeHeader) -> tuple[list[str], str | list[str] | None]:
    """(Python encodings to decode with, the Specific Character Set to write)."""
    from highdicom.enum import SpecificCharacterSetValues
    from pydicom.charset import python_encoding

    raw = _text(ds.get_item(0x00080005), ["ascii"], "CS") if 0x00080005 in ds else ""
    terms = [t.strip() for t in raw.split("\\")] if raw.strip() else []
    if terms in ([], ["ISO_IR 6"]):
        return ["iso8859"], None  # the default repertoire: ASCII, decoded leniently
    if len(terms) > 1 and terms[0] in ("", "ISO_IR 6"):
        terms[0] = "ISO 2022 IR 6"  # the same default repertoire, in the form highdicom accepts
    known = {v.value for v in SpecificCharacterSetValues}
    extensions = len(terms) == 1 or all(t.startswith("ISO 2022") for t in terms)
    if all(t in known and t in python_encoding for t in terms) and extensions:
        from pydicom.charset import convert_encodings

        return convert_encodings(terms), terms[0] if len(terms) == 1 else terms
    safe.notes.append("SpecificCharacterSet: unknown, written as UTF-8 (ISO_IR 192)")
    return ["iso8859"], SAFE_CHARSET


def _text(elem, encodings: list[str], vr: str) -> str:
    """The element's value as text, decoded without validation."""
    from pydicom.charset import decode_bytes

    value = elem.value
    if isinstance(value, (bytes, bytearray)):
        if vr in CHARSET_VRS:
            delimiters = {0x5C, 0x3D, 0x5E} if vr == "PN" else {0x5C, 0x0D, 0x0A, 0x09, 0x0C}
            return decode_bytes(bytes(value), encodings, delimiters)
        return bytes(value).decode("latin-1")
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def _vr(elem) -> str | None:
    from pydicom.datadict import dictionary_VR

    vr = elem.VR
    if vr in (None, "UN") or "or" in str(vr):
        try:
            vr = dictionary_VR(elem.tag)
        except KeyError:
            return None
    return str(vr)


def _clean(out, elem, encodings: list[str], safe: SafeHeader) -> None:
    from pydicom.datadict import keyword_for_tag

    vr = _vr(elem)
    if vr not in TEXT_VRS:
        return
    name = keyword_for_tag(elem.tag) or f"({elem.tag >> 16:04X},{elem.tag & 0xFFFF:04X})"
    if vr == "UI" or elem.tag == 0x00080005:
        return  # UIDs are checked by _required; the character set by _charset
    text = _text(elem, encodings, vr)
    values = [text] if vr in SINGLE_VALUED else text.split("\\")
    values = [_strip(v, vr) for v in values]
    safe.secrets.update(v for v in values if len(v) >= SECRET_MIN_LENGTH)
    fixed = [_fix(v, vr, name) for v in values]
    if all(f is not None for f in fixed):
        if fixed != values:
            safe.notes.append(f"{name}: corrected to the {vr} form")
        if name == "PatientName" and fixed[0] and "^" not in fixed[0]:
            # 'Bono' and 'Bono^' are the same name; highdicom warns (quoting it) about the first
            fixed[0] = fixed[0] + "^" if _valid(fixed[0] + "^", vr) else ""
        _set(out, elem.tag, vr, fixed[0] if len(fixed) == 1 else fixed)
    elif name in TYPE2:
        safe.notes.append(f"{name}: not a valid {vr}, written empty")
        _set(out, elem.tag, vr, "")
    elif name == "Modality":
        safe.notes.append("Modality: not a valid CS, taken as OT")
        _set(out, elem.tag, vr, "OT")
    else:
        safe.notes.append(f"{name}: not a valid {vr}, omitted")
        del out[elem.tag]


def _strip(value: str, vr: str) -> str:
    value = value.rstrip(" \0")
    return value if vr in FREE_TEXT else value.lstrip(" ")


def _fix(value: str, vr: str, name: str) -> str | None:
    """``value`` if valid, its unambiguous correction, else None."""
    if name == "PatientSex":
        return SEX.get(value.strip().upper()) if value.strip() else ""
    if _valid(value, vr):
        return value
    candidates = []
    if vr == "DA" and (m := DATE_SEPARATED.fullmatch(value.strip())):
        candidates.append("".join(m.groups()))
    elif vr == "TM" and (m := TIME_COLONS.fullmatch(value.strip())):
        candidates.append("".join(g or "" for g in m.groups()))
    elif vr == "CS":
        candidates.append(value.strip().upper())
    return next((c for c in candidates if _valid(c, vr)), None)


def _valid(value: str, vr: str) -> bool:
    from pydicom import config
    from pydicom.valuerep import DA, DT, TM, validate_value

    allowed = "\t\n\f\r\x1b" if vr in FREE_TEXT else "\x1b"
    if any(ord(c) < 32 and c not in allowed for c in value) or "\ufffd" in value:
        return False
    try:
        validate_value(vr, value, config.RAISE)
        if value and vr in ("DA", "TM", "DT"):
            {"DA": DA, "TM": TM, "DT": DT}[vr](value, validation_mode=config.IGNORE)
    except (ValueError, TypeError, OverflowError):
        return False
    return True


def _set(out, tag: int, vr: str, value) -> None:
    """Replace (never change in place: the element may be the source's) or remove when None."""
    from pydicom import config
    from pydicom.dataelem import DataElement

    if tag in out:
        del out[tag]
    if value is not None:
        out[tag] = DataElement(tag, vr, value, validation_mode=config.RAISE)


def _required(out, safe: SafeHeader) -> None:
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    for name in TYPE2:
        if name not in out:
            _set(out, tag_for_keyword(name), dictionary_VR(name), "")
    if "Modality" not in out:
        safe.notes.append("Modality: absent, taken as OT")
        _set(out, 0x00080060, "CS", "OT")
    for name in REQUIRED_UIDS:
        tag = tag_for_keyword(name)
        uid = _strip(_text(out.get_item(tag), ["ascii"], "UI"), "UI") if tag in out else ""
        if not uid or not _valid(uid, "UI"):
            raise InvalidInputError(
                f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {name} is {'not a valid UID' if uid else 'missing'}",
                expected="a UID of digits and dots, at most 64 characters",
                fix="correct the source object's header at the modality or the PACS")
        _set(out, tag, "UI", uid)
