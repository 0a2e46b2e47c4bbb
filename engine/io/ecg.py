"""Read ECGs (DICOM waveform, WFDB, HL7 aECG, CSV, arrays) into one record in millivolts."""
from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import limits
from ..checksums import sha256_file, sha256_files
from ..errors import InvalidInputError
from . import wfdb
from .dicom import (FIX_DICOM, PARSE_ERRORS, NotLean, check_waveform_group, lean_waveform, parse_errors, read_dataset,
                    waveform_values)

LEAD_ORDER = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
UNIT_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "v": 1e3, "nv": 1e-6}


@dataclass(frozen=True)
class EcgRecord:
    """Signals (leads x samples, float32 mV), sampling rate, lead names, annotations, provenance."""

    signals: np.ndarray
    fs: float
    leads: tuple
    source: str
    kind: str  # dicom | wfdb | aecg | csv | array
    sha256: str
    annotations: tuple = ()  # (sample, symbol) pairs, e.g. beat labels from a WFDB .atr file
    meta: dict = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return self.signals.shape[1] / self.fs

    def lead(self, name: str | None = None) -> tuple[np.ndarray, str]:
        """One lead's signal: ``name``, else lead II (or MLII), else the only/first lead."""
        wanted = [normalise_lead(name)] if name else ["II", "MLII", "ECG"]
        for want in wanted:
            for i, lead in enumerate(self.leads):
                if normalise_lead(lead) == want:
                    return self.signals[i], lead
        if name:
            raise InvalidInputError(f"{self.source} has no lead {name!r} (leads: {', '.join(self.leads)})",
                                    expected="one of the record's leads", fix="choose one of those leads")
        return self.signals[0], self.leads[0]


def normalise_lead(name: str) -> str:
    text = re.sub(r"^(lead|mdc_ecg_lead_)\s*", "", str(name).strip(), flags=re.I)
    text = re.sub(r"\s*\(.*\)$", "", text)
    upper = text.upper()
    if upper in ("AVR", "AVL", "AVF"):
        return "a" + upper[1:]
    return upper


def read_ecg(source, *, fs: float | None = None, leads: list[str] | None = None) -> EcgRecord:
    """Read an ECG from a path (DICOM, WFDB .hea/.dat/.mat, aECG .xml, .csv) or an array.

    Arrays are (samples,) or (leads, samples) in mV and need ``fs``. Files are only read.
    """
    if isinstance(source, np.ndarray):
        return _from_array(source, fs, leads)
    if not isinstance(source, (str, os.PathLike)):
        raise InvalidInputError(f"the record is a {type(source).__name__}", expected="a file path or an array")
    path = Path(os.fspath(source))
    suffix = path.suffix.lower()
    if suffix in (".hea", ".dat", ".mat", ".atr") or (not path.exists() and path.with_suffix(".hea").is_file()):
        return _from_wfdb(path.with_suffix(".hea"))
    if not path.is_file():
        raise InvalidInputError(f"{path} does not exist", fix="check the path")
    limits.check_file_size(path.stat().st_size, str(path))
    with open(path, "rb") as fh:
        head = fh.read(132)
    if head[128:132] == b"DICM" or suffix in (".dcm", ".dicom"):
        return _from_dicom(path)
    if suffix == ".xml" or head.lstrip().startswith(b"<"):
        return _from_aecg(path)
    if suffix in (".csv", ".txt"):
        return _from_csv(path, fs)
    raise InvalidInputError(f"{path} is not a known ECG format (first bytes {head[:8]!r})",
                            expected="DICOM waveform, WFDB (.hea + .dat/.mat), HL7 aECG (.xml) or CSV")


def _checked(signals: np.ndarray, fs: float, where: str) -> np.ndarray:
    """Float32 (leads, samples) within engine/limits.py; NaN gaps bridged, infinities refused."""
    fs = limits.check_sampling_rate(fs, where)
    _check_shape(np.shape(signals), fs, where)
    signals = np.ascontiguousarray(signals, np.float32)  # leads as rows: per-lead passes read memory in order
    if np.isinf(signals).any():
        raise InvalidInputError(f"{where}: {int(np.isinf(signals).sum())} samples are infinite (overflow)",
                                expected="finite samples in mV (NaN marks a gap)", fix="check the file's units and gain")
    bad = np.isnan(signals)
    if bad.all(axis=1).any():
        raise InvalidInputError(f"{where}: a lead holds no finite samples", fix="drop the empty lead")
    if bad.any():  # gaps (NaN) in a lead: hold the last value so filters stay stable
        for row in signals:
            idx = np.flatnonzero(np.isfinite(row))
            row[:] = np.interp(np.arange(len(row)), idx, row[idx])
    return signals


def _check_shape(shape: tuple, fs: float, where: str) -> None:
    """(leads, samples): 1..MAX_LEADS leads of 2..MAX_SAMPLES_PER_LEAD samples (before any copy)."""
    if len(shape) != 2 or shape[1] < 2 or shape[0] < 1:
        raise InvalidInputError(f"{where}: signal shape {shape}", expected="(leads, samples) with at least 2 samples")
    limits.check_count(shape[0], "the number of leads", limits.MAX_LEADS, where)
    limits.check_samples(shape[1], fs, where)


def _from_array(arr: np.ndarray, fs, leads) -> EcgRecord:
    if fs is None:
        raise InvalidInputError("an ECG array needs its sampling rate", fix="pass fs=..., e.g. predict(array, fs=300)")
    if arr.dtype.kind not in "biuf":
        raise InvalidInputError(f"the ECG array has dtype {arr.dtype}", expected="integers or floats in mV")
    if arr.ndim > 2:
        raise InvalidInputError(f"the ECG array has shape {arr.shape}", expected="(samples,) or (leads, samples)")
    _check_shape(np.atleast_2d(arr).shape, limits.check_sampling_rate(fs, "array"), "array")
    arr = np.atleast_2d(np.asarray(arr, np.float32))
    names = tuple(leads) if leads else (("ECG",) if arr.shape[0] == 1 else tuple(LEAD_ORDER[: arr.shape[0]]))
    if len(names) != arr.shape[0]:
        raise InvalidInputError(f"{len(names)} lead names for {arr.shape[0]} leads", fix="give one name per row")
    digest = hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()
    return EcgRecord(_checked(arr, float(fs), "array"), float(fs), names, "<array>", "array", digest)


# -- DICOM waveform -----------------------------------------------------------------------
def _from_dicom(path: Path) -> EcgRecord:
    data = path.read_bytes()
    lean = lean_waveform(data)
    if lean is not None:
        try:
            return _waveform(lean, path, data)
        except (InvalidInputError, NotLean, *PARSE_ERRORS):
            pass  # refused, or beyond the lean read: pydicom reads the whole file and names the problem
    with parse_errors(str(path)):  # the one boundary for pydicom's own errors on malformed tags
        return _waveform(read_dataset(str(path), data), path, data)


def _waveform(ds, path: Path, data: bytes) -> EcgRecord:
    if not ds.get("WaveformSequence"):
        raise InvalidInputError(f"{path} has no (5400,0100) Waveform Sequence (SOP class {ds.get('SOPClassUID', '?')})",
                                expected="a DICOM ECG waveform object", fix="open the ECG, not an image")
    groups = ds.WaveformSequence
    labels = [str(g.get("MultiplexGroupLabel", "")) for g in groups]
    index = next((i for i, lab in enumerate(labels) if "RHYTHM" in lab.upper()), 0)
    group = groups[index]
    check_waveform_group(group, path)
    raw = waveform_values(ds, group, index)
    scale, names = [], []
    for i, ch in enumerate(group.ChannelDefinitionSequence):
        unit = "uV"
        if ch.get("ChannelSensitivityUnitsSequence"):
            unit = str(ch.ChannelSensitivityUnitsSequence[0].CodeValue)
        if unit.lower() not in UNIT_TO_MV:
            raise InvalidInputError(f"{path}: channel {i + 1} has (003A,0211) Channel Sensitivity Units {unit!r}",
                                    expected="uV, mV or V")
        scale.append(UNIT_TO_MV[unit.lower()])
        source = ch.ChannelSourceSequence[0] if ch.get("ChannelSourceSequence") else None
        names.append(normalise_lead(source.CodeMeaning) if source is not None else f"ch{i + 1}")
    if raw.ndim != 2 or raw.shape[1] != len(scale):
        raise InvalidInputError(f"{path}: waveform data of shape {raw.shape} for {len(scale)} channel definitions",
                                expected="one (003A,0200) Channel Definition per channel", fix=FIX_DICOM)
    signals = raw.T.astype(np.float32)  # leads as rows; casts first, then scales in place (mixed-type ufuncs are slow)
    signals *= np.asarray(scale, np.float32)[:, None]
    fs = float(group.SamplingFrequency)
    meta = {"multiplex_group": labels[index], "groups": labels, "Modality": str(ds.get("Modality", ""))}
    return EcgRecord(_checked(signals, fs, str(path)), fs, tuple(names), str(path), "dicom",
                     hashlib.sha256(data).hexdigest(), (), meta)


# -- WFDB -----------------------------------------------------------------------------------
def _from_wfdb(header: Path) -> EcgRecord:
    if not header.is_file():
        raise InvalidInputError(f"{header} does not exist", expected="a WFDB header (.hea) beside the signal file")
    record = wfdb.read_record(header)
    units = [UNIT_TO_MV.get(str(u).lower(), 1.0) for u in record.units]
    signals = record.signals.astype(np.float32) * np.asarray(units, np.float32)[:, None]
    atr = header.with_suffix(".atr")
    annotations = wfdb.read_annotations(atr) if atr.is_file() else ()
    digest = sha256_files(sorted(header.parent.glob(header.stem + ".*")))
    return EcgRecord(_checked(signals, record.fs, str(header)), record.fs, record.names,
                     str(header), "wfdb", digest, annotations, {"comments": record.comments})


# -- HL7 aECG -------------------------------------------------------------------------------
NS = {"h": "urn:hl7-org:v3"}


def _from_aecg(path: Path) -> EcgRecord:
    limits.check_file_size(path.stat().st_size, str(path), limits.MAX_TEXT_BYTES)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise InvalidInputError(f"{path} is not well-formed XML ({exc})", expected="an HL7 aECG file") from None
    if not root.tag.endswith("AnnotatedECG"):
        raise InvalidInputError(f"{path} root element is {root.tag}", expected="HL7 aECG <AnnotatedECG>")
    series = root.find(".//h:component/h:series", NS)  # the first series is the rhythm; medians are derived
    if series is None:
        raise InvalidInputError(f"{path} has no <series> with ECG sequences", expected="an aECG rhythm series")
    fs, names, rows = None, [], []
    for seq in series.findall("./h:component/h:sequenceSet/h:component/h:sequence", NS):
        code = _element(seq, "h:code", path).get("code", "")
        value = _element(seq, "h:value", path)
        if "TIME" in code:
            inc = _element(value, "h:increment", path)
            step = _number(inc, "value", path) * (1e-3 if inc.get("unit") == "ms" else 1.0)
            fs = limits.check_sampling_rate(1.0 / step if step > 0 else step, f"{path} <increment>")
            continue
        origin, scale = _element(value, "h:origin", path), _element(value, "h:scale", path)
        text = _element(value, "h:digits", path).text or ""
        try:
            digits = np.array(text.split(), np.float64)
        except ValueError:
            raise InvalidInputError(f"{path}: lead {code} has non-numeric <digits>", expected="integers") from None
        unit = UNIT_TO_MV.get(scale.get("unit", "uV").lower(), 1e-3)
        o_unit = UNIT_TO_MV.get(origin.get("unit", "uV").lower(), 1e-3)
        rows.append(digits * _number(scale, "value", path) * unit + _number(origin, "value", path) * o_unit)
        names.append(normalise_lead(code))
    if fs is None or not rows:
        raise InvalidInputError(f"{path} rhythm series lacks a time increment or lead sequences",
                                expected="an aECG with <increment> and lead <digits>")
    n = min(len(r) for r in rows)
    signals = np.stack([r[:n] for r in rows])
    return EcgRecord(_checked(signals, fs, str(path)), fs, tuple(names), str(path), "aecg", sha256_file(path))


def _element(parent, tag: str, path: Path):
    found = parent.find(tag, NS)
    if found is None:
        raise InvalidInputError(f"{path}: a <{parent.tag.split('}')[-1]}> has no <{tag[2:]}>",
                                expected="an HL7 aECG sequence with code, value, origin, scale and digits")
    return found


def _number(element, attribute: str, path: Path) -> float:
    """A finite number from an XML attribute, else InvalidInputError naming it."""
    text = element.get(attribute)
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = float("nan")
    if not np.isfinite(value):
        raise InvalidInputError(f"{path}: <{element.tag.split('}')[-1]} {attribute}={text!r}>", expected="a finite number")
    return value


# -- CSV ------------------------------------------------------------------------------------
def _from_csv(path: Path, fs: float | None) -> EcgRecord:
    """One column per lead with a header row; ``# fs=500`` / ``# units=uV`` comment lines or a time column."""
    limits.check_file_size(path.stat().st_size, str(path), limits.MAX_TEXT_BYTES)
    text = path.read_text(errors="replace")
    comments = dict(re.findall(r"^#\s*(\w+)\s*=\s*(\S+)", text, flags=re.M))
    body = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    reader = csv.reader(io.StringIO("\n".join(body)))
    header = next(reader, None)
    if not header or all(_is_number(h) for h in header):
        raise InvalidInputError(f"{path} has no header row", expected="lead names in the first row, e.g. I,II,V1",
                                fix="add a header row naming each column")
    rows = [row for row in reader if row]
    ragged = next((i for i, row in enumerate(rows) if len(row) != len(header)), None)
    if ragged is not None or not rows:
        raise InvalidInputError(f"{path}: " + (f"row {ragged + 2} has {len(rows[ragged])} values" if rows else "no rows"),
                                expected=f"{len(header)} values in every row, as the header names",
                                fix="write one value per column in every row")
    try:
        values = np.array([[float(v) for v in row] for row in rows], np.float64)
    except ValueError as exc:
        raise InvalidInputError(f"{path} holds a non-numeric value ({exc})", expected="numbers below the header") from None
    names = [h.strip() for h in header]
    time_col = next((i for i, h in enumerate(names) if h.lower() in ("time", "t", "time_s", "seconds")), None)
    rate = fs if fs is not None else _comment_number(comments, "fs", path)
    if rate is None and time_col is not None:
        step = float(np.median(np.diff(values[:, time_col]))) if len(values) > 1 else 0.0
        rate = limits.check_sampling_rate(1.0 / step if step > 0 else step, f"{path} time column (median step {step} s)")
    if rate is None:
        raise InvalidInputError(f"{path} does not say its sampling rate", expected="fs given, a '# fs=500' line or a time column",
                                fix="pass fs=... or add '# fs=<Hz>' as the first line")
    keep = [i for i in range(len(names)) if i != time_col]
    unit = comments.get("units", "mV").lower()
    if unit not in UNIT_TO_MV:
        raise InvalidInputError(f"{path} says '# units={comments['units']}'", expected=f"one of {sorted(UNIT_TO_MV)}")
    signals = values[:, keep].T * UNIT_TO_MV[unit]
    return EcgRecord(_checked(signals, rate, str(path)), float(rate), tuple(names[i] for i in keep), str(path),
                     "csv", sha256_file(path))


def _comment_number(comments: dict, key: str, path: Path) -> float | None:
    if key not in comments:
        return None
    if not _is_number(comments[key]):
        raise InvalidInputError(f"{path} says '# {key}={comments[key]}'", expected="a number")
    return float(comments[key])


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False
