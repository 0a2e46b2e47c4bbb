"""Seeded mutation fuzzing of every reader: any input gives a valid, finite result or a MedError.

Real files (pydicom's and pydicom-data's DICOM, the shared ECG records, a shared chest X-ray
saved in every picture mode) are mutated tag by tag and byte by byte. For each input: the reader
(and the task's preprocessing) either returns a finite result or raises MedError; never another
exception; the input files are unchanged afterwards; each input takes bounded time.

Briefly in the normal suite; at length with ``MEDEXPORT_FUZZ_EXAMPLES=100000`` (per format,
``make fuzz``). ``python tests/test_fuzz.py [N]`` prints the figures of docs/fuzzing.md.
Every case is reproducible from its format and index (``random.Random(f"{fmt}/{i}")``).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import random
import re
import shutil
import struct
import sys
import tempfile
import time
import traceback
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

from medexport.engine import limits
from medexport.engine.errors import MedError

DEFAULT_EXAMPLES = {"dicom-image": 600, "picture": 700, "wfdb": 400, "csv": 400, "aecg": 100, "dicom-waveform": 100,
                    "dicom-series": 60}
MAX_SECONDS_PER_INPUT = 10.0
DICOM_SEEDS = ("CT_small.dcm", "MR_small.dcm", "emri_small.dcm", "emri_small_RLE.dcm",
               "emri_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "MR_small_RLE.dcm")
DICOM_DATA_SEEDS = ("vlut_04.dcm", "mlut_18.dcm", "JPEG-LL.dcm")
WFDB_SEEDS = ("cinc2017-af/A00001", "cinc2021-12lead/E07500", "ptbdb/s0010_re", "mitdb/100")
NASTY = ["nan", "NaN", "inf", "-inf", "0", "-0", "-1", "1e308", "1e-308", "1e39", "abc", "", "1\\2", "65536",
         "4294967296", "-32768", "0.5", "1" * 40]


def examples(fmt: str) -> int:
    return int(os.environ.get("MEDEXPORT_FUZZ_EXAMPLES", DEFAULT_EXAMPLES[fmt]))


# -- seeds ----------------------------------------------------------------------------------------
def _shared() -> Path:
    from medexport.models.data import shared_data

    return shared_data()


def _dicom_seeds() -> list[bytes]:
    from pydicom.data import get_testdata_file

    from medexport.models.data import pydicom_data

    paths = [get_testdata_file(n) for n in DICOM_SEEDS] + [str(pydicom_data() / n) for n in DICOM_DATA_SEEDS]
    return [Path(p).read_bytes() for p in paths]


def _grey_picture() -> "Image.Image":
    from PIL import Image

    with Image.open(sorted((_shared() / "images" / "cxr-nih").glob("*.png"))[0]) as img:
        return img.convert("L").resize((96, 80))


# -- DICOM mutations ---
def _add_text(ds, tag: int, vr: str, text: str, pending: list) -> None:
    """Add a DS/IS element holding any text (pydicom would refuse 'x' or 'nan'): a unique placeholder
    of the same length is written, and replaced in the saved bytes by :func:`_save_dataset`."""
    text = text.ljust(6) if len(text) % 2 == 0 else text.ljust(max(7, len(text) + 1))
    digits = "98765432101234567890" * 3
    holder = (digits[:len(text)] if vr == "IS" else "9." + digits[:len(text) - 2])
    ds.add_new(tag, vr, holder)
    pending.append((holder.encode(), text.encode("latin-1")))


def _save_dataset(ds, pending: list) -> bytes | None:
    buf = io.BytesIO()
    try:
        ds.save_as(buf, enforce_file_format=False)
    except (ValueError, TypeError, OverflowError, OSError, struct.error):  # pydicom refuses to write it
        return None
    data = buf.getvalue()
    for holder, text in pending:
        data = data.replace(holder, text, 1)
    return data


def _mutate_dataset(ds, rng: random.Random, pending: list) -> str:
    """Change one or two of the tags that drive pixel decoding and display; say what was done."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    done = []
    for _ in range(rng.choice((1, 1, 2))):
        what = rng.choice(["WindowCenter", "WindowWidth", "RescaleSlope", "RescaleIntercept", "BitsAllocated",
                           "BitsStored", "HighBit", "PixelRepresentation", "Rows", "Columns", "NumberOfFrames",
                           "PhotometricInterpretation", "SamplesPerPixel", "VOILUTFunction", "VOILUTSequence",
                           "ModalityLUTSequence", "PixelData", "delete"])
        if what in ("WindowCenter", "WindowWidth", "RescaleSlope", "RescaleIntercept"):
            value = rng.choice(NASTY + [str(rng.uniform(-1e5, 1e5))])
            _add_text(ds, {"WindowCenter": 0x00281050, "WindowWidth": 0x00281051, "RescaleSlope": 0x00281053,
                           "RescaleIntercept": 0x00281052}[what], "DS", value, pending)
        elif what in ("BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "Rows", "Columns",
                      "SamplesPerPixel"):
            value = rng.choice([0, 1, 2, 3, 7, 8, 12, 15, 16, 17, 31, 32, 33, 64, 255, 65535])
            setattr(ds, what, value)
        elif what == "NumberOfFrames":
            value = rng.choice(["0", "1", "2", "3", "10", "11", "100000", "1000000000", "-1", "x", ""])
            _add_text(ds, 0x00280008, "IS", value, pending)
        elif what == "PhotometricInterpretation":
            value = rng.choice(["MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR", "YBR_FULL", "", "junk"])
            ds.PhotometricInterpretation = value
        elif what == "VOILUTFunction":
            value = rng.choice(["SIGMOID", "LINEAR_EXACT", "LINEAR", "junk"])
            ds.VOILUTFunction = value
        elif what in ("VOILUTSequence", "ModalityLUTSequence"):
            item = Dataset()
            entries = rng.choice([0, 1, 2, 256, 4096, 70000])
            item.add_new(0x00283002, "US", [rng.choice([0, 1, 256, 4096]), rng.choice([0, 65436, 100]),
                                            rng.choice([0, 1, 8, 12, 16, 17])][: rng.choice((3, 3, 2))])
            item.add_new(0x00283006, "US", [rng.randrange(0, 65536) for _ in range(min(entries, 5000))])
            if what == "ModalityLUTSequence":
                item.ModalityLUTType = "HU"
            setattr(ds, what, Sequence([item] if rng.random() < 0.9 else []))
            for tag in ("WindowCenter", "WindowWidth"):
                if rng.random() < 0.7 and tag in ds:
                    del ds[tag]
            value = f"{item.get('LUTDescriptor')} x{min(entries, 5000)}"
        elif what == "PixelData":
            data = ds.PixelData
            value = rng.choice(["half", "empty", "double", "odd"])
            ds.PixelData = {"half": data[: len(data) // 2], "empty": b"", "double": data * 2,
                            "odd": data[:-1]}[value]
        else:
            value = rng.choice(["Rows", "Columns", "BitsAllocated", "PixelData", "PhotometricInterpretation",
                                "RescaleSlope", "WindowWidth", "PixelRepresentation"])
            if value in ds:
                del ds[value]
        done.append(f"{what}={value!r}")
    return ", ".join(done)


def _flip_bytes(data: bytes, rng: random.Random, head: int | None = None) -> tuple[bytes, str]:
    out = bytearray(data)
    n = rng.choice((1, 2, 4, 16))
    span = min(len(out), head or len(out))
    if span == 0:  # an object truncated to nothing: nothing to flip
        return bytes(out), "empty"
    for _ in range(n):
        out[rng.randrange(span)] = rng.randrange(256)
    return bytes(out), f"{n} byte(s) changed in the first {span}"


def _truncate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    cut = rng.randrange(len(data))
    return data[:cut], f"truncated at {cut}/{len(data)}"


def dicom_image_case(rng: random.Random, seeds: list[bytes]) -> tuple[dict, str, dict, str]:
    import pydicom

    seed_index = rng.randrange(len(seeds))
    data = seeds[seed_index]
    kind = rng.random()
    if kind < 0.6:
        ds, pending = pydicom.dcmread(io.BytesIO(data)), []
        what = _mutate_dataset(ds, rng, pending)
        data = _save_dataset(ds, pending)
        if data is None:
            return {}, "", {}, "unwritable"
    elif kind < 0.8:
        data, what = _flip_bytes(data, rng, head=rng.choice((1024, 4096, None)))
    else:
        data, what = _truncate(data, rng)
    frame = rng.choice((None, None, 0, 0, 0, 1, 5, 9, 10, -1))
    return {"image.dcm": data}, "image.dcm", {"frame": frame}, f"seed {seed_index}: {what}, frame={frame}"


# -- picture mutations ----------------------------------------------------------------------------
def _save(img, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _picture_variants(grey) -> list[tuple[str, bytes]]:
    """The same grey picture in every mode and format it can be saved in (plus a NaN float TIFF)."""
    from PIL import Image

    arr = np.asarray(grey)
    rgb = grey.convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    nan = arr.astype(np.float32) / 255
    nan[3, 4] = np.nan
    return [
        ("l.png", _save(grey, "PNG")), ("l.jpg", _save(grey, "JPEG", quality=95)), ("l.bmp", _save(grey, "BMP")),
        ("l.tif", _save(grey, "TIFF")), ("p.png", _save(grey.convert("P"), "PNG")),
        ("p.bmp", _save(grey.quantize(64), "BMP")), ("la.png", _save(grey.convert("LA"), "PNG")),
        ("rgb.png", _save(rgb, "PNG")), ("rgb.jpg", _save(rgb, "JPEG", quality=95)),
        ("rgba.png", _save(grey.convert("RGBA"), "PNG")), ("cmyk.jpg", _save(rgb.convert("CMYK"), "JPEG", quality=95)),
        ("cmyk.tif", _save(rgb.convert("CMYK"), "TIFF")),
        ("i16.png", _save(Image.fromarray(arr.astype(np.uint16) * 257), "PNG")),
        ("i32.tif", _save(Image.fromarray(arr.astype(np.int32) - 100), "TIFF")),
        ("f.tif", _save(Image.fromarray(arr.astype(np.float32) / 255), "TIFF")),
        ("nan.tif", _save(Image.fromarray(nan), "TIFF")), ("bw.png", _save(grey.convert("1"), "PNG")),
        ("exif.jpg", _save(grey, "JPEG", exif=exif)),
        ("pages.tif", _save(grey, "TIFF", save_all=True, append_images=[grey.rotate(90)])),
    ]


def _huge_png(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Rewrite a PNG's IHDR width and height (with a valid CRC): a huge or absurd declared size."""
    width, height = rng.choice([(13000, 13000), (1, 100000), (100000, 1), (2**31 - 1, 2**31 - 1), (0, 5),
                                (7000, 7000), (1, 1)])
    ihdr = b"IHDR" + struct.pack(">II", width, height) + data[24:29]
    out = data[:8] + data[8:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + data[33:]
    return out, f"IHDR {width} x {height}"


def picture_case(rng: random.Random, variants: list) -> tuple[dict, str, dict, str]:
    name, data = variants[rng.randrange(len(variants))]
    kind = rng.random()
    if kind < 0.25:
        what = "as saved"
    elif kind < 0.55:
        data, what = _flip_bytes(data, rng, head=rng.choice((64, 512, None)))
    elif kind < 0.8:
        data, what = _truncate(data, rng)
    elif name.endswith(".png"):
        data, what = _huge_png(data, rng)
    else:
        data, what = _flip_bytes(data, rng, head=32)
    frame = rng.choice((None, None, 0, 1, 2))
    return {name: data}, name, {"frame": frame}, f"{name}: {what}, frame={frame}"


# -- ECG mutations --------------------------------------------------------------------------------
def _mutate_header(text: str, rng: random.Random) -> tuple[str, str]:
    lines = text.splitlines()
    record = lines[0].split()
    choice = rng.random()
    if choice < 0.35:
        field = rng.randrange(1, 4)
        value = rng.choice(["0", "-1", "0.05", "1e9", "nan", "inf", "abc", "1", "2", "100", "99999999999",
                            "360/0", "250/abc", "16", "65", "1000000", "4000001"])
        while len(record) <= field:
            record.append("1")
        record[field] = value
        lines[0] = " ".join(record)
        return "\n".join(lines) + "\n", f"record field {field} = {value}"
    if choice < 0.8 and len(lines) > 1:
        i = rng.randrange(1, len(lines))
        parts = lines[i].split()
        if len(parts) < 3 or lines[i].startswith("#"):
            return text, "unchanged (comment line)"
        field = rng.choice((1, 1, 2, 4))
        value = rng.choice({1: ["16x0", "16x-1", "16x1000", "16+99999999", "16+-5", "8", "999", "16:3", "212",
                                "24", "32", "61", "80", "160", "16x2", "abc", "16+1"],
                            2: ["0", "nan", "inf", "-200", "1e308", "200(abc)/mV", "200(5)/uV", "1e-300/V", "/"],
                            4: ["abc", "99999999999999999999", "-5"]}[field])
        while len(parts) <= field:
            parts.append("0")
        parts[field] = value
        lines[i] = " ".join(parts)
        return "\n".join(lines) + "\n", f"line {i} field {field} = {value}"
    if choice < 0.9 and len(lines) > 1:
        del lines[rng.randrange(1, len(lines))]
        return "\n".join(lines) + "\n", "a signal line removed"
    data, what = _flip_bytes(text.encode(), rng)
    return data.decode("latin-1"), what


def wfdb_case(rng: random.Random, seeds: dict) -> tuple[dict, str, dict, str]:
    name = WFDB_SEEDS[rng.randrange(len(WFDB_SEEDS))]
    header, signals = seeds[name]
    stem = Path(name).name
    if name == "mitdb/100":  # 30 minutes: keep one in ten cases at full length
        header = header.replace("650000", "36000") if rng.random() < 0.9 else header
    files = dict(signals)
    kind = rng.random()
    if kind < 0.7:
        header, what = _mutate_header(header, rng)
    else:
        victim = rng.choice(sorted(files))
        files[victim], what = (_truncate if kind < 0.85 else _flip_bytes)(files[victim], rng)
        what = f"{victim}: {what}"
    files[stem + ".hea"] = header.encode("latin-1")
    return files, stem + ".hea", {}, f"{name}: {what}"


def _csv_text(rng: random.Random, signal: np.ndarray) -> str:
    n = rng.choice((3, 50, 3000))
    rows = signal[:n]
    lines, what = [], []
    if rng.random() < 0.6:
        value = rng.choice(["300", "0", "-5", "nan", "inf", "1e9", "0.05", "abc", "50", "20000"])
        lines.append(f"# fs={value}")
        what.append(f"fs={value}")
    if rng.random() < 0.3:
        value = rng.choice(["uV", "mV", "V", "furlongs", ""])
        lines.append(f"# units={value}")
        what.append(f"units={value}")
    time_col = rng.random() < 0.5
    header = (["time"] if time_col else []) + ["II"]
    if rng.random() < 0.1:
        header = []
        what.append("no header")
    lines.append(",".join(header))
    step = rng.choice([1 / 300, 0.0, -1 / 300, 1e-9, 20.0, float("nan")]) if time_col else None
    for k, v in enumerate(rows):
        cells = ([f"{k * step!r}"] if time_col else []) + [f"{v:.4f}"]
        lines.append(",".join(cells))
    if time_col:
        what.append(f"time step {step}")
    text = "\n".join(lines) + "\n"
    if rng.random() < 0.3:
        data, flip = _flip_bytes(text.encode(), rng)
        text = data.decode("latin-1")
        what.append(flip)
    if rng.random() < 0.15:
        text += rng.choice(["1,2,3,4\n", "x,y\n", "inf\n", "1e400\n", ",\n"])
        what.append("a bad last row")
    return text, "; ".join(what) or "plain"


def csv_case(rng: random.Random, signal: np.ndarray) -> tuple[dict, str, dict, str]:
    text, what = _csv_text(rng, signal)
    fs = rng.choice((None, None, None, 300.0, 0.0, float("nan"), 1e9))
    return {"ecg.csv": text.encode("latin-1")}, "ecg.csv", {"fs": fs}, f"{what}, fs={fs}"


def aecg_case(rng: random.Random, xml: str) -> tuple[dict, str, dict, str]:
    kind = rng.random()
    if kind < 0.5:
        attr = rng.choice(["increment", "scale", "origin"])
        value = rng.choice(NASTY)
        pattern = re.compile(rf'(<{attr}[^>]*?value=")([^"]*)(")')
        matches = list(pattern.finditer(xml))
        m = matches[rng.randrange(len(matches))]
        text = xml[:m.start(2)] + value + xml[m.end(2):]
        what = f"<{attr} value={value!r}> (#{matches.index(m)})"
    elif kind < 0.7:
        tag = rng.choice(["increment", "scale", "origin", "digits", "code", "value", "series", "sequence"])
        matches = list(re.finditer(rf"<{tag}\b[^>]*/>", xml)) or list(re.finditer(rf"<{tag}\b", xml))
        m = matches[rng.randrange(len(matches))]
        text = xml[:m.start()] + xml[m.start():].replace(f"<{tag}", "<removed", 1)
        what = f"<{tag}> renamed"
    elif kind < 0.8:
        m = list(re.finditer(r"<digits>", xml))
        m = m[rng.randrange(len(m))]
        text = xml[:m.end()] + rng.choice(["abc ", "", "1e400 ", "nan "]) + xml[m.end():]
        what = "bad digits"
    elif kind < 0.9:
        data, what = _truncate(xml.encode(), rng)
        text = data.decode("utf-8", errors="replace")
    else:
        data, what = _flip_bytes(xml.encode(), rng)
        text = data.decode("latin-1")
    return {"ecg.xml": text.encode("utf-8", errors="replace")}, "ecg.xml", {}, what


def dicom_waveform_case(rng: random.Random, data: bytes) -> tuple[dict, str, dict, str]:
    import pydicom

    kind = rng.random()
    if kind < 0.65:
        ds, pending = pydicom.dcmread(io.BytesIO(data)), []
        group = ds.WaveformSequence[rng.randrange(len(ds.WaveformSequence))]
        what = rng.choice(["NumberOfWaveformChannels", "NumberOfWaveformSamples", "SamplingFrequency",
                           "WaveformBitsAllocated", "ChannelDefinitionSequence", "ChannelSensitivity",
                           "WaveformData", "WaveformSequence", "units"])
        if what in ("NumberOfWaveformChannels", "WaveformBitsAllocated"):
            value = rng.choice([0, 1, 3, 8, 12, 16, 32, 65535])
            setattr(group, what, value)
        elif what == "NumberOfWaveformSamples":
            value = rng.choice([0, 1, 2, 100, 5000, 10001, 2**32 - 1])
            setattr(group, what, value)
        elif what == "SamplingFrequency":
            value = rng.choice(NASTY + ["0.05", "1e9", "250"])
            _add_text(group, 0x003A001A, "DS", value, pending)
        elif what == "ChannelDefinitionSequence":
            value = rng.choice(["empty", "drop one", "drop source"])
            seq = group.ChannelDefinitionSequence
            if value == "empty":
                group.ChannelDefinitionSequence = []
            elif value == "drop one":
                del seq[rng.randrange(len(seq))]
            else:
                ch = seq[rng.randrange(len(seq))]
                del ch.ChannelSourceSequence
        elif what == "ChannelSensitivity":
            value = rng.choice(NASTY)
            ch = group.ChannelDefinitionSequence[rng.randrange(len(group.ChannelDefinitionSequence))]
            _add_text(ch, 0x003A0210, "DS", value, pending)
        elif what == "WaveformData":
            value = rng.choice(["half", "empty", "odd"])
            wd = group.WaveformData
            group.WaveformData = {"half": wd[: len(wd) // 2], "empty": b"", "odd": wd[:-1]}[value]
        elif what == "WaveformSequence":
            value = "removed"
            del ds.WaveformSequence
        else:
            value = rng.choice(["furlongs", "", "MV"])
            ch = group.ChannelDefinitionSequence[rng.randrange(len(group.ChannelDefinitionSequence))]
            ch.ChannelSensitivityUnitsSequence[0].CodeValue = value
        out, what = _save_dataset(ds, pending), f"{what}={value!r}"
        if out is None:
            return {}, "", {}, "unwritable"
    elif kind < 0.85:
        out, what = _flip_bytes(data, rng, head=rng.choice((2048, None)))
    else:
        out, what = _truncate(data, rng)
    return {"ecg.dcm": out}, "ecg.dcm", {}, what


# -- the property ---------------------------------------------------------------------------------
def _check_image(study, kwargs) -> None:
    from medexport.engine.manifest import ImagePreprocess, TilePreprocess
    from medexport.engine.preprocess import check_image, image_to_tensor

    p = study.pixels
    assert p.dtype == np.float32 and p.ndim == 2 and p.size > 0, (p.dtype, p.shape)
    assert np.isfinite(p).all() and 0.0 <= p.min() <= p.max() <= 1.0
    for spec in (ImagePreprocess(size=(28, 28)), TilePreprocess()):
        try:
            check_image(p, spec)
        except MedError:
            continue
        if spec.kind == "image":
            tensor, _ = image_to_tensor(p, spec)
            assert np.isfinite(tensor).all()


def _check_ecg(record, kwargs) -> None:
    from medexport.engine.manifest import EcgPreprocess
    from medexport.engine.tasks.ecg_rhythm import record_windows

    low, high = limits.SAMPLING_RATE_HZ
    s = record.signals
    assert s.dtype == np.float32 and s.ndim == 2 and s.shape[0] == len(record.leads) >= 1 and s.shape[1] >= 2
    assert np.isfinite(s).all() and low <= record.fs <= high
    if record.duration <= 120:  # the task's preprocessing too (beats); long records cost seconds
        try:
            windows, _ = record_windows(record, EcgPreprocess())
        except MedError:
            return
        assert np.isfinite(windows).all()


def _readers():
    """reader name -> (read, check, the exception that counts as a refusal)."""
    from medexport.engine.errors import InvalidInputError
    from medexport.engine.io.ecg import read_ecg
    from medexport.engine.io.image import read_image
    from medexport.engine.io.volume import read_volume

    return {"image": (read_image, _check_image, MedError), "ecg": (read_ecg, _check_ecg, MedError),
            "volume": (lambda path: read_volume(Path(path).parent), _check_volume, InvalidInputError)}


def _digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def run_format(fmt: str, n: int, folder: Path) -> dict:
    """Try ``n`` mutated inputs of one format; count accepted, refused and anything else."""
    make, reader = MAKERS[fmt]()
    read, check, refusal = _readers()[reader]
    stats = {"tried": 0, "accepted": 0, "refused": 0, "skipped": 0, "other": 0, "modified": 0, "slow": 0,
             "max_s": 0.0, "failures": []}
    for i in range(n):
        rng = random.Random(f"{fmt}/{i}")
        with warnings.catch_warnings():  # pydicom warns about the invalid values it is asked to write
            warnings.simplefilter("ignore")
            files, entry, kwargs, what = make(rng)
        if not files:
            stats["skipped"] += 1  # pydicom would not write that mutation
            continue
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for name, data in files.items():
            (folder / name).write_bytes(data)
        before = _digest(folder)
        stats["tried"] += 1
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = read(str(folder / entry), **kwargs)
                check(result, kwargs)
            stats["accepted"] += 1
        except refusal:
            stats["refused"] += 1
        except Exception:  # noqa: BLE001 - the property under test: nothing but the refusal escapes
            stats["other"] += 1
            stats["failures"].append(f"{fmt}/{i} ({what}): {traceback.format_exc(limit=-3)}")
        elapsed = time.perf_counter() - start
        stats["max_s"] = max(stats["max_s"], elapsed)
        if elapsed > MAX_SECONDS_PER_INPUT:
            stats["slow"] += 1
            stats["failures"].append(f"{fmt}/{i} ({what}): took {elapsed:.1f} s")
        if _digest(folder) != before:
            stats["modified"] += 1
            stats["failures"].append(f"{fmt}/{i} ({what}): an input file was modified")
    return stats


def _dicom_image_maker():
    seeds = _dicom_seeds()
    return (lambda rng: dicom_image_case(rng, seeds)), "image"


def _picture_maker():
    variants = _picture_variants(_grey_picture())
    return (lambda rng: picture_case(rng, variants)), "image"


def _wfdb_maker():
    root = _shared() / "ecg"
    seeds = {}
    for name in WFDB_SEEDS:
        header = (root / f"{name}.hea").read_text()
        stem = Path(name).name
        signals = {p.name: p.read_bytes() for p in (root / name).parent.glob(stem + ".*")
                   if p.suffix in (".dat", ".mat", ".atr", ".xyz")}
        seeds[name] = (header, signals)
    return (lambda rng: wfdb_case(rng, seeds)), "ecg"


def _csv_maker():
    from medexport.engine.io.ecg import read_ecg

    signal = read_ecg(_shared() / "ecg" / "cinc2017-af" / "A00001.hea").signals[0]
    return (lambda rng: csv_case(rng, signal)), "ecg"


def _aecg_maker():
    xml = (_shared() / "ecg" / "hl7-aecg" / "example_12lead.xml").read_text()
    return (lambda rng: aecg_case(rng, xml)), "ecg"


def _waveform_maker():
    from pydicom.data import get_testdata_file

    data = Path(get_testdata_file("waveform_ecg.dcm")).read_bytes()
    return (lambda rng: dicom_waveform_case(rng, data)), "ecg"


CASES = {"dicom-image": _dicom_image_maker, "picture": _picture_maker, "wfdb": _wfdb_maker, "csv": _csv_maker,
         "aecg": _aecg_maker, "dicom-waveform": _waveform_maker}


@pytest.mark.parametrize("fmt", sorted(CASES))
def test_every_input_gives_a_result_or_a_med_error(fmt, tmp_path):
    stats = run_format(fmt, examples(fmt), tmp_path / "case")
    print(f"\n{fmt}: {_line(stats)}")
    assert not stats["failures"], "\n".join(stats["failures"][:5])
    assert stats["accepted"] > 0 and stats["refused"] > 0  # the mutations reach both outcomes


# -- the result writers and the listener's receive check (issue 24, item 10a) --------------------
# c-store: 1200 by default, so that make test replays the objects the long run found escaping as
# BytesLengthException and pydicom's errno-less OSError (case 1140 among them)
WRITER_EXAMPLES = {"writers": 40, "c-store": 1200}
WRITER_SEEDS = ("CT_small.dcm", "MR_small.dcm")
# the header attributes the SR / SEG / PDF copy, by VR (and three UIDs they reference)
FUZZED = [("PatientBirthDate", "DA"), ("StudyDate", "DA"), ("StudyTime", "TM"), ("PatientName", "PN"),
          ("ReferringPhysicianName", "PN"), ("PatientSex", "CS"), ("Modality", "CS"), ("PatientID", "LO"),
          ("StudyDescription", "LO"), ("AccessionNumber", "SH"), ("StudyID", "SH"), ("PatientAge", "AS"),
          ("PatientWeight", "DS"), ("PatientSize", "DS"), ("OtherPatientIDs", "LO"), ("InstanceNumber", "IS"),
          ("StudyInstanceUID", "UI"), ("SeriesInstanceUID", "UI"), ("SOPInstanceUID", "UI")]
CHARSETS = ["ISO_IR 100", "ISO_IR 192", "ISO_IR 6", "", "\\ISO 2022 IR 87", "ISO 2022 IR 6\\ISO 2022 IR 149",
            "ISO_IR 999", "utf-8", "latin1", "ISO_IR 100\\ISO_IR 192", "GB18030", "ISO 2022 IR 13\\ISO 2022 IR 87",
            "\x1b$B", "ISO_IR 13", "ISO_IR 144", "x" * 80]
SHAPES = ["1970-01-02", "1970/13/45", "19700230", "25:61", "10:30:15.5", "Doe^Jane", "Doe^Jane^^^^^", "a=b=c=d",
          "FEMALE", "m", "1.2.3..4", "1.2.abc", "0.01", "1e400", "nan", "45Y", "045Y", "-1", "Müller^Anna",
          "山田^太郎", "\\\\\\", "\x00\x01\x1b$B", " ", "A" * 70, "9" * 70]


def _fuzzed_value(rng: random.Random) -> str:
    """Any string: a shape a modality gets wrong, random characters (controls, Latin-1, CJK), or both."""
    if rng.random() < 0.4:
        return rng.choice(SHAPES)
    pool = ("0123456789.-:/\\^= abcXYZ" + "".join(map(chr, range(32))) + "äöüßéñ" + "山田太郎" + "\x7f\xa0\xff")
    text = "".join(rng.choice(pool) for _ in range(rng.choice((1, 2, 8, 16, 65, 200))))
    return text if rng.random() < 0.7 else rng.choice(SHAPES) + text


def _raw(ds, keyword: str, vr: str, value: str | None) -> None:
    """Put ``value`` into ``ds`` byte for byte (Latin-1 where it fits, else UTF-8), or remove the attribute."""
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    tag = Tag(keyword)
    if value is None:
        if tag in ds:
            del ds[tag]
        return
    try:
        data = value.encode("latin-1")
    except UnicodeEncodeError:
        data = value.encode("utf-8")
    data += b" " if len(data) % 2 else b""
    implicit, little = ds.original_encoding if ds.original_encoding[0] is not None else (False, True)
    # in the dataset's own encoding, so that pydicom writes the bytes as they are (no conversion)
    ds[tag] = RawDataElement(tag, None if implicit else vr, len(data), data, 0, implicit, little)


def writer_case(rng: random.Random, seeds: list[bytes]) -> tuple[bytes, list[str], str]:
    """A seed with 1-4 header attributes fuzzed or removed, maybe an odd character set: (file, patient values, what)."""
    import pydicom

    seed_index = rng.randrange(len(seeds))
    ds = pydicom.dcmread(io.BytesIO(seeds[seed_index]))
    done, values, uids = [], [], []
    for _ in range(rng.choice((1, 1, 2, 4))):
        keyword, vr = rng.choice(FUZZED)
        value = None if rng.random() < 0.2 else _fuzzed_value(rng)
        _raw(ds, keyword, vr, value)
        done.append(f"{keyword}={value!r}"[:60])
        if value is not None:
            (uids if vr == "UI" else values).append(value)
    if rng.random() < 0.3:
        charset = rng.choice(CHARSETS)
        _raw(ds, "SpecificCharacterSet", "CS", charset)
        done.append(f"SpecificCharacterSet={charset!r}")
    buf = io.BytesIO()
    try:
        ds.save_as(buf)
    except (ValueError, OverflowError):  # a value pydicom itself cannot write (IS '1e400'): another case
        return writer_case(random.Random(rng.random()), seeds)
    # a UID may be logged (audit lines carry UIDs): a patient value that is also a UID here is not checked
    return buf.getvalue(), [v for v in values if v not in uids], f"seed {seed_index}: " + ", ".join(done)


def _writers_once(path: Path) -> list:
    """SR, SEG and Encapsulated PDF for one source, as the listener makes them: the encoded objects."""
    import pydicom

    from medexport.engine.pacs.objects import encode, result_objects
    from medexport.engine.pacs.textpdf import report_lines, text_pdf
    from medexport.engine.results import ClassificationResult, Provenance, SegmentationResult

    provenance = Provenance("fuzz", "1.0", "ab" * 32, "onnxruntime", "fp32", "cpu")
    header = pydicom.dcmread(path, stop_before_pixels=True)
    rows, cols = int(header.get("Rows", 64)), int(header.get("Columns", 64))
    common = dict(provenance=provenance, source=str(path), input_sha256="0" * 64, timings_ms={})
    scores = ClassificationResult(**common, scores={"Pneumonia": 0.8, "normal": 0.2}, thresholds={"Pneumonia": 0.5})
    probability = np.zeros((rows, cols), np.float32)
    probability[: rows // 2, : cols // 3] = 0.9
    mask = SegmentationResult(**common, probability=probability, thresholds={"lesion": 0.5}, input_meta={"SOPInstanceUID": "1"})
    pdf = text_pdf(report_lines(scores, header, "fuzz"))
    objects = result_objects(scores, str(path), pdf=pdf, src=header) + result_objects(mask, str(path), src=header)
    return [encode(ds) for ds in objects]


def _check_written(data: bytes) -> None:
    """Readable again, and every patient / study value it copied conforms to its VR."""
    import pydicom
    from pydicom import config
    from pydicom.valuerep import validate_value

    ds = pydicom.dcmread(io.BytesIO(data))
    for elem in ds.iterall():
        if elem.tag >> 16 in (0x0008, 0x0010) and elem.VR in ("DA", "TM", "PN", "CS", "LO", "SH", "AS", "DS", "UI"):
            for value in (elem.value if elem.VM > 1 else [elem.value]):
                if value not in (None, ""):
                    validate_value(elem.VR, str(value), config.RAISE)
    assert str(ds.get("PatientSex", "")) in ("", "M", "F", "O")


def run_writers(n: int, folder: Path) -> dict:
    """``n`` fuzzed headers through the SR / SEG / PDF writers: valid objects or a MedError without the values."""
    from pydicom.data import get_testdata_file

    seeds = [Path(get_testdata_file(name)).read_bytes() for name in WRITER_SEEDS]
    folder.mkdir(parents=True, exist_ok=True)
    stats = {"tried": 0, "accepted": 0, "refused": 0, "other": 0, "echoed": 0, "max_s": 0.0, "failures": []}
    with _heard() as said:
        for i in range(n):
            _writer_once(i, seeds, folder, stats, said)
    return stats


@contextlib.contextmanager
def _heard():
    """Yield a function giving every log record (any logger, DEBUG up) and warning since its last call."""
    records, root = [], logging.getLogger()

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler, level = Keep(logging.DEBUG), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")

            def said() -> str:
                text = "\n".join(records + [str(w.message) for w in caught])
                del records[:], caught[:]
                return text

            yield said
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _writer_once(i: int, seeds: list[bytes], folder: Path, stats: dict, said) -> None:
    rng = random.Random(f"writers/{i}")
    data, values, what = writer_case(rng, seeds)
    path = folder / f"{i}.dcm"
    path.write_bytes(data)
    said()  # what writing the case said (pydicom quotes the values it is asked to write) is not the writers'
    stats["tried"] += 1
    start = time.perf_counter()
    message = ""
    try:
        for obj in _writers_once(path):
            _check_written(obj)
        stats["accepted"] += 1
    except MedError as exc:
        stats["refused"] += 1
        message = str(exc)
    except Exception:  # noqa: BLE001 - the property under test
        stats["other"] += 1
        stats["failures"].append(f"writers/{i} ({what}): {traceback.format_exc(limit=-3)}")
    stats["max_s"] = max(stats["max_s"], time.perf_counter() - start)
    text = message + "\n" + said()
    if any(len(v.strip()) >= 6 and v.strip() in text for v in values):
        stats["echoed"] += 1
        stats["failures"].append(f"writers/{i} ({what}): a patient value is quoted in a MedError, log or warning")
    if path.read_bytes() != data:
        stats["failures"].append(f"writers/{i} ({what}): the source file was modified")
    path.unlink()


def run_check_object(n: int, folder: Path) -> dict:
    """``n`` fuzzed / truncated / bit-flipped objects through the C-STORE handler's receive check
    (given the file pynetdicom streamed the object to, as the handler does)."""
    from pydicom.dataset import Dataset

    from medexport.engine.errors import InvalidInputError
    from medexport.engine.pacs.listener import check_object

    seeds = _dicom_seeds()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "received.dcm"
    stats = {"tried": 0, "accepted": 0, "refused": 0, "other": 0, "echoed": 0, "max_s": 0.0, "failures": []}
    for i in range(n):
        rng = random.Random(f"c-store/{i}")
        data = seeds[rng.randrange(len(seeds))]
        kind = rng.random()
        if kind < 0.4:
            data, what = _flip_bytes(data, rng, head=rng.choice((512, 2048, None)))
        elif kind < 0.7:
            data, what = _truncate(data, rng)
        elif kind < 0.85:
            data, what = _flip_bytes(*_truncate(data, rng)[:1], rng)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                data, _, what = writer_case(rng, seeds)
        path.write_bytes(data)
        stats["tried"] += 1
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = check_object(path)
            assert isinstance(ds, Dataset), type(ds)
            stats["accepted"] += 1
        except InvalidInputError:
            stats["refused"] += 1
        except Exception:  # noqa: BLE001 - the property under test: nothing but InvalidInputError escapes
            stats["other"] += 1
            stats["failures"].append(f"c-store/{i} ({what}): {traceback.format_exc(limit=-3)}")
        stats["max_s"] = max(stats["max_s"], time.perf_counter() - start)
    return stats


WRITER_TARGETS = {"writers": run_writers, "c-store": run_check_object}


def writer_examples(target: str) -> int:
    return int(os.environ.get("MEDEXPORT_FUZZ_EXAMPLES", WRITER_EXAMPLES[target]))


@pytest.mark.parametrize("target", sorted(WRITER_TARGETS))
def test_writers_and_receive_check_give_a_result_or_a_med_error(target, tmp_path):
    stats = WRITER_TARGETS[target](writer_examples(target), tmp_path / "case")
    print(f"\n{target}: {_line(stats)}")
    assert not stats["failures"], "\n".join(stats["failures"][:5])
    assert stats["accepted"] > 0 and stats["refused"] > 0  # the cases reach both outcomes


def _line(stats: dict) -> str:
    return (f"tried {stats['tried']}, accepted {stats['accepted']}, refused {stats['refused']}, "
            f"other exceptions {stats['other']}, modified {stats.get('modified', 0)}, slow {stats.get('slow', 0)}, "
            f"echoed {stats.get('echoed', 0)}, slowest {stats['max_s']:.2f} s")


def fuzz_stats(n: int | None = None) -> dict:
    """Run every format (``n`` inputs each, default as in the test suite) and print the figures."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in MAKERS:
            start = time.perf_counter()
            out[fmt] = run_format(fmt, n or examples(fmt), Path(tmp) / fmt)
            print(f"| {fmt} | {out[fmt]['tried']} | {out[fmt]['accepted']} | {out[fmt]['refused']} | "
                  f"{out[fmt]['other']} | {out[fmt]['modified']} | {out[fmt]['max_s']:.2f} | "
                  f"{time.perf_counter() - start:.0f} |", flush=True)
            for failure in out[fmt]["failures"][:10]:
                print("   ", failure)
        for target, run in WRITER_TARGETS.items():
            start = time.perf_counter()
            out[target] = stats = run(n or writer_examples(target), Path(tmp) / target)
            print(f"| {target} | {stats['tried']} | {stats['accepted']} | {stats['refused']} | {stats['other']} | "
                  f"{stats['echoed']} echoed | {stats['max_s']:.2f} | {time.perf_counter() - start:.0f} |", flush=True)
            for failure in stats["failures"][:10]:
                print("   ", failure)
    return out


if __name__ == "__main__":
    fuzz_stats(int(sys.argv[1]) if len(sys.argv) > 1 else None)


# -- volumes: DICOM series (issue 29) ------------------------------------------------------------
# A real series (the shared hippocampus crop, 32 slices) with slices shuffled, missing, duplicated,
# contradictory, truncated or with header bytes flipped: read_volume gives a VolumeStudy or an
# InvalidInputError, never anything else; inputs unchanged; bounded time.
SERIES_SEED = "volumes/hippocampus-mr/dicom/Study1/13_HCropVolume"
OTHER_SERIES_SEED = "volumes/hippocampus-mr/dicom/Study3/11_HCropVolume"


def _contradict(data: bytes, rng: random.Random) -> tuple[bytes | None, str]:
    """One slice's geometry, size, rescale or identity changed (to another real value or nonsense)."""
    import pydicom

    try:
        ds, pending = pydicom.dcmread(io.BytesIO(data)), []
    except Exception:  # noqa: BLE001 - an earlier mutation already broke this slice: leave it broken
        return data, "a slice already unreadable"
    what = rng.choice(["ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "RescaleSlope",
                       "SeriesInstanceUID", "SOPInstanceUID", "GantryDetectorTilt", "NumberOfFrames", "delete"])
    if what in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        count = {"ImagePositionPatient": 3, "ImageOrientationPatient": 6, "PixelSpacing": 2}[what]
        value = [rng.choice([0, 1, -1, 0.5, 1e6, 2.0, 33.0]) for _ in range(rng.choice((count, count, count - 1)))]
        setattr(ds, what, value)
    elif what in ("RescaleSlope", "GantryDetectorTilt"):
        value = rng.choice(NASTY)
        _add_text(ds, {"RescaleSlope": 0x00281053, "GantryDetectorTilt": 0x00181120}[what], "DS", value, pending)
    elif what == "NumberOfFrames":
        value = rng.choice(["2", "0", "x"])
        _add_text(ds, 0x00280008, "IS", value, pending)
    elif what == "Rows":
        rows = int(ds.get("Rows", 1) or 1)  # an earlier mutation may have removed it
        value = rng.choice([rows - 1, rows + 1, 0])
        ds.Rows = value
    elif what in ("SeriesInstanceUID", "SOPInstanceUID"):
        value = rng.choice(["1.2.3", "", "1.2.840.99"])
        setattr(ds, what, value)
    else:
        value = rng.choice(["ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SeriesInstanceUID",
                            "SOPInstanceUID", "PixelData", "Rows"])
        if value in ds:
            del ds[value]
    return _save_dataset(ds, pending), f"{what}={value!r}"


def series_case(rng: random.Random, slices: list[bytes], other: list[bytes]) -> tuple[dict, str]:
    """A mutated copy of the series: files under shuffled names, then 1-3 edits."""
    files, done = list(slices), []
    for _ in range(rng.choice((1, 1, 2, 3))):
        kind = rng.choice(["drop", "duplicate", "copy", "contradict", "flip", "truncate", "other", "none"])
        i = rng.randrange(len(files))
        if kind == "drop" and len(files) > 1:
            del files[i]
        elif kind == "duplicate":
            files.append(files[i])
        elif kind == "copy":
            edited, _ = _contradict(files[i], random.Random(rng.random())) if rng.random() < 0.5 else (files[i], "")
            files.insert(rng.randrange(len(files) + 1), edited or files[i])
        elif kind == "contradict":
            edited, kind = _contradict(files[i], rng)
            if edited is None:
                return {}, "unwritable"
            files[i] = edited
        elif kind == "flip":
            files[i], kind = _flip_bytes(files[i], rng, head=rng.choice((400, 1024, None)))
        elif kind == "truncate":
            files[i], kind = _truncate(files[i], rng)
        elif kind == "other":
            files.append(other[rng.randrange(len(other))])
        done.append(f"{kind} @{i}")
    rng.shuffle(files)
    return {f"{rng.randrange(10**6):06d}-{n}.dcm": data for n, data in enumerate(files)}, ", ".join(done)


def _check_volume(study, kwargs=None) -> None:
    from medexport.engine.volume import VolumeStudy

    assert isinstance(study, VolumeStudy), type(study)
    v = study.voxels
    assert v.dtype == np.float32 and v.ndim == 3 and v.shape[0] >= 2 and np.isfinite(v).all()
    assert study.affine.shape == (4, 4) and np.isfinite(study.affine).all() and study.voxel_volume_ml > 0
    assert len(study.slice_uids) == v.shape[0] and all(s > 0 for s in study.spacing)


def _series_maker():
    """Mutated copies of a real series; read_volume reads the folder they are written to."""
    slices = [p.read_bytes() for p in sorted((_shared() / SERIES_SEED).glob("*.dcm"))]
    other = [p.read_bytes() for p in sorted((_shared() / OTHER_SERIES_SEED).glob("*.dcm"))]

    def make(rng):
        files, what = series_case(rng, slices, other)
        return files, next(iter(files), ""), {}, what
    return make, "volume"


MAKERS = {**CASES, "dicom-series": _series_maker}  # every reader target run_format knows


def test_series_give_a_volume_or_an_invalid_input_error(tmp_path):
    stats = run_format("dicom-series", examples("dicom-series"), tmp_path / "series")
    print(f"\ndicom-series: {_line(stats)}")
    assert not stats["failures"], "\n".join(stats["failures"][:5])
    assert stats["accepted"] > 0 and stats["refused"] > 0  # the mutations reach both outcomes
