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

from ..checksums import sha256_file, sha256_files
from ..errors import InvalidInputError
from . import wfdb

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
    path = Path(os.fspath(source))
    suffix = path.suffix.lower()
    if suffix in (".hea", ".dat", ".mat", ".atr") or (not path.exists() and path.with_suffix(".hea").is_file()):
        return _from_wfdb(path.with_suffix(".hea"))
    if not path.is_file():
        raise InvalidInputError(f"{path} does not exist", fix="check the path")
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
    if not fs or fs <= 0:
        raise InvalidInputError(f"{where}: sampling rate is {fs}", expected="a positive rate in Hz")
    signals = np.asarray(signals, np.float32)
    if signals.ndim != 2 or signals.shape[1] < 2:
        raise InvalidInputError(f"{where}: signal shape {signals.shape}", expected="(leads, samples)")
    bad = ~np.isfinite(signals)
    if bad.all(axis=1).any():
        raise InvalidInputError(f"{where}: a lead holds no finite samples", fix="drop the empty lead")
    if bad.any():  # gaps (NaN) in a lead: hold the last value so filters stay stable
        for row in signals:
            idx = np.flatnonzero(np.isfinite(row))
            row[:] = np.interp(np.arange(len(row)), idx, row[idx])
    return signals


def _from_array(arr: np.ndarray, fs, leads) -> EcgRecord:
    if fs is None:
        raise InvalidInputError("an ECG array needs its sampling rate", fix="pass fs=..., e.g. predict(array, fs=300)")
    arr = np.atleast_2d(np.asarray(arr, np.float32))
    names = tuple(leads) if leads else (("ECG",) if arr.shape[0] == 1 else tuple(LEAD_ORDER[: arr.shape[0]]))
    if len(names) != arr.shape[0]:
        raise InvalidInputError(f"{len(names)} lead names for {arr.shape[0]} leads", fix="give one name per row")
    digest = hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()
    return EcgRecord(_checked(arr, float(fs), "array"), float(fs), names, "<array>", "array", digest)


# -- DICOM waveform -----------------------------------------------------------------------
def _from_dicom(path: Path) -> EcgRecord:
    from .dicom import read_dataset

    data = path.read_bytes()
    ds = read_dataset(str(path), data)
    if "WaveformSequence" not in ds:
        raise InvalidInputError(f"{path} has no (5400,0100) Waveform Sequence (SOP class {ds.get('SOPClassUID', '?')})",
                                expected="a DICOM ECG waveform object", fix="open the ECG, not an image")
    groups = ds.WaveformSequence
    labels = [str(g.get("MultiplexGroupLabel", "")) for g in groups]
    index = next((i for i, lab in enumerate(labels) if "RHYTHM" in lab.upper()), 0)
    group = groups[index]
    raw = ds.waveform_array(index)  # applies sensitivity, correction factor and baseline
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
    signals = raw.T.astype(np.float32) * np.asarray(scale, np.float32)[:, None]
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
        code = seq.find("h:code", NS).get("code", "")
        value = seq.find("h:value", NS)
        if "TIME" in code:
            inc = value.find("h:increment", NS)
            step = float(inc.get("value")) * (1e-3 if inc.get("unit") == "ms" else 1.0)
            fs = 1.0 / step
            continue
        origin, scale = value.find("h:origin", NS), value.find("h:scale", NS)
        digits = np.array(value.find("h:digits", NS).text.split(), np.float32)
        unit = UNIT_TO_MV.get(scale.get("unit", "uV").lower(), 1e-3)
        o_unit = UNIT_TO_MV.get(origin.get("unit", "uV").lower(), 1e-3)
        rows.append(digits * float(scale.get("value")) * unit + float(origin.get("value")) * o_unit)
        names.append(normalise_lead(code))
    if fs is None or not rows:
        raise InvalidInputError(f"{path} rhythm series lacks a time increment or lead sequences",
                                expected="an aECG with <increment> and lead <digits>")
    n = min(len(r) for r in rows)
    signals = np.stack([r[:n] for r in rows])
    return EcgRecord(_checked(signals, fs, str(path)), fs, tuple(names), str(path), "aecg", sha256_file(path))


# -- CSV ------------------------------------------------------------------------------------
def _from_csv(path: Path, fs: float | None) -> EcgRecord:
    """One column per lead with a header row; ``# fs=500`` / ``# units=uV`` comment lines or a time column."""
    text = path.read_text(errors="replace")
    comments = dict(re.findall(r"^#\s*(\w+)\s*=\s*(\S+)", text, flags=re.M))
    body = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    reader = csv.reader(io.StringIO("\n".join(body)))
    header = next(reader, None)
    if not header or all(_is_number(h) for h in header):
        raise InvalidInputError(f"{path} has no header row", expected="lead names in the first row, e.g. I,II,V1",
                                fix="add a header row naming each column")
    try:
        values = np.array([[float(v) for v in row] for row in reader if row], np.float64)
    except ValueError as exc:
        raise InvalidInputError(f"{path} holds a non-numeric value ({exc})", expected="numbers below the header") from None
    names = [h.strip() for h in header]
    time_col = next((i for i, h in enumerate(names) if h.lower() in ("time", "t", "time_s", "seconds")), None)
    rate = fs or (float(comments["fs"]) if "fs" in comments else None)
    if rate is None and time_col is not None:
        rate = 1.0 / float(np.median(np.diff(values[:, time_col])))
    if rate is None:
        raise InvalidInputError(f"{path} does not say its sampling rate", expected="fs given, a '# fs=500' line or a time column",
                                fix="pass fs=... or add '# fs=<Hz>' as the first line")
    keep = [i for i in range(len(names)) if i != time_col]
    scale = UNIT_TO_MV.get(comments.get("units", "mV").lower(), 1.0)
    signals = values[:, keep].T * scale
    return EcgRecord(_checked(signals, rate, str(path)), float(rate), tuple(names[i] for i in keep), str(path),
                     "csv", sha256_file(path))


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False
