"""Signal quality per ECG lead: each reason triggers on a real lead made flat, clipped, noisy or beat-less."""
import numpy as np
import pytest

from medexport.engine import ecg_beats, signal_quality
from medexport.engine.io.ecg import read_ecg
from medexport.engine.manifest import EcgPreprocess

SPEC = EcgPreprocess()


def check(signal, fs, lead="II"):
    return signal_quality.assess(signal, fs, lead, ecg_beats.beats_of(signal, fs, SPEC))


@pytest.fixture(scope="module")
def dicom_ii(pydicom_file):
    r = read_ecg(pydicom_file("waveform_ecg.dcm"))
    return r.lead("II")[0].astype(np.float64), r.fs


@pytest.fixture(scope="module")
def cinc_ii(shared):
    r = read_ecg(shared / "ecg" / "cinc2021-12lead" / "E07500.hea")
    return r.lead("II")[0].astype(np.float64), r.fs


def test_clean_leads_pass(dicom_ii, cinc_ii, shared):
    for signal, fs in (dicom_ii, cinc_ii):
        q = check(signal, fs)
        assert q.ok, q.reasons
        assert q.snr > signal_quality.SNR_MIN and q.beats >= 8
    r = read_ecg(shared / "ecg" / "cinc2021-12lead" / "E07500.hea")
    assert all(check(r.signals[i], r.fs, r.leads[i]).ok for i in range(6))  # every limb lead of a clean record


def test_flat_line(dicom_ii):
    signal, fs = dicom_ii
    flat = signal.copy()
    flat[: len(flat) // 2] = flat[0]  # lead off for the first half
    q = check(flat, fs)
    assert not q.ok and q.flat_share >= 0.4
    assert any(r.startswith("flat line") for r in q.reasons), q.reasons


def test_clipping(cinc_ii):
    signal, fs = cinc_ii
    limit = np.percentile(signal, 97)  # a recorder whose range ends below the R peaks
    q = check(np.minimum(signal, limit), fs)
    assert q.clipped_share > signal_quality.CLIP_SHARE
    assert any(r.startswith("clipped") for r in q.reasons), q.reasons
    assert check(signal, fs).clipped_share < signal_quality.CLIP_SHARE


def test_noise(dicom_ii):
    signal, fs = dicom_ii
    rng = np.random.default_rng(0)
    amplitude = np.percentile(np.abs(signal - np.median(signal)), 99)  # about the R amplitude
    white = rng.normal(0, amplitude, len(signal))  # broadband (muscle, electrode) noise
    q = check(signal + white, fs)
    assert q.hf_ratio > signal_quality.HF_MAX and any("power above 40 Hz" in r for r in q.reasons), q.reasons
    in_band = ecg_beats.band_pass(white, fs, 5.0, 40.0)  # noise the model's band-pass keeps
    q = check(signal + 2 * in_band, fs)  # in-band SD about half the R amplitude
    assert q.snr < signal_quality.SNR_MIN and any("QRS-to-noise" in r for r in q.reasons), (q.reasons, q.snr)
    assert check(signal, fs).snr > 3 * signal_quality.SNR_MIN


def test_too_few_beats(cinc_ii):
    signal, fs = cinc_ii
    q = check(signal * 0.0 + np.sin(np.arange(len(signal)) / fs * 2 * np.pi * 0.3), fs)  # only a slow wave
    assert any(r.startswith("too few beats") for r in q.reasons), q.reasons
    short = check(signal[: int(2.5 * fs)], fs)  # 2.5 s: two or three beats
    assert short.beats < signal_quality.MIN_BEATS and any(r.startswith("too few beats") for r in short.reasons)


def test_warning_names_the_lead_and_the_reason(dicom_ii):
    signal, fs = dicom_ii
    flat = signal.copy()
    flat[: len(flat) // 2] = 0
    w = check(flat, fs, lead="aVL").warning()
    assert w.code == "low_signal_quality" and w.message.startswith("lead aVL: flat line")


def test_ranking_puts_passing_leads_first(dicom_ii):
    signal, fs = dicom_ii
    good, bad = check(signal, fs, "II"), check(np.minimum(signal, np.percentile(signal, 97)), fs, "I")
    assert sorted([bad, good], key=signal_quality.rank_key)[0].lead == "II"
