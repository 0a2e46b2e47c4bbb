"""ecg-rhythm on a low-amplitude limb lead of another recorder (issue 26): AF stays AF, sinus stays not-AF.

An external Holter's lead I (200 Hz, median 1st-99th percentile range 0.34 mV) lost 4 in 10 AF
windows with 1.1.0, most of them called "noisy": beats are scaled by their own R height, so the
recorder's fixed noise grows 3-5x relative to the beat. Real records are re-recorded that way
(models/recipes/ecg_shift.py) and run through the built bundle, as a clinic would.
"""
import csv

import numpy as np
import pytest

from medexport.engine import open_bundle
from medexport.engine.io.ecg import read_ecg
from medexport.models.recipes import ecg_shift

HOLTER_LEAD_I = (200.0, 0.34, 0.02)  # Hz, 1st-99th percentile range in mV, noise RMS in mV


@pytest.fixture(scope="module")
def model(ecg_bundle):
    with open_bundle(ecg_bundle) as m:
        yield m


def _labelled(shared, code):
    folder = shared / "ecg" / "cinc2017-af"
    with open(folder / "REFERENCE.csv") as fh:
        return [folder / f"{name}.hea" for name, c in csv.reader(fh) if c == code]


def _as_holter_lead_i(x, fs, seed):
    return ecg_shift.shifted(x, fs, *HOLTER_LEAD_I, np.random.default_rng(seed))


def _predict(model, shifted):
    signal, fs = shifted
    return model.predict(signal, fs=fs)


def test_shifted_copy_has_the_asked_rate_range_and_noise(shared):
    record = read_ecg(shared / "ecg" / "cinc2017-af" / "A00001.hea")
    x = record.signals[0].astype(np.float64)
    before = x.copy()
    clean, rate = ecg_shift.shifted(x, record.fs, 200.0, 0.34, 0.0, np.random.default_rng(0))
    noisy, _ = ecg_shift.shifted(x, record.fs, 200.0, 0.34, 0.02, np.random.default_rng(0))
    assert rate == 200.0 and len(clean) == round(len(x) * 200 / record.fs)
    assert np.percentile(clean, 99) - np.percentile(clean, 1) == pytest.approx(0.34, rel=1e-6)
    assert np.std(noisy - clean) == pytest.approx(0.02, rel=0.05)
    assert np.array_equal(x, before)  # the input is only read


def test_af_on_a_low_amplitude_200hz_lead_is_still_af(model, shared):
    """The 50 CinC 2017 AF records as a Holter's lead I. Bundle of 1.1.0: 36 of 50 called AF, 11 called
    noisy; 1.2.0: 45 and 2 (these are training records, so this checks what training taught, not transfer: see the card's
    shift check for the out-of-fold numbers)."""
    labels = []
    for i, path in enumerate(_labelled(shared, "A")):
        record = read_ecg(path)
        labels.append(_predict(model, _as_holter_lead_i(record.signals[0].astype(np.float64), record.fs, 100 + i)).label)
    assert labels.count("af") >= 43 and labels.count("noisy") <= 4, labels


def test_noisy_records_are_still_called_noisy(model, shared):
    """The augmentation must not teach the model that noise is normal: the 30 noisy CinC 2017 records."""
    labels = [model.predict(str(path)).label for path in _labelled(shared, "~")]
    assert labels.count("noisy") >= 25, labels


def test_low_amplitude_sinus_is_not_called_af(model, shared):
    """Data the model never saw, re-recorded as a Holter's lead I: MIT-BIH 100 (sinus, 30-s windows of
    MLII) and the CinC 2021 records without premature atrial contractions (lead I)."""
    mit = read_ecg(shared / "ecg" / "mitdb" / "100.hea")
    sig, chunk = mit.lead("MLII")[0].astype(np.float64), int(30 * mit.fs)
    called = [_predict(model, _as_holter_lead_i(sig[i:i + chunk], mit.fs, i)).label
              for i in range(0, len(sig) - chunk + 1, chunk)]
    assert len(called) == 60 and called.count("af") == 0, called
    called = []
    for h in sorted((shared / "ecg" / "cinc2021-12lead").glob("*.hea")):
        r = read_ecg(h)
        if "284470004" in next(c for c in r.meta["comments"] if c.startswith("Dx")):
            continue  # PACs: an irregular rhythm the card already names as a limit
        called.append(_predict(model, _as_holter_lead_i(r.lead("I")[0].astype(np.float64), r.fs, 7)).label)
    assert len(called) == 30 and called.count("af") == 0, called
