"""ECG readers on the real files in shared data and pydicom; beats and rhythm statistics."""
import numpy as np
import pytest

from medexport.engine import ecg_beats
from medexport.engine.errors import InvalidInputError
from medexport.engine.io.ecg import normalise_lead, read_ecg
from medexport.engine.manifest import EcgPreprocess


@pytest.fixture(scope="module")
def ecg(shared):
    return shared / "ecg"


def test_cinc2017_header_with_nonstandard_date_reads(ecg):
    """wfdb-python rejects this header's date; the engine's reader keeps it as text and reads on."""
    header = ecg / "cinc2017-af" / "A00001.hea"
    before = header.read_bytes()
    r = read_ecg(header)
    assert (r.kind, r.fs, r.leads, r.signals.shape) == ("wfdb", 300.0, ("ECG",), (1, 9000))
    assert 0.3 < np.percentile(np.abs(r.signals), 99) < 5  # millivolts, gain 1000/mV applied
    assert header.read_bytes() == before


def test_mitdb_with_annotations(ecg):
    r = read_ecg(ecg / "mitdb" / "100.dat")
    assert r.leads == ("MLII", "V5") and r.fs == 360 and r.duration == pytest.approx(1805.6, abs=0.1)
    symbols = [s for _, s in r.annotations]
    assert symbols.count("N") == 2239 and symbols.count("A") == 33 and symbols.count("V") == 1
    assert r.lead()[1] == "MLII"


def test_dicom_waveform_rhythm_group_and_units(pydicom_file):
    import pydicom

    path = pydicom_file("waveform_ecg.dcm")
    r = read_ecg(path)
    assert r.kind == "dicom" and r.fs == 1000 and r.signals.shape == (12, 10000)
    assert r.leads[:6] == ("I", "II", "III", "aVR", "aVL", "aVF") and r.leads[6] == "V1"
    assert "RHYTHM" in r.meta["multiplex_group"].upper()
    ds = pydicom.dcmread(path)
    ch = ds.WaveformSequence[0].ChannelDefinitionSequence[1]
    raw = ds.WaveformSequence[0].WaveformData  # check one sample by hand: (raw * sens * corr + baseline) uV -> mV
    samples = np.frombuffer(raw, dtype=np.int16).reshape(-1, 12)
    expected = (samples[100, 1] * float(ch.ChannelSensitivity) * float(ch.ChannelSensitivityCorrectionFactor)
                + float(ch.ChannelBaseline)) / 1000.0
    assert r.signals[1, 100] == pytest.approx(expected, rel=1e-5)
    # Einthoven: II = I + III
    assert np.abs(r.signals[1] - r.signals[0] - r.signals[2]).mean() < 0.02


def test_aecg(ecg):
    r = read_ecg(ecg / "hl7-aecg" / "example_12lead.xml")
    assert r.kind == "aecg" and r.fs == 500 and r.signals.shape == (12, 5000)
    assert {"I", "II", "V1", "V6"} <= set(r.leads)
    assert 0.2 < np.percentile(np.abs(r.lead("II")[0]), 99) < 5


def test_ptb_and_cinc2021_multilead(ecg):
    r = read_ecg(ecg / "ptbdb" / "s0010_re.hea")
    assert r.fs == 1000 and len(r.leads) == 15 and r.lead()[1] == "ii"
    r = read_ecg(ecg / "cinc2021-12lead" / "E07500.hea")
    assert r.leads[1] == "II" and any(c.startswith("Dx") for c in r.meta["comments"])


def test_csv_round_trip(tmp_path, ecg):
    src = read_ecg(ecg / "hl7-aecg" / "example_12lead.xml")
    path = tmp_path / "ecg.csv"
    rows = "\n".join(",".join(f"{v:.1f}" for v in row) for row in src.signals.T * 1000)
    path.write_text(f"# fs=500\n# units=uV\n{','.join(src.leads)}\n{rows}\n")
    r = read_ecg(path)
    assert r.fs == 500 and r.leads == src.leads
    np.testing.assert_allclose(r.signals, src.signals, atol=1e-3)


def test_bad_inputs_are_clear(tmp_path, pydicom_file, cxr):
    bad = tmp_path / "x.csv"
    bad.write_text("1,2,3\n4,5,6\n")
    with pytest.raises(InvalidInputError, match="no header row"):
        read_ecg(bad)
    bad.write_text("II\n1\n2\n")
    with pytest.raises(InvalidInputError, match="sampling rate"):
        read_ecg(bad)
    with pytest.raises(InvalidInputError, match=r"\(5400,0100\) Waveform Sequence"):
        read_ecg(pydicom_file("CT_small.dcm"))
    with pytest.raises(InvalidInputError, match="not a known ECG format"):
        read_ecg(cxr[0])
    with pytest.raises(InvalidInputError, match="needs its sampling rate"):
        read_ecg(np.zeros(1000))
    with pytest.raises(InvalidInputError, match="has no lead 'V9'"):
        read_ecg(pydicom_file("waveform_ecg.dcm")).lead("V9")
    xml = tmp_path / "broken.xml"
    xml.write_text("<AnnotatedECG><oops")
    with pytest.raises(InvalidInputError, match="not well-formed"):
        read_ecg(xml)


def test_beats_match_mitdb_reference_annotations(ecg):
    """Detected beats on MIT-BIH 100 (first 5 min) against the cardiologists' beat annotations."""
    r = read_ecg(ecg / "mitdb" / "100.hea")
    n = int(300 * r.fs)
    spec = EcgPreprocess()
    beats = ecg_beats.beats_of(r.signals[0, :n], r.fs, spec)
    found = beats.peaks * r.fs / spec.fs
    truth = np.array([s for s, sym in r.annotations if sym in "NAVLR" and s < n - int(r.fs)])
    near = np.abs(found[None, :] - truth[:, None]).min(1) <= 0.1 * r.fs
    assert near.mean() > 0.99 and abs(len(found) - len(truth)) <= 3
    stats = ecg_beats.rhythm_stats(beats.peaks, spec.fs)
    assert 65 < stats["heart_rate_bpm"] < 85 and stats["rr_cv"] < 0.15


def test_windows_cover_every_beat():
    spec = EcgPreprocess()
    tokens = np.random.default_rng(0).normal(size=(70, 168)).astype(np.float32)
    wins, index = ecg_beats.windows(tokens, spec)
    assert wins.shape == (4, 32, 169) and set(np.concatenate(index)) == set(range(70))
    short, idx = ecg_beats.windows(tokens[:10], spec)
    assert short.shape == (1, 32, 169) and short[0, :10, -1].all() and not short[0, 10:, -1].any()


def test_lead_names_normalised():
    assert [normalise_lead(x) for x in ("Lead I (Einthoven)", "avr", "MDC_ECG_LEAD_V1", "ii")] == ["I", "aVR", "V1", "II"]


def test_band_pass_is_zero_phase_and_resamples():
    """A 10 Hz tone passes unshifted through 360 -> 250 Hz; drift and 60 Hz mains are cut."""
    fs, spec = 360.0, EcgPreprocess()
    t = np.arange(int(20 * fs)) / fs
    tone = ecg_beats.condition(np.sin(2 * np.pi * 10 * t), fs, spec)
    assert len(tone) == int(np.ceil(len(t) * spec.fs / fs))
    error = np.abs(tone - np.sin(2 * np.pi * 10 * np.arange(len(tone)) / spec.fs))
    assert error[250:-250].max() < 0.03  # gain ~0.99, no phase shift
    assert error.max() < 0.15  # the ends too: padding pivots on the local baseline (scipy filtfilt: 0.8 here)
    assert np.abs(ecg_beats.condition(2.0 * np.sin(2 * np.pi * 0.05 * t), fs, spec)).max() < 0.01
    mains = ecg_beats.condition(np.sin(2 * np.pi * 60 * t), fs, spec)
    assert np.abs(mains[250:-250]).max() < 0.2  # 2nd-order Butterworth at 40 Hz, squared: 0.165 at 60 Hz


def test_band_pass_agrees_with_scipy_butterworth_filtfilt(shared):
    """Same family of filter as scipy's 2nd-order Butterworth band-pass run forward and backward."""
    signal = pytest.importorskip("scipy.signal")
    r = read_ecg(shared / "ecg" / "cinc2021-12lead" / "E07500.hea")
    x = r.lead("II")[0].astype(np.float64)
    mine = ecg_beats.band_pass(x, r.fs, 0.5, 40.0)
    sos = signal.butter(2, [0.5, 40.0], btype="bandpass", fs=r.fs, output="sos")
    theirs = signal.sosfiltfilt(sos, x)
    assert np.corrcoef(mine, theirs)[0, 1] > 0.99


@pytest.mark.parametrize("lead", [0, 1])
def test_detector_on_the_whole_mitdb_record(ecg, lead):
    """All 30 minutes, both leads (MLII, V5): sensitivity and positive predictivity within 150 ms."""
    r = read_ecg(ecg / "mitdb" / "100.hea")
    spec = EcgPreprocess()
    peaks = ecg_beats.beats_of(r.signals[lead], r.fs, spec).peaks * r.fs / spec.fs
    truth = np.array([s for s, sym in r.annotations if sym in "NAVLRJaSEFj/fQ"])
    gap = np.abs(peaks[None, :] - truth[:, None])
    sensitivity = (gap.min(1) <= 0.15 * r.fs).mean()
    ppv = (gap.min(0) <= 0.15 * r.fs).mean()
    assert sensitivity > 0.998 and ppv > 0.998, (sensitivity, ppv)
