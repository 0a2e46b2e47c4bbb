"""ECG conditioning, beat detection and beat tokens: the ECG model's preprocessing.

A record becomes a sequence of beats, each a short normalised waveform around its R peak
plus RR-interval features (the beat's own, and the record's irregularity: CV, normalised
RMSSD, share of successive differences over 50 ms). RR intervals are device-agnostic (atrial fibrillation is an
irregularly irregular rhythm), so the recurrent part sees the beat sequence, not raw samples.
Uses scipy (filters, resampling) and wfdb's XQRS detector, both imported lazily.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .errors import InvalidInputError

RR_FEATURES = ("rr_prev_norm", "rr_next_norm", "rr_delta_norm", "rr_median_s", "rr_local_cv",
               "record_rr_cv", "record_rmssd_norm", "record_pnn50")


@dataclass(frozen=True)
class Beats:
    """Detected beats of one lead on the model's time base, plus their tokens."""

    peaks: np.ndarray  # sample indices at the model's rate
    tokens: np.ndarray  # (n_beats, beat_samples + len(RR_FEATURES)) float32
    fs: float


def condition(signal: np.ndarray, fs: float, spec) -> np.ndarray:
    """Resample to the model's rate and band-pass (removes baseline wander and mains noise)."""
    from scipy.signal import butter, resample_poly, sosfiltfilt

    x = np.asarray(signal, np.float64)
    if fs != spec.fs:
        ratio = Fraction(spec.fs / fs).limit_denominator(1000)
        x = resample_poly(x, ratio.numerator, ratio.denominator)
    low, high = spec.band
    sos = butter(2, [low, min(high, spec.fs / 2 * 0.95)], btype="bandpass", fs=spec.fs, output="sos")
    return sosfiltfilt(sos, x).astype(np.float32)


def detect_r_peaks(x: np.ndarray, fs: float) -> np.ndarray:
    """R peaks with wfdb's XQRS, refined to the largest deflection within ±60 ms."""
    try:
        from wfdb.processing import xqrs_detect
    except ImportError:
        raise InvalidInputError("ECG beat detection needs the wfdb package", fix="pip install 'medexport[ecg]'") from None
    import logging

    logging.getLogger("wfdb").setLevel(logging.ERROR)
    qrs = np.asarray(xqrs_detect(sig=x.astype(np.float64), fs=fs, verbose=False), np.int64)
    if len(qrs) == 0:
        return qrs
    half = int(0.06 * fs)
    ref = np.abs(x - np.median(x))
    refined = [max(0, q - half) + int(np.argmax(ref[max(0, q - half):q + half + 1])) for q in qrs]
    return np.unique(np.asarray(refined, np.int64))


def beat_tokens(x: np.ndarray, peaks: np.ndarray, spec) -> np.ndarray:
    """One row per beat: the normalised waveform around R, then the RR features."""
    pre, post = int(round(-spec.beat_window[0] * spec.fs)), int(round(spec.beat_window[1] * spec.fs))
    length = pre + post
    n = len(peaks)
    if n == 0:
        return np.zeros((0, length + len(RR_FEATURES)), np.float32)
    amp = np.median(x[peaks])
    polarity = -1.0 if amp < 0 else 1.0  # dominant deflection up, whatever the lead
    scale = max(float(np.median(np.abs(x[peaks]))), 0.05)
    padded = np.pad(x * (polarity / scale), (pre, post))
    idx = peaks[:, None] + np.arange(length)[None, :]  # window [p - pre, p + post) in padded coordinates
    waves = padded[idx]
    rr = np.diff(peaks) / spec.fs
    med = float(np.median(rr)) if len(rr) else 1.0
    prev = np.concatenate([[rr[0] if len(rr) else med], rr])
    nxt = np.concatenate([rr, [rr[-1] if len(rr) else med]])
    local = np.array([np.std(prev[max(0, i - 4):i + 5]) / max(np.mean(prev[max(0, i - 4):i + 5]), 1e-3)
                      for i in range(n)])
    d = np.diff(rr)
    record = [rr.std() / max(rr.mean(), 1e-3), np.sqrt(np.mean(d ** 2)) / max(rr.mean(), 1e-3),
              np.mean(np.abs(d) > 0.05)] if len(rr) > 2 else [0.0, 0.0, 0.0]
    feats = np.stack([prev / med, nxt / med, (nxt - prev) / med, np.full(n, med), local,
                      *(np.full(n, float(v)) for v in record)], 1)
    return np.concatenate([waves, feats], 1).astype(np.float32)


def beats_of(signal: np.ndarray, fs: float, spec) -> Beats:
    x = condition(signal, fs, spec)
    peaks = detect_r_peaks(x, spec.fs)
    return Beats(peaks, beat_tokens(x, peaks, spec), spec.fs)


def windows(tokens: np.ndarray, spec) -> tuple[np.ndarray, list[np.ndarray]]:
    """Cut the beat sequence into windows of ``spec.beats`` (stride ``spec.stride``), the last one
    aligned to the end; pad short ones. Returns (W, beats, D + 1 mask) and each window's beat indices."""
    n, width = tokens.shape
    t = spec.beats
    starts = [0] if n <= t else sorted(set(list(range(0, n - t + 1, spec.stride)) + [n - t]))
    out = np.zeros((len(starts), t, width + 1), np.float32)
    index = []
    for w, s in enumerate(starts):
        k = min(t, n - s)
        out[w, :k, :width] = tokens[s:s + k]
        out[w, :k, width] = 1.0
        index.append(np.arange(s, s + k))
    return out, index


def rhythm_stats(peaks: np.ndarray, fs: float) -> dict:
    """Heart rate and RR irregularity (CV, normalised RMSSD, pNN50) for the result and the viewer."""
    rr = np.diff(peaks) / fs
    if len(rr) < 2:
        return {"heart_rate_bpm": None, "rr_cv": None, "rmssd_norm": None, "pnn50": None, "n_beats": int(len(peaks))}
    d = np.diff(rr)
    return {"heart_rate_bpm": round(60.0 / float(np.median(rr)), 1), "rr_cv": round(float(rr.std() / rr.mean()), 4),
            "rmssd_norm": round(float(np.sqrt(np.mean(d ** 2)) / rr.mean()), 4),
            "pnn50": round(float(np.mean(np.abs(d) > 0.05)), 4), "n_beats": int(len(peaks))}
