"""PhysioNet WFDB records (header + signal files) and MIT-format annotations, numpy only.

Follows the WFDB specifications (header(5), signal(5), annotation(5) in the WFDB Applications
Guide): single-segment records in formats 16, 24, 32, 61, 80, 160 and 212, several signals
per file, byte offsets and several samples per frame (averaged to one, as wfdb-python does).
Invalid samples become NaN. Files are only read, never rewritten. The header's counts, rate
and sizes are checked against engine/limits.py before a signal byte is read.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import limits
from ..errors import InvalidInputError

FIX = "check that the .hea and its signal files are complete and unmodified"
DEFAULT_GAIN = 200.0  # ADC units per physical unit when the header gives none
MAX_SAMPLES_PER_FRAME = 64

# format -> (bytes per sample or None for packed formats, numpy dtype, value marking an invalid sample)
FORMATS = {16: (2, "<i2", -32768), 61: (2, ">i2", -32768), 80: (1, "u1", -128),
           160: (2, "<u2", -32768), 24: (3, None, -(1 << 23)), 32: (4, "<i4", -(1 << 31)), 212: (None, None, -2048)}

# MIT annotation codes (ecgcodes.h) -> the usual one-character symbols
SYMBOLS = dict(enumerate(" NLRaVFJASEj/Q~", 0)) | {
    16: "|", 18: "s", 19: "T", 20: "*", 21: "D", 22: '"', 23: "=", 24: "p", 25: "B", 26: "^", 27: "t",
    28: "+", 29: "u", 30: "?", 31: "!", 32: "[", 33: "]", 34: "e", 35: "n", 36: "@", 37: "x", 38: "f",
    39: "(", 40: ")", 41: "r"}
SKIP, NUM, SUB, CHN, AUX = 59, 60, 61, 62, 63


@dataclass
class SignalSpec:
    """One signal line of a header."""

    file: str
    fmt: int
    samples_per_frame: int = 1
    offset: int = 0
    gain: float = DEFAULT_GAIN
    baseline: int = 0
    units: str = "mV"
    description: str = ""


@dataclass
class WfdbRecord:
    """Physical signals (n_signals, n_samples), their names and units, and the header's comments."""

    signals: np.ndarray
    fs: float
    names: tuple
    units: tuple
    comments: list = field(default_factory=list)


def read_header(path: Path) -> tuple[dict, list[SignalSpec], list[str]]:
    """Record line fields, signal specs and comment lines of a ``.hea`` file."""
    try:
        limits.check_file_size(path.stat().st_size, str(path), limits.MAX_TEXT_BYTES)
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise InvalidInputError(f"{path} could not be read ({exc.strerror})", expected="a WFDB header") from None
    comments = [line.strip(" \t#") for line in text.splitlines() if line.strip().startswith("#")]
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    if not lines:
        raise InvalidInputError(f"{path} has no record line", expected="'<name> <n_signals> <fs> <n_samples>'", fix=FIX)
    fields = lines[0].split()
    if "/" in fields[0]:
        raise InvalidInputError(f"{path} is a multi-segment record ({fields[0]})",
                                expected="a single-segment WFDB record", fix="export the segments as one record")
    try:
        n_signals = int(fields[1]) if len(fields) > 1 else 0
        fs = float(fields[2].split("/")[0]) if len(fields) > 2 else 250.0
        n_samples = int(fields[3]) if len(fields) > 3 else None
    except ValueError:
        raise InvalidInputError(f"{path} record line is {lines[0]!r}",
                                expected="'<name> <n_signals> <fs> <n_samples> [time date]'", fix=FIX) from None
    limits.check_count(n_signals, "the number of signals", limits.MAX_LEADS, str(path), FIX)
    fs = limits.check_sampling_rate(fs, f"{path} record line")
    if n_samples is not None and n_samples < 0:
        raise InvalidInputError(f"{path}: the record line gives {n_samples} samples", expected="a count >= 0", fix=FIX)
    if n_samples:
        limits.check_samples(n_samples, fs, str(path))
    if len(lines) < 1 + n_signals:
        raise InvalidInputError(f"{path} announces {n_signals} signals but has {len(lines) - 1} signal lines",
                                expected="one line per signal", fix=FIX)
    specs = [_signal_spec(line, path) for line in lines[1:1 + n_signals]]
    return {"name": fields[0], "fs": fs, "n_samples": n_samples, "base": " ".join(fields[4:])}, specs, comments


def _signal_spec(line: str, path: Path) -> SignalSpec:
    parts = line.split(maxsplit=8)
    try:
        fmt_field = parts[1]
        fmt_text, _, offset = fmt_field.partition("+")
        fmt_text, _, skew = fmt_text.partition(":")
        fmt_text, _, spf = fmt_text.partition("x")
        spec = SignalSpec(parts[0], int(fmt_text), int(spf or 1), int(offset or 0))
        if skew and int(skew):
            raise InvalidInputError(f"{path}: signal {parts[0]} has skew {skew}", expected="no skew",
                                    fix="resample the record without skew (e.g. with WFDB's xform)")
        if len(parts) > 2:
            gain_text, _, units = parts[2].partition("/")
            gain_text, _, baseline = gain_text.partition("(")
            spec.gain = float(gain_text) or DEFAULT_GAIN
            spec.units = units or "mV"
            adc_zero = int(parts[4]) if len(parts) > 4 else 0
            spec.baseline = int(baseline.rstrip(")")) if baseline else adc_zero
        spec.description = parts[8] if len(parts) > 8 else ""
        if not (1 <= spec.samples_per_frame <= MAX_SAMPLES_PER_FRAME and spec.offset >= 0 and np.isfinite(spec.gain)):
            raise ValueError("samples per frame, byte offset or gain out of range")
    except (IndexError, ValueError, OverflowError):
        raise InvalidInputError(f"{path}: signal line {line!r} could not be parsed",
                                expected="'<file> <format>[x<spf>][+<offset>] <gain>[(<baseline>)]/<units> ...'",
                                fix=FIX) from None
    if spec.fmt not in FORMATS:
        raise InvalidInputError(f"{path}: signal {spec.description or spec.file} is stored in WFDB format {spec.fmt}",
                                expected=f"one of formats {sorted(FORMATS)}",
                                fix="convert the record to format 16, e.g. with WFDB's xform -O 16")
    return spec


def read_record(header: Path) -> WfdbRecord:
    """Read a WFDB record from its ``.hea`` path into physical units."""
    info, specs, comments = read_header(header)
    columns: dict[int, np.ndarray] = {}
    for name in dict.fromkeys(s.file for s in specs):  # one read per signal file, in header order
        group = [i for i, s in enumerate(specs) if s.file == name]
        raw = _read_group(header.parent / name, [specs[i] for i in group], info["n_samples"], info["fs"], header)
        columns.update(zip(group, raw))
    n = min(len(c) for c in columns.values()) if columns else 0
    signals = np.stack([columns[i][:n] for i in range(len(specs))]) if specs else np.zeros((0, 0))
    gains = np.array([s.gain for s in specs])[:, None]
    baselines = np.array([s.baseline for s in specs], np.float64)[:, None]
    physical = (signals - baselines) / gains
    names = tuple(s.description or f"signal {i}" for i, s in enumerate(specs))
    return WfdbRecord(physical, info["fs"], names, tuple(s.units for s in specs), comments)


def _read_group(path: Path, specs: list[SignalSpec], n_samples: int | None, fs: float,
                header: Path) -> list[np.ndarray]:
    """The signals stored in one file: decode, de-interleave, average multi-sample frames."""
    if specs[0].file == "~" or not path.is_file():
        raise InvalidInputError(f"{header} names signal file {specs[0].file}, which is missing",
                                expected="the signal file beside the header", fix=FIX)
    fmt = specs[0].fmt
    if any(s.fmt != fmt for s in specs):
        raise InvalidInputError(f"{path} mixes formats {sorted({s.fmt for s in specs})}", expected="one format per file", fix=FIX)
    frame = sum(s.samples_per_frame for s in specs)
    size, _, _ = FORMATS[fmt]
    available = path.stat().st_size - specs[0].offset
    wanted = available
    if n_samples:  # read only what the header announces (212: 3 bytes per 2 samples)
        wanted = min(available, n_samples * frame * size if size else -(-n_samples * frame * 3 // 2))
    limits.check_file_size(wanted, f"{path} (signal bytes to read)")
    data = np.fromfile(path, np.uint8, count=max(wanted, 0), offset=specs[0].offset) if wanted > 0 else np.zeros(0, np.uint8)
    values, invalid = _decode(data, fmt)
    n_frames = len(values) // frame
    if n_samples:
        n_frames = min(n_frames, n_samples)
    if n_frames == 0:
        raise InvalidInputError(f"{path} holds no complete frame", expected=f"{frame} samples per frame", fix=FIX)
    limits.check_samples(n_frames, fs, str(path))
    frames = values[:n_frames * frame].reshape(n_frames, frame).astype(np.float64)
    frames[frames == invalid] = np.nan
    out, col = [], 0
    for s in specs:
        out.append(frames[:, col:col + s.samples_per_frame].mean(1))
        col += s.samples_per_frame
    return out


def _decode(data: np.ndarray, fmt: int) -> tuple[np.ndarray, int]:
    """Raw bytes to integer samples in file order, and the value that marks an invalid sample."""
    size, dtype, invalid = FORMATS[fmt]
    if fmt == 212:  # two 12-bit samples in three bytes
        b = data[:len(data) // 3 * 3].reshape(-1, 3).astype(np.int32)
        first = b[:, 0] | ((b[:, 1] & 0x0F) << 8)
        second = b[:, 2] | ((b[:, 1] & 0xF0) << 4)
        values = np.stack([first, second], 1).ravel()
        return np.where(values > 2047, values - 4096, values), invalid
    if fmt == 24:
        b = data[:len(data) // 3 * 3].reshape(-1, 3).astype(np.int32)
        values = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        return np.where(values >= 1 << 23, values - (1 << 24), values), invalid
    values = data[:len(data) // size * size].view(dtype).astype(np.int64)
    if fmt == 80:
        return values - 128, invalid
    if fmt == 160:
        return values - 32768, invalid
    return values, invalid


def read_annotations(path: Path) -> tuple[tuple[int, str], ...]:
    """(sample, symbol) pairs of an MIT-format annotation file (e.g. ``100.atr``)."""
    limits.check_file_size(path.stat().st_size, str(path), limits.MAX_ANNOTATION_BYTES)
    words = np.fromfile(path, "<u2").astype(np.int64)
    out, sample, i = [], 0, 0
    while i < len(words):
        code, value = int(words[i]) >> 10, int(words[i]) & 0x3FF
        i += 1
        if code == 0 and value == 0:
            break
        if code == SKIP:  # a 32-bit interval follows, high word first
            if i + 1 >= len(words):
                break
            skip = (int(words[i]) << 16) | int(words[i + 1])
            sample += skip - (1 << 32) if skip >= 1 << 31 else skip
            i += 2
        elif code == AUX:
            i += (value + 1) // 2  # text bytes, padded to a whole word
        elif code not in (NUM, SUB, CHN):
            sample += value
            out.append((sample, SYMBOLS.get(code, "?")))
    return tuple(out)
