"""ECG conditioning, beat detection and beat tokens: the ECG model's preprocessing.

A record becomes a sequence of beats, each a short normalised waveform around its R peak
plus RR-interval features (the beat's own, and the record's irregularity: CV, normalised
RMSSD, share of successive differences over 50 ms). RR intervals are device-agnostic (atrial fibrillation is an
irregularly irregular rhythm), so the recurrent part sees the beat sequence, not raw samples.
Numpy only: the clinic app ships without scipy or wfdb.
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
    conditioned: np.ndarray | None = None  # the band-passed lead at the model's rate (signal quality reads it)


DETECTOR = "medexport.gradient/1"  # the R-peak detector below; bundles name the one they were trained with
PAD_SECONDS = 2.0  # padding at each end, so the band edges do not ring into the record


def condition(signal: np.ndarray, fs: float, spec) -> np.ndarray:
    """Resample to the model's rate and band-pass (removes baseline wander and mains noise)."""
    low, high = spec.band
    return band_pass(signal, fs, low, min(high, spec.fs / 2 * 0.95), out_fs=spec.fs).astype(np.float32)


def band_pass(signal: np.ndarray, fs: float, low: float, high: float, out_fs: float | None = None,
              order: int = 2) -> np.ndarray:
    """Zero-phase Butterworth band-pass (``low`` > 0) and resampling to ``out_fs``, in one FFT pass.

    The squared magnitude of a high-pass and a low-pass of ``order`` is what ``filtfilt`` would
    apply (forward and backward, no phase shift); resampling truncates or zero-pads the spectrum.
    Each end is padded by odd reflection about its local baseline (not its last sample, which
    may sit on a wave), so the high-pass sees no step there and the ends do not drift.
    """
    x = np.asarray(signal, np.float64)
    n = len(x)
    if n < 2:
        raise InvalidInputError(f"an ECG lead of {n} samples", expected="at least 2 samples")
    ratio = Fraction((out_fs or fs) / fs).limit_denominator(1000)
    up, down = ratio.numerator, ratio.denominator
    pad = down * int(np.ceil(PAD_SECONDS * fs / down))  # whole output samples on each side
    tail = -n % down
    padded = np.pad(x, (pad, pad + tail), mode="reflect", reflect_type="odd")
    padded[:pad] += 2 * (_level_at_end(x[:int(0.4 * fs)][::-1], fs) - x[0])
    padded[pad + n:] += 2 * (_level_at_end(x[-int(0.4 * fs):], fs) - x[-1])
    total = len(padded)
    out_total = total * up // down
    spectrum = np.fft.rfft(padded)
    f = np.fft.rfftfreq(total, 1.0 / fs)
    with np.errstate(divide="ignore"):
        spectrum *= 1.0 / (1.0 + (low / f) ** (2 * order))  # high-pass, |H|^2 (DC -> 0)
    spectrum *= 1.0 / (1.0 + (f / high) ** (2 * order))  # low-pass, |H|^2
    bins = out_total // 2 + 1
    spectrum = spectrum[:bins] if bins <= len(spectrum) else np.pad(spectrum, (0, bins - len(spectrum)))
    y = np.fft.irfft(spectrum, out_total) * (out_total / total)
    start = pad * up // down
    return y[start:start + int(np.ceil(n * up / down))]


def _level_at_end(tail: np.ndarray, fs: float) -> float:
    """The baseline at the last sample of ``tail``: the median of its last 0.2 s, moved along the
    slope between that and the median of the 0.2 s before. Robust to a QRS complex, exact on a ramp."""
    k = max(1, min(int(0.2 * fs), len(tail) // 2))
    last, before = np.median(tail[-k:]), np.median(tail[-2 * k:-k])
    return float(last + (last - before) / k * (k - 1) / 2)


def _boxcar(x: np.ndarray, size: int) -> np.ndarray:
    """Moving average of ``size`` samples, centred, with the ends held (as NeuroKit2 smooths)."""
    size = max(int(size), 1)
    padded = np.concatenate([np.full(size, x[0]), x, np.full(size, x[-1])])
    c = np.concatenate([[0.0], np.cumsum(padded)])
    half = size // 2
    idx = np.arange(size, size + len(x))
    lo, hi = idx - half, idx - half + size
    return (c[hi] - c[lo]) / size


def detect_r_peaks(x: np.ndarray, fs: float) -> np.ndarray:
    """R peaks by the gradient method of NeuroKit2 (Makowski et al. 2021), in numpy.

    QRS complexes are where the smoothed absolute slope (100 ms) of the 5-15 Hz QRS band (the
    band Pan and Tompkins filter to) exceeds 1.5 x its 750 ms average; complexes shorter than
    0.4 x the mean length are dropped. The peak is the largest deflection inside the complex
    (either polarity), more than 250 ms after the previous one (else the larger of the two).
    """
    x = np.asarray(x, np.float64)
    if len(x) < int(fs):
        return np.zeros(0, np.int64)
    slope = _boxcar(np.abs(np.gradient(band_pass(x, fs, 5.0, 15.0))), round(0.1 * fs))
    qrs = slope > 1.5 * _boxcar(slope, round(0.75 * fs))
    begins = np.flatnonzero(~qrs[:-1] & qrs[1:]) + 1
    if len(begins) == 0:
        return np.zeros(0, np.int64)
    ends = np.flatnonzero(qrs[:-1] & ~qrs[1:]) + 1
    ends = ends[ends > begins[0]]
    k = min(len(begins), len(ends))
    begins, ends = begins[:k], ends[:k]
    keep = (ends - begins) >= 0.4 * np.mean(ends - begins) if k else np.zeros(0, bool)
    ref = np.abs(x - np.median(x))
    refractory = round(0.25 * fs)
    peaks: list[int] = []
    for b, e in zip(begins[keep], ends[keep]):
        p = int(b + np.argmax(ref[b:e]))
        if not peaks or p - peaks[-1] > refractory:
            peaks.append(p)
        elif ref[p] > ref[peaks[-1]]:  # two complexes within the refractory period: keep the larger
            peaks[-1] = p
    return np.asarray(peaks, np.int64)


def beat_tokens(x: np.ndarray, peaks: np.ndarray, spec) -> np.ndarray:
    """One row per beat: the normalised waveform around R, then the RR features.

    Every lead looks alike to the model: the waveform is divided by the median |R| (amplitude, so a
    0.2-mV lead I reads like a 1.5-mV lead II) and multiplied by the sign of the median R deflection
    (polarity, so aVR's negative QRS reads upright). RR features do not depend on the lead at all.
    """
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
    return Beats(peaks, beat_tokens(x, peaks, spec), spec.fs, x)


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
