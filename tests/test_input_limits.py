"""Issue #12: degenerate inputs are refused before inference, every refusal is a MedError, and no
input takes more than 1 GB of memory or 10 s (limits in engine/limits.py)."""
from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from medexport.engine import limits
from medexport.engine.errors import InvalidInputError
from medexport.engine.io.ecg import read_ecg
from medexport.engine.io.image import read_image
from medexport.engine.manifest import ImagePreprocess, TilePreprocess
from medexport.engine.preprocess import check_image


def _dicom(source: str, tmp_path: Path, name: str = "x.dcm", **tags) -> Path:
    """A copy of ``source`` with tags set (DS values as text, so NaN and 'inf' can be written)."""
    import warnings

    import pydicom

    ds = pydicom.dcmread(source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for keyword, value in tags.items():
            if value is None:
                del ds[keyword]
            elif isinstance(value, tuple):  # (VR, value)
                ds.add_new(pydicom.datadict.tag_for_keyword(keyword), *value)
            else:
                setattr(ds, keyword, value)
    path = tmp_path / name
    ds.save_as(path, enforce_file_format=False)
    return path


# -- item 2: non-finite or degenerate pixels ------------------------------------------------------
@pytest.mark.parametrize("tags, tag", [
    ({"WindowCenter": ("DS", "nan"), "WindowWidth": ("DS", "400")}, r"\(0028,1050\) Window Center"),
    ({"WindowCenter": ("DS", "40"), "WindowWidth": ("DS", "inf")}, r"\(0028,1051\) Window Width"),
    ({"RescaleSlope": ("DS", "0")}, r"\(0028,1053\) Rescale Slope 0"),
    ({"RescaleSlope": ("DS", "nan")}, r"\(0028,1053\) Rescale Slope"),
    ({"RescaleSlope": ("DS", "inf")}, r"\(0028,1053\) Rescale Slope"),
    ({"RescaleIntercept": ("DS", "1e39")}, r"\(0028,1052\) Rescale Intercept"),
])
def test_non_finite_display_tags_are_refused_naming_the_tag(pydicom_file, tmp_path, tags, tag):
    path = _dicom(pydicom_file("CT_small.dcm"), tmp_path, **tags)
    with pytest.raises(InvalidInputError, match=tag):
        read_image(path)


def test_nan_pixel_in_a_float_tiff_is_refused(tmp_path):
    from PIL import Image

    arr = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    arr[10, 10] = np.nan
    Image.fromarray(arr).save(tmp_path / "f.tif")
    with pytest.raises(InvalidInputError, match="1 NaN or infinite float pixels"):
        read_image(tmp_path / "f.tif")


@pytest.mark.parametrize("shape, value, match", [
    ((64, 64), 0, "constant"), ((64, 64), 255, "constant"), ((1, 1), 7, "constant"),
    ((1, 100000), None, "at least 28 x 28"), ((20, 40), None, "at least 28 x 28"),
    ((100, 600), None, "aspect ratio 6.0"),
])
def test_degenerate_images_are_refused_before_inference(shape, value, match):
    arr = np.full(shape, value, np.uint8) if value is not None else \
        np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
    with pytest.raises(InvalidInputError, match=match):
        check_image(read_image(arr).pixels, ImagePreprocess(size=(28, 28)))


def test_tiles_need_half_a_tile_and_at_most_the_tile_pixel_limit():
    spec = TilePreprocess(tile=256, overlap=32)
    noise = np.random.default_rng(0).random((127, 300), dtype=np.float32)
    with pytest.raises(InvalidInputError, match="at least 128 x 128"):
        check_image(noise, spec)
    check_image(np.random.default_rng(1).random((128, 300), dtype=np.float32), spec)
    side = int(limits.MAX_TILE_PIXELS ** 0.5) + 1
    big = np.zeros((side, side), np.float32)
    big[0, 0] = 1
    with pytest.raises(InvalidInputError, match="for a tiled model"):
        check_image(big, spec)


def test_all_black_png_is_refused_by_the_bundle(pneumonia_bundle, tmp_path):
    from PIL import Image

    from medexport.engine.open import open_bundle

    Image.new("L", (256, 256), 0).save(tmp_path / "black.png")
    with open_bundle(pneumonia_bundle) as model, pytest.raises(InvalidInputError, match="constant"):
        model.predict(tmp_path / "black.png")


# -- item 5: every refusal is a MedError ----------------------------------------------------------
def test_aecg_zero_increment(shared, tmp_path):
    xml = (shared / "ecg" / "hl7-aecg" / "example_12lead.xml").read_text()
    path = tmp_path / "a.xml"
    path.write_text(xml.replace('<increment value="0.002"', '<increment value="0"', 1))
    assert path.read_text() != xml
    with pytest.raises(InvalidInputError, match="<increment>: sampling rate is 0"):
        read_ecg(path)


def test_csv_constant_time_column(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text("time,II\n" + "".join(f"1.0,{np.sin(k / 10):.3f}\n" for k in range(500)))
    with pytest.raises(InvalidInputError, match=r"time column \(median step 0.0 s\)"):
        read_ecg(path)


def test_csv_ragged_rows_and_unknown_units(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text("# fs=300\nI,II\n1,2\n3\n")
    with pytest.raises(InvalidInputError, match="row 3 has 1 values"):
        read_ecg(path)
    path.write_text("# fs=300\n# units=furlongs\nII\n" + "1\n" * 10)
    with pytest.raises(InvalidInputError, match="units=furlongs"):
        read_ecg(path)


def test_wfdb_zero_samples_per_frame(shared, tmp_path):
    src = shared / "ecg" / "cinc2017-af"
    (tmp_path / "A00001.mat").write_bytes((src / "A00001.mat").read_bytes())
    header = tmp_path / "A00001.hea"
    header.write_text((src / "A00001.hea").read_text().replace("16+24", "16x0+24"))
    with pytest.raises(InvalidInputError, match="could not be parsed"):
        read_ecg(header)


def test_three_dimensional_pixels_in_a_single_frame(pydicom_file, tmp_path):
    path = _dicom(pydicom_file("CT_small.dcm"), tmp_path, SamplesPerPixel=3)
    with pytest.raises(InvalidInputError, match=r"\(0028,0002\) Samples per Pixel 3"):
        read_image(path)


@pytest.mark.parametrize("descriptor, data, match", [
    ([4096, 0], [0] * 4096, "LUT Descriptor"), ([4096, 0, 16], [0] * 10, "10 \\(0028,3006\\) LUT Data"),
    ([4096, 0, 12], [0] * 4096, "LUT Descriptor"),
])
def test_bad_lut_sequences(pydicom_file, tmp_path, descriptor, data, match):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    item = Dataset()
    item.add_new(0x00283002, "US", descriptor)
    item.add_new(0x00283006, "US", data)
    item.ModalityLUTType = "HU"
    path = _dicom(pydicom_file("CT_small.dcm"), tmp_path, ModalityLUTSequence=Sequence([item]))
    with pytest.raises(InvalidInputError, match=match):
        read_image(path)


def test_waveform_channel_count_mismatch(pydicom_file, tmp_path):
    import pydicom

    ds = pydicom.dcmread(pydicom_file("waveform_ecg.dcm"))
    ds.WaveformSequence[0].NumberOfWaveformChannels = 13
    ds.save_as(tmp_path / "w.dcm")
    with pytest.raises(InvalidInputError, match=r"\(003A,0005\)|Waveform Data"):
        read_ecg(tmp_path / "w.dcm")


def test_empty_and_object_arrays():
    with pytest.raises(InvalidInputError, match="non-empty 2-D"):
        read_image(np.zeros((0, 5)))
    with pytest.raises(InvalidInputError, match="dtype object"):
        read_image(np.array([[None, 1]], dtype=object))
    with pytest.raises(InvalidInputError, match="dtype object"):
        read_ecg(np.array([None, 1.0] * 500, dtype=object), fs=300)
    with pytest.raises(InvalidInputError, match="signal shape"):
        read_ecg(np.zeros((3, 0)), fs=300)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_bomb(13000, 13000))
    assert path.stat().st_size < 400_000
    with pytest.raises(InvalidInputError, match=r"13000 x 13000 = 169,000,000 pixels.*at most 40,000,000"):
        read_image(path)


# -- item 7: bounded memory and time --------------------------------------------------------------
def _png_bomb(width: int, height: int) -> bytes:
    """A valid 8-bit grey PNG of zeros: a few hundred KB that decode to width x height bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    comp = zlib.compressobj(9)
    row = b"\0" * (width + 1)
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def test_sampling_rate_limits_in_the_message():
    signal = np.sin(np.arange(3000) / 10)
    for fs in (0.05, 1e9, 0, float("nan"), -300):
        with pytest.raises(InvalidInputError, match="from 50 to 20000 Hz"):
            read_ecg(signal, fs=fs)
    with pytest.raises(InvalidInputError, match="at most 4,000,000 samples"):
        read_ecg(np.zeros((1, limits.MAX_SAMPLES_PER_LEAD + 1), np.float32), fs=20000)


def test_huge_dicom_rows_and_columns_refused_before_decoding(pydicom_file, tmp_path):
    path = _dicom(pydicom_file("CT_small.dcm"), tmp_path, Rows=65535, Columns=65535)
    with pytest.raises(InvalidInputError, match=r"65535 x 65535 = 4,294,836,225 pixels"):
        read_image(path)
    path = _dicom(pydicom_file("emri_small.dcm"), tmp_path, NumberOfFrames=("IS", "1000000000"))
    with pytest.raises(InvalidInputError, match=r"\(0028,0008\) Number of Frames"):
        read_image(path)


WORST = """
import json, resource, sys, time
import numpy as np
from medexport.engine import limits
from medexport.engine.errors import MedError
from medexport.engine.io.ecg import read_ecg
from medexport.engine.io.image import read_image
from medexport.engine.manifest import EcgPreprocess, ImagePreprocess
from medexport.engine.preprocess import check_image, image_to_tensor
from medexport.engine.tasks.ecg_rhythm import record_windows

def image(path):
    p = read_image(path).pixels
    check_image(p, ImagePreprocess(size=(224, 224)))
    image_to_tensor(p, ImagePreprocess(size=(224, 224)))

def ecg(source, **kw):
    record_windows(read_ecg(source, **kw), EcgPreprocess())

kind, arg = sys.argv[1], sys.argv[2]
start = time.perf_counter()
def peak_rss_mb():  # VmHWM, not ru_maxrss: the latter keeps the forking parent's peak across exec (Linux)
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024


try:
    if kind == "image":
        image(arg)
    elif kind == "ecg":
        ecg(arg)
    else:  # the longest record the limits allow at this rate: a beat every 0.8 s
        fs = float(arg)
        n = int(min(limits.MAX_SAMPLES_PER_LEAD, limits.MAX_DURATION_S * fs)) if 50 <= fs <= 20000 else 30_000
        t = np.arange(n) / fs
        ecg(np.exp(-((t % 0.8) - 0.4) ** 2 / (2 * 0.03 ** 2)), fs=fs)
    outcome = "accepted"
except MedError as exc:
    outcome = "refused: " + str(exc)[:120]
print(json.dumps({"outcome": outcome, "seconds": time.perf_counter() - start,
                  "rss_mb": peak_rss_mb()}))
"""


@pytest.fixture(scope="module")
def worst_inputs(tmp_path_factory, pydicom_file, shared):
    from PIL import Image

    folder = tmp_path_factory.mktemp("worst")
    (folder / "bomb.png").write_bytes(_png_bomb(13000, 13000))
    big = np.add.outer(np.arange(6000, dtype=np.uint16) % 256, np.arange(6000, dtype=np.uint16) % 256) // 2
    Image.fromarray(big.astype(np.uint8)).save(folder / "largest-accepted.png", compress_level=1)
    _dicom(pydicom_file("CT_small.dcm"), folder, "huge.dcm", Rows=65535, Columns=65535)
    header = folder / "slow.hea"  # a real record whose header claims 0.05 Hz
    (folder / "A00001.mat").write_bytes((shared / "ecg" / "cinc2017-af" / "A00001.mat").read_bytes())
    header.write_text((shared / "ecg" / "cinc2017-af" / "A00001.hea").read_text().replace(" 300 ", " 0.05 ", 1))
    return [("image", folder / "bomb.png", "refused"), ("image", folder / "huge.dcm", "refused"),
            ("image", folder / "largest-accepted.png", "accepted"), ("ecg", header, "refused"),
            ("array", "0.05", "refused"), ("array", "1e9", "refused"), ("array", "50", "accepted"),
            ("array", "20000", "accepted")]


def test_worst_inputs_stay_under_1_gb_and_10_s(worst_inputs):
    """Each in a fresh process: peak resident memory (VmHWM) and wall time of read + preprocess."""
    for kind, arg, expected in worst_inputs:
        out = subprocess.run([sys.executable, "-c", WORST, kind, str(arg)], capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        got = json.loads(out.stdout.strip().splitlines()[-1])
        print(kind, Path(str(arg)).name, got)
        assert got["outcome"].startswith(expected), (arg, got)
        assert got["rss_mb"] < 1024 and got["seconds"] < 10, (arg, got)
