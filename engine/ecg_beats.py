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
BLOCK_SAMPLES = 1 << 16  # leads filtered together: arrays of ~0.5 MB, which the allocator reuses call after call


def condition(signal: np.ndarray, fs: float, spec) -> np.ndarray:
    """Resample to the model's rate and band-pass (removes baseline wander and mains noise).
    ``signal`` is one lead or (leads, samples): each row is filtered on its own."""
    low, high = spec.band
    return band_pass(signal, fs, low, min(high, spec.fs / 2 * 0.95), out_fs=spec.fs).astype(np.float32)


def band_pass(signal: np.ndarray, fs: float, low: float, high: float, out_fs: float | None = None,
              order: int = 2) -> np.ndarray:
    """Zero-phase Butterworth band-pass (``low`` > 0) and resampling to ``out_fs``, in one FFT pass
    along the last axis (so the leads of a record go through together, BLOCK_SAMPLES at a time).

    The squared magnitude of a high-pass and a low-pass of ``order`` is what ``filtfilt`` would
    apply (forward and backward, no phase shift); resampling truncates or zero-pads the spectrum.
    Each end is padded by odd reflection about its local baseline (not its last sample, which
    may sit on a wave), so the high-pass sees no step there and the ends do not drift.
    """
    if np.ndim(signal) == 2:
        blocks = row_blocks(np.shape(signal), int(2 * PAD_SECONDS * fs))
        return np.concatenate([_band_pass(signal[b], fs, low, high, out_fs, order) for b in blocks])
    return _band_pass(signal, fs, low, high, out_fs, order)


def row_blocks(shape: tuple, extra: int = 0) -> list[slice]:
    """The rows of a (rows, samples) array in blocks of about BLOCK_SAMPLES (each row counting
    ``extra`` more, e.g. its padding), so that a block's temporaries stay small."""
    rows = max(1, BLOCK_SAMPLES // (shape[-1] + extra))
    return [slice(i, i + rows) for i in range(0, max(shape[0], 1), rows)]


def _band_pass(signal: np.ndarray, fs: float, low: float, high: float, out_fs: float | None, order: int) -> np.ndarray:
    x = np.asarray(signal, np.float64)
    n = x.shape[-1]
    if n < 2:
        raise InvalidInputError(f"an ECG lead of {n} samples", expected="at least 2 samples")
    ratio = Fraction((out_fs or fs) / fs).limit_denominator(1000)
    up, down = ratio.numerator, ratio.denominator
    pad = down * int(np.ceil(PAD_SECONDS * fs / down))  # whole output samples on each side
    tail = -n % down
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad + tail)], mode="reflect", reflect_type="odd")
    first, last = _levels_at_ends(x, fs)
    padded[..., :pad] += 2 * (first - x[..., :1])
    padded[..., pad + n:] += 2 * (last - x[..., -1:])
    total = padded.shape[-1]
    out_total = total * up // down
    bins = out_total // 2 + 1
    spectrum = np.fft.rfft(padded)[..., :bins]  # resampled: the bins above the output's Nyquist go
    f = np.fft.rfftfreq(total, 1.0 / fs)[:bins]
    with np.errstate(divide="ignore"):
        spectrum *= 1.0 / (1.0 + (low / f) ** (2 * order))  # high-pass, |H|^2 (DC -> 0)
    spectrum *= 1.0 / (1.0 + (f / high) ** (2 * order))  # low-pass, |H|^2
    if bins > spectrum.shape[-1]:  # upsampled: zero bins up to the output's Nyquist
        spectrum = np.pad(spectrum, [(0, 0)] * (x.ndim - 1) + [(0, bins - spectrum.shape[-1])])
    y = np.fft.irfft(spectrum, out_total) * (out_total / total)
    start = pad * up // down
    return y[..., start:start + int(np.ceil(n * up / down))]


def _levels_at_ends(x: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """The baseline at the first and at the last sample of each row (as columns): the median of the
    0.2 s at that end, moved along the slope between it and the median of the 0.2 s next to it.
    Robust to a QRS complex, exact on a ramp."""
    k = max(1, min(int(0.2 * fs), min(int(0.4 * fs), x.shape[-1]) // 2))
    edge, inner, inner_end, edge_end = np.median(
        np.stack([x[..., :k], x[..., k:2 * k], x[..., -2 * k:-k], x[..., -k:]]), axis=-1, keepdims=True)
    return edge + (edge - inner) / k * (k - 1) / 2, edge_end + (edge_end - inner_end) / k * (k - 1) / 2


def _boxcar(x: np.ndarray, size: int) -> np.ndarray:
    """Moving average of ``size`` samples along the last axis, centred, with the ends held (as NeuroKit2 smooths)."""
    size = max(int(size), 1)
    rows = x.shape[:-1]
    padded = np.concatenate([np.repeat(x[..., :1], size, -1), x, np.repeat(x[..., -1:], size, -1)], -1)
    c = np.concatenate([np.zeros(rows + (1,)), np.cumsum(padded, -1)], -1)
    half = size // 2
    idx = np.arange(size, size + x.shape[-1])
    lo, hi = idx - half, idx - half + size
    return (c[..., hi] - c[..., lo]) / size


def detect_r_peaks(x: np.ndarray, fs: float) -> np.ndarray:
    """R peaks of one conditioned lead (see r_peaks)."""
    return r_peaks(np.asarray(x)[None], fs)[0]


def r_peaks(x: np.ndarray, fs: float) -> list[np.ndarray]:
    """R peaks of each row of ``x`` (leads, samples) by the gradient method of NeuroKit2
    (Makowski et al. 2021), in numpy, all rows at once.

    QRS complexes are where the smoothed absolute slope (100 ms) of the 5-15 Hz QRS band (the
    band Pan and Tompkins filter to) exceeds 1.5 x its 750 ms average; complexes shorter than
    0.4 x the lead's mean length are dropped. The peak is the largest deflection inside the complex
    (either polarity), more than 250 ms after the previous one (else the larger of the two).
    """
    x = np.asarray(x, np.float64)
    rows, n = x.shape
    if n < int(fs):
        return [np.zeros(0, np.int64) for _ in range(rows)]
    slope = _boxcar(np.abs(np.gradient(band_pass(x, fs, 5.0, 15.0), axis=-1)), round(0.1 * fs))
    row, begin, end = _complexes(slope > 1.5 * _boxcar(slope, round(0.75 * fs)))
    length = end - begin
    mean = np.bincount(row, length, rows) / np.maximum(np.bincount(row, minlength=rows), 1)
    keep = length >= 0.4 * mean[row]
    row, begin, length = row[keep], begin[keep], length[keep]
    ref = np.abs(x - np.median(x, axis=-1, keepdims=True))
    top = _first_max(ref.ravel(), row * n + begin, length)  # flat index of each complex's peak
    return _merge_close(row, top - row * n, ref.ravel()[top], rows, round(0.25 * fs))


def _complexes(qrs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, begin, end) of each run of True in a row of ``qrs`` that starts and ends inside it
    (``begin`` its first sample, ``end`` the first sample after it)."""
    width = qrs.shape[-1] - 1
    rises, falls = ~qrs[:, :-1] & qrs[:, 1:], qrs[:, :-1] & ~qrs[:, 1:]
    events = np.flatnonzero(rises | falls)  # alternate rise and fall within a row
    rise = rises.ravel()[events]
    pair = rise[:-1] & ~rise[1:] & (events[:-1] // width == events[1:] // width)
    begin, end = events[:-1][pair], events[1:][pair]
    return begin // width, begin % width + 1, end % width + 1


def _first_max(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The index of the first largest value in each segment [start, start + length) (length >= 1)."""
    if len(starts) == 0:
        return np.zeros(0, np.int64)
    offsets = np.cumsum(lengths) - lengths
    index = np.arange(offsets[-1] + lengths[-1]) + np.repeat(starts - offsets, lengths)
    gathered = values[index]
    hits = np.flatnonzero(gathered == np.repeat(np.maximum.reduceat(gathered, offsets), lengths))
    segment = np.repeat(np.arange(len(starts)), lengths)[hits]
    return index[hits[np.r_[True, segment[1:] != segment[:-1]]]]


def _merge_close(row: np.ndarray, peaks: np.ndarray, height: np.ndarray, rows: int, refractory: int) -> list[np.ndarray]:
    """Each row's peaks in order; one within ``refractory`` samples of the previous kept peak
    replaces it if higher, else is dropped."""
    kept: list[list[int]] = [[] for _ in range(rows)]
    best: list[list[float]] = [[] for _ in range(rows)]
    for r, p, h in zip(row.tolist(), peaks.tolist(), height.tolist()):
        if not kept[r] or p - kept[r][-1] > refractory:
            kept[r].append(p)
            best[r].append(h)
        elif h > best[r][-1]:  # two complexes within the refractory period: keep the larger
            kept[r][-1], best[r][-1] = p, h
    return [np.asarray(k, np.int64) for k in kept]


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
    local = _local_cv(prev, 4)
    d = np.diff(rr)
    record = [rr.std() / max(rr.mean(), 1e-3), np.sqrt(np.mean(d ** 2)) / max(rr.mean(), 1e-3),
              np.mean(np.abs(d) > 0.05)] if len(rr) > 2 else [0.0, 0.0, 0.0]
    feats = np.stack([prev / med, nxt / med, (nxt - prev) / med, np.full(n, med), local,
                      *(np.full(n, float(v)) for v in record)], 1)
    return np.concatenate([waves, feats], 1).astype(np.float32)


def _local_cv(values: np.ndarray, half: int) -> np.ndarray:
    """Coefficient of variation of ``values[i - half : i + half + 1]`` (cut at the ends) for every i;
    the mean floored at 1e-3."""
    j = np.arange(len(values))[:, None] + np.arange(-half, half + 1)
    inside = (j >= 0) & (j < len(values))
    window = np.where(inside, values[np.clip(j, 0, len(values) - 1)], 0.0)
    count = inside.sum(1)
    mean = window.sum(1) / count
    std = np.sqrt(np.where(inside, (window - mean[:, None]) ** 2, 0.0).sum(1) / count)
    return std / np.maximum(mean, 1e-3)


def beats_of(signal: np.ndarray, fs: float, spec) -> Beats:
    """One lead's beats and tokens."""
    (x,), (peaks,) = detect(np.asarray(signal)[None], fs, spec)
    return Beats(peaks, beat_tokens(x, peaks, spec), spec.fs, x)


def detect(signals: np.ndarray, fs: float, spec) -> tuple[np.ndarray, list[np.ndarray]]:
    """Every lead of (leads, samples) conditioned at once, and each lead's R peaks (at the model's rate)."""
    x = condition(signals, fs, spec)
    return x, r_peaks(x, spec.fs)


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
