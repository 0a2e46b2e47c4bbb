"""A DICOM waveform's elements: a lean read of the few that an ECG reader uses straight from the
bytes of a plain little-endian file (pydicom reads anything else), and the samples of one
multiplex group in the units of its channels, checked against engine/limits.py first.
"""
from __future__ import annotations

import functools
import re
import struct
from pathlib import Path

import numpy as np

from ... import limits
from ...errors import InvalidInputError
from .header import UNDEFINED
from .syntaxes import NATIVE

# -- a lean read: the elements the reader uses, straight from the bytes of a plain file ---------------
SHORT_VRS = frozenset((b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN", b"SH",
             b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"))
LONG_VRS = frozenset((b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UT", b"UN", b"UC", b"UR", b"SV", b"UV"))
ITEM, ITEM_END, SEQUENCE_END = (0xFFFE, 0xE000), (0xFFFE, 0xE00D), (0xFFFE, 0xE0DD)
LEAN_KEYWORDS = ("Modality", "WaveformSequence", "MultiplexGroupLabel", "NumberOfWaveformChannels",
                 "NumberOfWaveformSamples", "SamplingFrequency", "WaveformBitsAllocated",
                 "WaveformSampleInterpretation", "WaveformData", "ChannelDefinitionSequence", "ChannelSensitivity",
                 "ChannelSensitivityCorrectionFactor", "ChannelBaseline", "ChannelSensitivityUnitsSequence",
                 "ChannelSourceSequence", "CodeValue", "CodeMeaning")  # all that io/ecg._waveform reads
DS_NUMBER = re.compile(rb" *[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)? *")
PLAIN_TEXT = re.compile(rb"[ -\[\]-~]*")  # printable ASCII without the value delimiter (backslash)
_HEADER = struct.Struct("<HH2sH")
_U32 = struct.Struct("<I")
_ITEM = struct.Struct("<HHI")


class NotLean(Exception):
    """The file holds something the lean read does not decode as pydicom would: pydicom reads it."""


class LeanDataset(dict):
    """The elements the reader uses, by keyword, valued as pydicom gives them; read like a pydicom Dataset."""

    is_little_endian = True

    def __getattr__(self, keyword: str):
        try:
            return self[keyword]
        except KeyError:
            raise AttributeError(keyword) from None

    def waveform_array(self, index: int):
        raise NotLean("mu-law, A-law or other waveform samples: pydicom's decoder")


def lean_waveform(data: bytes) -> LeanDataset | None:
    """The waveform elements of a little-endian Part 10 file, parsed without pydicom (a 10-s ECG's
    annotation sequence alone is hundreds of items pydicom would parse for nothing).

    The file's structure is walked in full (every sequence and item, as pydicom would), but only the
    elements of LEAN_KEYWORDS are decoded. None where the file holds anything outside the plain
    layout this reads exactly as pydicom does (another transfer syntax, an unexpected VR, several or
    non-ASCII values, a DS that is not a plain number, a length past its end): pydicom then reads it."""
    try:
        if data[128:132] != b"DICM" or data[132:136] != b"\x02\x00\x00\x00" or data[136:138] != b"UL":
            return None
        start = 144 + _U32.unpack_from(data, 140)[0]
        syntax = _meta_syntax(data[144:start])
        if syntax not in NATIVE:
            return None
        return _lean_dataset(data, start, len(data), syntax.endswith(".1"))[0]
    except (struct.error, NotLean):
        return None


def _value_at(data: bytes, pos: int, vr, short_length: int, explicit: bool) -> tuple:
    """(VR or None, value length, value offset) of the element whose header starts at ``pos``
    (``vr`` and ``short_length`` as the 8-byte header unpack read them)."""
    if not explicit:
        return None, _U32.unpack_from(data, pos + 4)[0], pos + 8
    if vr in LONG_VRS:
        return vr, _U32.unpack_from(data, pos + 8)[0], pos + 12
    if vr in SHORT_VRS:
        return vr, short_length, pos + 8
    raise NotLean(f"VR {vr!r}")


def _lean_dataset(data: bytes, pos: int, end: int | None, explicit: bool) -> tuple[LeanDataset, int]:
    """The wanted elements from ``pos`` to ``end`` (None: to the item delimiter), and the position after;
    other sequences are walked over to their end (_skip_undefined), other values jumped over."""
    out, table = LeanDataset(), _lean_table()
    limit = len(data) if end is None else end
    while pos < limit:
        group, elem, vr, length = _HEADER.unpack_from(data, pos)
        if group == 0xFFFE:
            if elem == 0xE00D and end is None:
                return out, pos + 8
            raise NotLean("an item tag among the elements")
        vr, length, pos = _value_at(data, pos, vr, length, explicit)
        keyword, vrs = table.get(group << 16 | elem, (None, ()))
        if vrs == ("SQ",):
            if vr not in (None, b"SQ"):
                raise NotLean(f"{keyword} with VR {vr!r}")
            out[keyword], pos = _lean_sequence(data, pos, length, explicit)
        elif length == UNDEFINED:
            if keyword is not None or vr not in (None, b"SQ"):
                raise NotLean(f"({group:04X},{elem:04X}) of undefined length")
            pos = _skip_undefined(data, pos, explicit)
        else:
            if keyword is not None:
                if vr is not None and vr.decode() not in vrs or pos + length > limit:
                    raise NotLean(f"{keyword} with VR {vr!r}, {length} bytes")
                out[keyword] = _lean_value(data[pos:pos + length], vrs[0])
            pos += length
    if end is None or pos != end:
        raise NotLean("a dataset runs past its end")
    return out, pos


def _lean_sequence(data: bytes, pos: int, length: int, explicit: bool) -> tuple[list, int]:
    end = None if length == UNDEFINED else pos + length
    items = []
    while end is None or pos < end:
        group, elem, size = _ITEM.unpack_from(data, pos)
        pos += 8
        if (group, elem) == SEQUENCE_END and end is None:
            return items, pos
        if (group, elem) != ITEM:
            raise NotLean("a sequence holds something other than items")
        item, pos = _lean_dataset(data, pos, None if size == UNDEFINED else pos + size, explicit)
        items.append(item)
    if pos != end:
        raise NotLean("a sequence runs past its end")
    return items, pos


def _skip_undefined(data: bytes, pos: int, explicit: bool) -> int:
    """The position after the delimiter closing the undefined-length sequence whose items start at ``pos``."""
    depth, size = 1, len(data)
    while depth:
        group, elem, vr, length = _HEADER.unpack_from(data, pos)
        if group == 0xFFFE:  # an item or a delimiter: no VR in either syntax
            if elem == 0xE00D or elem == 0xE0DD:
                depth, pos = depth - 1, pos + 8
                continue
            length, pos = _U32.unpack_from(data, pos + 4)[0], pos + 8
        else:
            vr, length, pos = _value_at(data, pos, vr, length, explicit)
        if length == UNDEFINED:
            depth += 1  # an undefined-length item or nested sequence
        else:
            pos += length
        if pos > size:
            raise NotLean("past the end of the file")
    return pos


def _lean_value(raw: bytes, vr: str):
    """One value as pydicom's reader gives it, or NotLean where that takes more than this."""
    if vr in ("US", "UL"):
        if len(raw) != (2 if vr == "US" else 4):
            raise NotLean(f"{vr} of {len(raw)} bytes")
        return int.from_bytes(raw, "little")
    if vr == "DS":
        if not DS_NUMBER.fullmatch(raw):
            raise NotLean(f"DS {raw!r}")
        return float(raw)
    if vr in ("CS", "SH", "LO"):
        text = raw.rstrip(b" \x00")
        if not PLAIN_TEXT.fullmatch(text):
            raise NotLean(f"{vr} {raw!r}")
        return text.decode("ascii")
    return raw  # OB or OW: the bytes


@functools.cache
def _lean_table() -> dict:
    """Tag -> (keyword, the VRs it may have) of LEAN_KEYWORDS, from pydicom's dictionary."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    out = {}
    for keyword in LEAN_KEYWORDS:
        tag = tag_for_keyword(keyword)
        out[int(tag)] = (keyword, tuple(dictionary_VR(tag).split(" or ")))
    return out


def _meta_syntax(meta: bytes) -> str:
    """(0002,0010) Transfer Syntax UID from the file meta group (explicit VR little endian); "" unless
    every element up to the group's stated end is of group 0002 (pydicom reads the meta group so far)."""
    pos, syntax = 0, ""
    while pos < len(meta):
        group, elem, vr, length = _HEADER.unpack_from(meta, pos)
        pos += 8
        if vr in LONG_VRS:
            length, pos = _U32.unpack_from(meta, pos)[0], pos + 4
        if group != 0x0002 or pos + length > len(meta):
            return ""
        if elem == 0x0010:
            syntax = meta[pos:pos + length].rstrip(b"\x00 ").decode("ascii", "replace")
        pos += length
    return syntax


# -- the samples of one multiplex group -------------------------------------------------------------
WAVEFORM_DTYPES = {(8, "SB"): np.int8, (8, "UB"): np.uint8, (16, "SS"): np.int16, (16, "US"): np.uint16}
FIX_DICOM = "re-export the ECG from the cart or the PACS"


def waveform_values(ds, group, index: int) -> np.ndarray:
    """(samples, channels) float64: stored values x sensitivity x correction + baseline, as
    pydicom's ``waveform_array`` gives them, read straight from (5400,1010) Waveform Data (sizes
    checked by check_waveform_group); pydicom's reader for mu-law / A-law data."""
    key = (group.WaveformBitsAllocated, str(group.get("WaveformSampleInterpretation", "")))
    if key not in WAVEFORM_DTYPES or not ds.is_little_endian:
        return ds.waveform_array(index)
    channels, samples = int(group.NumberOfWaveformChannels), int(group.NumberOfWaveformSamples)
    dtype = np.dtype(WAVEFORM_DTYPES[key]).newbyteorder("<")
    raw = np.frombuffer(group.WaveformData, dtype, count=channels * samples).reshape(samples, channels)
    definitions = group.ChannelDefinitionSequence
    gain = np.array([float(ch.get("ChannelSensitivity", 1.0)) * float(ch.get("ChannelSensitivityCorrectionFactor", 1.0))
                     for ch in definitions])
    baseline = np.array([float(ch.get("ChannelBaseline", 0.0)) for ch in definitions])
    values = raw.T.astype(np.float64, order="C")  # channel by channel in memory, as the leads are used
    values *= gain[:, None]
    values += baseline[:, None]
    return values.T


def check_waveform_group(group, path: Path) -> None:
    """Channels, samples, rate, bits and data length of one multiplex group, before decoding it."""
    where = f"{path}: waveform group"
    channels = limits.check_count(group.get("NumberOfWaveformChannels"), "(003A,0005) Number of Waveform Channels",
                                  limits.MAX_LEADS, where, FIX_DICOM)
    fs = limits.check_sampling_rate(group.get("SamplingFrequency"), f"{where} (003A,001A) Sampling Frequency")
    samples = limits.check_count(group.get("NumberOfWaveformSamples"), "(003A,0010) Number of Waveform Samples",
                                 limits.MAX_SAMPLES_PER_LEAD, where, FIX_DICOM)
    limits.check_samples(samples, fs, where)
    bits = group.get("WaveformBitsAllocated")
    if bits not in (8, 16):
        raise InvalidInputError(f"{where} has (5400,1004) Waveform Bits Allocated {bits!r}", expected="8 or 16",
                                fix=FIX_DICOM)
    definitions = group.get("ChannelDefinitionSequence") or []
    if len(definitions) != channels:
        raise InvalidInputError(f"{where} defines {len(definitions)} channels in (003A,0200) Channel Definition "
                                f"Sequence", expected=f"{channels}, as (003A,0005) says", fix=FIX_DICOM)
    size = len(group.get("WaveformData") or b"")
    if size < channels * samples * bits // 8:
        raise InvalidInputError(f"{where} has {size:,} bytes of (5400,1010) Waveform Data",
                                expected=f"{channels * samples * bits // 8:,} ({channels} channels x {samples} "
                                         f"samples x {bits // 8} bytes)", fix=FIX_DICOM)
