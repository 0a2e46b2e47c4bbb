"""The engine's numpy WFDB reader against wfdb-python (the reference) on every shared record,
and on files written here in the formats the shared data does not use."""
from pathlib import Path

import numpy as np
import pytest

from medexport.engine.errors import InvalidInputError
from medexport.engine.io import wfdb as reader


def _headers(shared):
    return sorted((shared / "ecg").rglob("*.hea"))


def test_every_shared_record_matches_wfdb_python(shared):
    wfdb = pytest.importorskip("wfdb")
    compared = 0
    for header in _headers(shared):
        try:
            ref = wfdb.rdrecord(str(header.with_suffix("")))
        except ValueError:  # CinC 2017 dates that wfdb-python rejects: checked below against the .mat
            continue
        mine = reader.read_record(header)
        assert mine.fs == ref.fs and mine.names == tuple(ref.sig_name) and list(mine.units) == list(ref.units)
        assert mine.comments == list(ref.comments)
        np.testing.assert_allclose(mine.signals, ref.p_signal.T, atol=1e-9, err_msg=str(header))
        compared += 1
    assert compared >= 52  # 50 CinC 2021 (format 16 in .mat), MIT-BIH 100 (212), PTB (16, two files)


def test_cinc2017_matches_the_matlab_values(shared):
    loadmat = pytest.importorskip("scipy.io").loadmat
    headers = sorted((shared / "ecg" / "cinc2017-af").glob("*.hea"))
    assert len(headers) == 300
    for header in headers[::10]:
        val = loadmat(str(header.with_suffix(".mat")))["val"]
        np.testing.assert_allclose(reader.read_record(header).signals, val / 1000.0, atol=1e-12)


def test_annotations_match_wfdb_python(shared):
    wfdb = pytest.importorskip("wfdb")
    ref = wfdb.rdann(str(shared / "ecg" / "mitdb" / "100"), "atr")
    mine = reader.read_annotations(shared / "ecg" / "mitdb" / "100.atr")
    assert [(int(s), y) for s, y in zip(ref.sample, ref.symbol)] == list(mine)


def _write(tmp_path: Path, fmt: str, raw: bytes, n_signals: int, extra: str = "") -> Path:
    (tmp_path / "r.dat").write_bytes(raw)
    lines = [f"r {n_signals} 100{extra}"] + [f"r.dat {fmt} 100(10)/mV 16 0 0 0 0 lead{i}" for i in range(n_signals)]
    header = tmp_path / "r.hea"
    header.write_text("\n".join(lines) + "\n# Age: 50\n")
    return header


DIGITAL = np.array([[10, -20, 3000, -32768 + 1, 110, 7], [0, 1, -1, 500, -500, 32767]])  # (signals, samples)


@pytest.mark.parametrize("fmt, encode", [
    ("16", lambda d: d.T.astype("<i2").tobytes()),
    ("61", lambda d: d.T.astype(">i2").tobytes()),
    ("32", lambda d: d.T.astype("<i4").tobytes()),
    ("160", lambda d: (d.T.astype(np.int64) + 32768).astype("<u2").tobytes()),
    ("24", lambda d: b"".join(int(v).to_bytes(3, "little", signed=True) for v in d.T.ravel())),
])
def test_formats_decode_to_physical_units(tmp_path, fmt, encode):
    header = _write(tmp_path, fmt, encode(DIGITAL), 2)
    before = (tmp_path / "r.dat").read_bytes()
    r = reader.read_record(header)
    np.testing.assert_allclose(r.signals, (DIGITAL - 10) / 100.0)  # baseline 10, gain 100/mV
    assert r.names == ("lead0", "lead1") and r.fs == 100 and r.comments == ["Age: 50"]
    assert (tmp_path / "r.dat").read_bytes() == before


def test_format_212_and_80(tmp_path):
    small = np.array([[5, -7, 2047, -2047], [0, 100, -100, 12]])
    pairs = small.T.ravel() & 0xFFF
    packed = bytearray()
    for a, b in pairs.reshape(-1, 2):
        packed += bytes([a & 0xFF, ((a >> 8) & 0x0F) | ((b >> 8) & 0x0F) << 4, b & 0xFF])
    r = reader.read_record(_write(tmp_path, "212", bytes(packed), 2))
    np.testing.assert_allclose(r.signals, (small - 10) / 100.0)
    byte = np.array([[5, -7, 127, -100]])
    r = reader.read_record(_write(tmp_path, "80", (byte + 128).astype(np.uint8).tobytes(), 1))
    np.testing.assert_allclose(r.signals, (byte - 10) / 100.0)


def test_invalid_samples_and_frames(tmp_path):
    d = np.array([[1, -32768, 3, 4]])
    r = reader.read_record(_write(tmp_path, "16", d.T.astype("<i2").tobytes(), 1))
    assert np.isnan(r.signals[0, 1]) and r.signals[0, 2] == pytest.approx(-0.07)
    # two samples per frame are averaged to one, as wfdb-python does
    r = reader.read_record(_write(tmp_path, "16x2", np.array([10, 30, 50, 70], "<i2").tobytes(), 1))
    np.testing.assert_allclose(r.signals[0], [(20 - 10) / 100, (60 - 10) / 100])


def test_clear_errors(tmp_path):
    header = _write(tmp_path, "310", b"\0" * 12, 1)
    with pytest.raises(InvalidInputError, match="format 310.*xform"):
        reader.read_record(header)
    header.write_text("r/2 1 100\n")
    with pytest.raises(InvalidInputError, match="multi-segment"):
        reader.read_record(header)
    header = _write(tmp_path, "16", b"\0" * 4, 1)
    (tmp_path / "r.dat").unlink()
    with pytest.raises(InvalidInputError, match="r.dat, which is missing"):
        reader.read_record(header)
    header.write_text("r 2 100\nr.dat 16 200 16 0 0 0 0 I\n")
    with pytest.raises(InvalidInputError, match="announces 2 signals"):
        reader.read_record(header)
