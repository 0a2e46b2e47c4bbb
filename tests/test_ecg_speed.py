"""The fast ECG paths give the answers of the straightforward ones (no timings asserted here).

* Lead choice: every lead filtered, searched for R peaks and checked in one batched pass
  (engine/tasks/ecg_rhythm.choose_leads) against each lead on its own (ecg_beats.beats_of +
  signal_quality.assess) and the selection rule written out plainly, on real records.
* The vectorised R-peak picking and QRS-to-noise ratio against per-complex / per-lead loops.
* The lean DICOM waveform read against pydicom's full parse, on the real file, an implicit-VR
  copy and the fuzzer's mutations: whatever the lean read accepts, pydicom reads the same.
"""
from __future__ import annotations

import dataclasses
import io
import random
from pathlib import Path

import numpy as np
import pytest

from medexport.engine import ecg_beats, signal_quality
from medexport.engine.errors import InvalidInputError
from medexport.engine.io import ecg
from medexport.engine.io.dicom import PARSE_ERRORS, read_dataset, waveform
from medexport.engine.manifest import EcgPreprocess
from medexport.engine.tasks import ecg_rhythm

SPEC = EcgPreprocess()


def _records(shared, pydicom_file):
    root = shared / "ecg"
    paths = [pydicom_file("waveform_ecg.dcm"), root / "ptbdb" / "s0010_re.hea",
             root / "cinc2017-af" / "A00001.hea", root / "cinc2017-af" / "A00004.hea"]
    paths += sorted((root / "cinc2021-12lead").glob("*.hea"))[:6]
    for path in paths:
        record = ecg.read_ecg(path)
        if record.duration > 60:  # PTB: its first 30 s
            record = dataclasses.replace(record, signals=np.ascontiguousarray(record.signals[:, :int(30 * record.fs)]))
        yield record
        if len(record.leads) > 2:  # leads that fail checks: flat, noisy, clipped
            s = record.signals.copy()
            s[0] = 0.0
            s[1] += np.random.default_rng(0).normal(0, 0.5, s.shape[1]).astype(np.float32)
            s[2] = np.clip(s[2], *np.percentile(s[2], [5, 95]))
            yield dataclasses.replace(record, signals=s)


def _per_lead(record, spec, lead=None):
    """The lead choice with each lead on its own, as choose_leads states it."""
    names = [record.lead(lead)[1]] if lead else list(record.leads)
    checked = []
    for name in names:
        signal = record.signals[record.leads.index(name)]
        beats = ecg_beats.beats_of(signal, record.fs, spec)
        checked.append((signal_quality.assess(signal, record.fs, name, beats), beats))
    checked.sort(key=lambda c: signal_quality.rank_key(c[0]))
    usable = [c for c in checked if c[0].beats >= ecg_rhythm.MIN_BEATS]
    if not usable:
        return None, [q for q, _ in checked]
    passing = [c for c in usable if c[0].ok]
    if passing:
        ref = passing[0][0].beats
        chosen = [c for c in passing if abs(c[0].beats - ref) <= ecg_rhythm.BEAT_AGREEMENT * ref][:ecg_rhythm.COMBINE]
    else:
        chosen = usable[:1]
    return chosen, [q for q, _ in checked]


def test_batched_lead_choice_matches_each_lead_on_its_own(shared, pydicom_file):
    compared = 0
    for record in _records(shared, pydicom_file):
        for lead in (None, "II") if "II" in record.leads else (None,):
            chosen, checked = _per_lead(record, SPEC, lead)
            if chosen is None:
                with pytest.raises(InvalidInputError, match="beats found in lead"):
                    ecg_rhythm.choose_leads(record, SPEC, lead)
                continue
            leads, quality = ecg_rhythm.choose_leads(record, SPEC, lead)
            assert [q.to_dict() for q in quality] == [q.to_dict() for q in checked]
            for a, b in zip(quality, checked):
                assert a.snr == pytest.approx(b.snr, rel=1e-12) and a.hf_ratio == pytest.approx(b.hf_ratio, rel=1e-12)
            assert [one["lead"] for one in leads] == [q.lead for q, _ in chosen]
            for one, (_, beats) in zip(leads, chosen):
                windows, _ = ecg_beats.windows(beats.tokens, SPEC)
                np.testing.assert_array_equal(one["windows"], windows)
                assert one["stats"] == ecg_beats.rhythm_stats(beats.peaks, SPEC.fs)
            compared += 1
    assert compared >= 20


def _peaks_one_complex_at_a_time(x: np.ndarray, fs: float) -> np.ndarray:
    """r_peaks written as a loop over one lead's complexes (the detector's plain statement)."""
    slope = ecg_beats._boxcar(np.abs(np.gradient(ecg_beats.band_pass(x, fs, 5.0, 15.0))), round(0.1 * fs))
    qrs = slope > 1.5 * ecg_beats._boxcar(slope, round(0.75 * fs))
    begins = np.flatnonzero(~qrs[:-1] & qrs[1:]) + 1
    if len(begins) == 0:
        return np.zeros(0, np.int64)
    ends = np.flatnonzero(qrs[:-1] & ~qrs[1:]) + 1
    ends = ends[ends > begins[0]]
    k = min(len(begins), len(ends))
    begins, ends = begins[:k], ends[:k]
    keep = (ends - begins) >= 0.4 * np.mean(ends - begins)
    ref = np.abs(x - np.median(x))
    peaks: list[int] = []
    for b, e in zip(begins[keep], ends[keep]):
        p = int(b + np.argmax(ref[b:e]))
        if not peaks or p - peaks[-1] > round(0.25 * fs):
            peaks.append(p)
        elif ref[p] > ref[peaks[-1]]:
            peaks[-1] = p
    return np.asarray(peaks, np.int64)


def _snr_one_lead(x: np.ndarray, peaks: np.ndarray, fs: float) -> float:
    if len(peaks) == 0:
        return 0.0
    outside = np.ones(len(x), bool)
    for p in peaks:
        outside[max(0, p - round(0.1 * fs)):p + round(0.1 * fs)] = False
    if outside.sum() < fs * 0.5:
        return 0.0
    high = ecg_beats.band_pass(x, fs, 15.0, min(40.0, fs / 2 * 0.95))[outside]
    noise = 1.4826 * float(np.median(np.abs(high - np.median(high))))
    return float(np.median(np.abs(x[peaks]))) / max(noise, 1e-6)


def test_vectorised_peaks_and_snr_match_the_loops(shared, pydicom_file):
    for record in _records(shared, pydicom_file):
        conditioned, peaks = ecg_beats.detect(record.signals, record.fs, SPEC)
        snr = signal_quality.qrs_snr(conditioned, peaks, SPEC.fs)
        for x, found, value in zip(conditioned, peaks, snr):
            np.testing.assert_array_equal(found, _peaks_one_complex_at_a_time(x.astype(np.float64), SPEC.fs))
            assert value == pytest.approx(_snr_one_lead(x, found, SPEC.fs), rel=1e-12)


def test_masked_median_is_numpys():
    rng = np.random.default_rng(1)
    for dtype in (np.float64, np.float32):
        values = rng.normal(size=(6, 9)).astype(dtype)
        mask = rng.random((6, 9)) < 0.6
        mask[:, 0] = True
        expected = [np.median(v[m]) for v, m in zip(values, mask)]
        got = signal_quality._masked_median(values, mask)
        assert got.dtype == dtype and list(got) == expected


# -- the lean DICOM waveform read ----------------------------------------------------------------
def _both_ways(data: bytes, tmp_path: Path):
    """(lean record or its refusal or None where it does not apply, pydicom's record or refusal)."""
    path = tmp_path / "ecg.dcm"
    path.write_bytes(data)
    lean = waveform.lean_waveform(data)
    outcomes = []
    for read in ((lambda: ecg._waveform(lean, path, data)) if lean is not None else None,
                 lambda: ecg._waveform(read_dataset(str(path), data), path, data)):
        try:
            outcomes.append(read() if read else None)
        except (InvalidInputError, waveform.NotLean, *PARSE_ERRORS) as exc:
            outcomes.append(exc)
    return outcomes


def _same_record(a, b) -> None:
    assert (a.fs, a.leads, a.meta, a.sha256, a.kind) == (b.fs, b.leads, b.meta, b.sha256, b.kind)
    np.testing.assert_array_equal(a.signals, b.signals)


def test_lean_read_is_pydicoms_read(pydicom_file, tmp_path):
    import pydicom
    from pydicom.uid import ImplicitVRLittleEndian

    data = Path(pydicom_file("waveform_ecg.dcm")).read_bytes()
    lean, full = _both_ways(data, tmp_path)
    _same_record(lean, full)
    assert set(waveform.lean_waveform(data)) == {"Modality", "WaveformSequence"}

    ds = pydicom.dcmread(io.BytesIO(data))
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    for ch in ds.WaveformSequence[0].ChannelDefinitionSequence[:4]:
        ch.ChannelSensitivityUnitsSequence[0].CodeValue = "mV"
        ch.ChannelSensitivity = "0.00125"
    del ds.WaveformSequence[0].ChannelDefinitionSequence[5].ChannelSourceSequence
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=True, little_endian=True)
    lean, full = _both_ways(buf.getvalue(), tmp_path)
    assert waveform.lean_waveform(buf.getvalue()) is not None
    _same_record(lean, full)
    assert lean.leads[5] == "ch6"


def test_lean_read_declines_what_it_does_not_read(pydicom_file):
    assert waveform.lean_waveform(b"not a dicom file") is None
    data = bytearray(Path(pydicom_file("waveform_ecg.dcm")).read_bytes())
    at = data.index(b"\x02\x00\x02\x00UI")  # (0002,0002) inside the meta group's stated length
    data[at + 1] = 0x17  # pydicom ends the meta group there and reads the rest otherwise: so must the lean read
    assert waveform.lean_waveform(bytes(data)) is None
    assert waveform.lean_waveform(b"\0" * 128 + b"DICM" + b"\x02\x00\x00\x00UL\x04\x00\xff\xff\xff\x7f") is None
    for raw, vr in ((b"1\\2 ", "DS"), (b"nan ", "DS"), (b"", "DS"), (b"\x00\x01\x02", "US"), (b"caf\xe9", "LO")):
        with pytest.raises(waveform.NotLean):
            waveform._lean_value(raw, vr)
    assert (waveform._lean_value(b" 1.25e1 ", "DS"), waveform._lean_value(b"RHYTHM\x00", "CS")) == (12.5, "RHYTHM")


def test_fuzzed_files_read_the_same_both_ways(pydicom_file, tmp_path):
    """The fuzzer's waveform mutations: where the lean read gives a record, pydicom gives the same;
    where it refuses, read_ecg says what pydicom's path says."""
    from test_fuzz import dicom_waveform_case

    data = Path(pydicom_file("waveform_ecg.dcm")).read_bytes()
    accepted = 0
    for i in range(100):
        files, _, _, what = dicom_waveform_case(random.Random(f"lean/{i}"), data)
        if not files:
            continue
        lean, full = _both_ways(files["ecg.dcm"], tmp_path)
        if isinstance(lean, ecg.EcgRecord):
            assert isinstance(full, ecg.EcgRecord), (what, full)
            _same_record(lean, full)
            accepted += 1
    assert accepted >= 5
