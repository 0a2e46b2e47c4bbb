"""Signal quality of one ECG lead: flat line, clipping, noise, too few beats (numpy only).

The ECG counterpart of an out-of-distribution flag: a lead that fails a check gets the result
warning ``low_signal_quality`` naming the lead and the reason, and the default lead choice
(engine/tasks/ecg_rhythm.py) prefers leads that pass. Each check has one stated threshold,
set on real records (CinC 2021 limb leads, CinC 2017 records labelled noisy; see docs/ecg-leads.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import ecg_beats
from .cautions import ResultWarning

FLAT_MV = 0.02  # a 1-s segment whose peak-to-peak is below 20 µV is flat (lead off, no signal)
FLAT_SHARE = 0.2  # ... flagged when more than 20 % of the 1-s segments are flat
CLIP_RUN_S = 0.02  # saturation: runs of >= 20 ms (and >= 3 samples) pinned at the lead's max or min
CLIP_TOLERANCE = 0.002  # "at" the extreme: within 0.2 % of the lead's range
CLIP_SHARE = 0.01  # ... flagged when more than 1 % of the samples are in such runs
HF_BAND = (40.0, 150.0)  # high-frequency noise band (Hz), mains and its harmonics +-2 Hz left out
HF_MAX = 0.5  # ... flagged when its power exceeds 0.5 x the ECG band's (0.5-40 Hz); CinC 2021 limb leads <= 0.42
SNR_MIN = 10.0  # QRS-to-noise: median R amplitude / robust SD of the 15-40 Hz band between QRS complexes
MIN_RATE_BPM = 20.0  # too few beats: fewer than 20 per minute of record (or fewer than MIN_BEATS)
MIN_BEATS = 4
MAINS = (50.0, 60.0, 100.0, 120.0, 150.0)


@dataclass(frozen=True)
class LeadQuality:
    """The measured quality of one lead and, when it fails a check, why."""

    lead: str
    snr: float  # QRS-to-noise ratio (higher is better): ranks the leads that pass
    beats: int
    flat_share: float
    clipped_share: float
    hf_ratio: float | None  # None when the sampling rate leaves no band above 40 Hz
    reasons: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.reasons

    def warning(self) -> ResultWarning:
        return ResultWarning("low_signal_quality", f"lead {self.lead}: {'; '.join(self.reasons)}")

    def to_dict(self) -> dict:
        return {"lead": self.lead, "ok": self.ok, "reasons": list(self.reasons), "snr": round(self.snr, 1),
                "beats": self.beats, "flat_share": round(self.flat_share, 3),
                "clipped_share": round(self.clipped_share, 4),
                "hf_ratio": None if self.hf_ratio is None else round(self.hf_ratio, 3)}


def assess(signal: np.ndarray, fs: float, lead: str, beats: ecg_beats.Beats) -> LeadQuality:
    """Check one lead (raw, in mV, at ``fs``) given its detected ``beats`` (ecg_beats.beats_of)."""
    conditioned = None if beats.conditioned is None else beats.conditioned[None]
    return assess_leads(np.asarray(signal)[None], fs, (lead,), conditioned, [beats.peaks], beats.fs)[0]


def assess_leads(signals: np.ndarray, fs: float, names, conditioned: np.ndarray | None,
                 peaks: list[np.ndarray], model_fs: float) -> list[LeadQuality]:
    """Check every lead of ``signals`` (leads, samples; raw, in mV, at ``fs``) given each one's
    conditioned signal and R peaks at ``model_fs`` (ecg_beats.detect); the checks run on all leads at once."""
    flat, clipped, hf = (np.concatenate(c) for c in zip(*(_signal_checks(np.asarray(signals[rows], np.float64), fs)
                                                             for rows in ecg_beats.row_blocks(np.shape(signals)))))
    snr = qrs_snr(conditioned, peaks, model_fs)
    duration = np.shape(signals)[-1] / fs
    return [_verdict(name, float(snr[i]), len(peaks[i]), float(flat[i]), float(clipped[i]),
                     None if np.isnan(hf[i]) else float(hf[i]), duration) for i, name in enumerate(names)]


def _signal_checks(x: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat share, clipped share and HF ratio (NaN where it does not apply) of each row of ``x``."""
    flat = flat_share(x, fs)
    hf = hf_ratio(x, fs)
    return flat, np.where(flat < 1.0, clipped_share(x, fs), 0.0), np.full(len(x), np.nan) if hf is None else hf


def _verdict(lead: str, snr: float, n: int, flat: float, clipped: float, hf: float | None,
             duration: float) -> LeadQuality:
    reasons = []
    if flat > FLAT_SHARE:
        reasons.append(f"flat line in {flat:.0%} of the record (peak-to-peak < {FLAT_MV * 1000:.0f} µV per second)")
    if clipped > CLIP_SHARE:
        reasons.append(f"clipped: {clipped:.1%} of samples pinned at the recorder's limit (over {CLIP_SHARE:.0%} allowed)")
    if hf is not None and hf > HF_MAX:
        reasons.append(f"noisy: power above 40 Hz is {hf:.2f} x the ECG band's (over {HF_MAX})")
    if n >= 2 and snr < SNR_MIN:
        reasons.append(f"noisy: QRS-to-noise ratio {snr:.1f} (under {SNR_MIN:.0f})")
    if n < max(MIN_BEATS, MIN_RATE_BPM * duration / 60):
        expected = max(MIN_BEATS, int(np.ceil(MIN_RATE_BPM * duration / 60)))
        reasons.append(f"too few beats: {n} in {duration:.1f} s (at least {expected} expected)")
    return LeadQuality(lead, snr, n, flat, clipped, hf, tuple(reasons))


def flat_share(x: np.ndarray, fs: float) -> np.ndarray:
    """Per lead (last axis): share of whole 1-s segments (at least one) whose peak-to-peak is below FLAT_MV."""
    size = max(int(round(fs)), 1)
    n = x.shape[-1]
    k = max(n // size, 1)
    segments = x[..., :k * size].reshape(x.shape[:-1] + (k, -1)) if n >= size else x[..., None, :]
    return np.mean(np.ptp(segments, axis=-1) < FLAT_MV, axis=-1)


def clipped_share(x: np.ndarray, fs: float) -> np.ndarray:
    """Per row of (leads, samples): share of samples in runs of >= CLIP_RUN_S pinned at the lead's maximum or minimum."""
    lo, hi = x.min(-1, keepdims=True), x.max(-1, keepdims=True)
    tol = CLIP_TOLERANCE * (hi - lo)
    min_run = max(3, int(round(CLIP_RUN_S * fs)))
    total = np.zeros(len(x))
    framed = np.zeros((len(x), x.shape[-1] + 2), bool)  # each row between two unpinned samples
    for pinned in (x >= hi - tol, x <= lo + tol):
        framed[:, 1:-1] = pinned
        edges = np.flatnonzero(framed[:, 1:] != framed[:, :-1])  # row by row: a run's start, then its end
        starts, runs = edges[0::2], edges[1::2] - edges[0::2]
        total += np.bincount(starts // (x.shape[-1] + 1), weights=np.where(runs >= min_run, runs, 0), minlength=len(x))
    return total / x.shape[-1]


def hf_ratio(x: np.ndarray, fs: float) -> np.ndarray | None:
    """Per lead (last axis): power in HF_BAND (mains bands left out) over power in 0.5-40 Hz; None below 90 Hz sampling."""
    top = min(HF_BAND[1], fs / 2)
    if top <= HF_BAND[0] + 5:
        return None
    f = np.fft.rfftfreq(x.shape[-1], 1.0 / fs)
    power = np.abs(np.fft.rfft(x - x.mean(-1, keepdims=True))) ** 2
    band = (f >= 0.5) & (f <= HF_BAND[0])
    high = (f > HF_BAND[0]) & (f <= top)
    for m in MAINS:
        high &= np.abs(f - m) > 2.0
    return power[..., high].sum(-1) / np.maximum(power[..., band].sum(-1), 1e-12)


def qrs_snr(conditioned: np.ndarray | None, peaks: list[np.ndarray], fs: float) -> np.ndarray:
    """Per lead: median |R| of the conditioned lead (rows of ``conditioned``, at ``fs``) over the robust SD
    of its 15-40 Hz band outside +-100 ms of each R; 0 without peaks or without a quiet stretch."""
    snr = np.zeros(len(peaks))
    counts = np.array([len(p) for p in peaks])
    if conditioned is None or not counts.any():
        return snr
    n, half = conditioned.shape[-1], int(round(0.1 * fs))
    row, at = np.repeat(np.arange(len(peaks)), counts), np.concatenate(peaks)
    edges = np.bincount(row * (n + 1) + np.maximum(at - half, 0), minlength=len(peaks) * (n + 1))
    edges -= np.bincount(row * (n + 1) + np.minimum(at + half, n), minlength=len(peaks) * (n + 1))
    outside = np.cumsum(edges.reshape(len(peaks), n + 1), axis=1)[:, :n] == 0
    quiet = (counts > 0) & (outside.sum(1) >= fs * 0.5)  # else beats everywhere: no stretch to measure noise on
    if not quiet.any():
        return snr
    r_values = np.zeros((quiet.sum(), counts.max()), conditioned.dtype)
    r_mask = np.arange(counts.max()) < counts[quiet][:, None]
    r_values[r_mask] = np.abs(conditioned[row, at])[quiet[row]]
    high = ecg_beats.band_pass(conditioned[quiet], fs, 15.0, min(40.0, fs / 2 * 0.95))
    centre = _masked_median(high, outside[quiet])
    noise = 1.4826 * _masked_median(np.abs(high - centre[:, None]), outside[quiet])
    snr[quiet] = _masked_median(r_values, r_mask) / np.maximum(noise, 1e-6)
    return snr


def _masked_median(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """np.median of each row's masked values (at least one per row), in the values' precision."""
    count = mask.sum(1)
    ordered = np.sort(np.where(mask, values, np.inf), axis=1)
    lines = np.arange(len(values))
    return (ordered[lines, (count - 1) // 2] + ordered[lines, count // 2]) / values.dtype.type(2)


def rank_key(quality: LeadQuality) -> tuple:
    """Sort key, best lead first: leads that pass every check, then by QRS-to-noise ratio."""
    return (not quality.ok, -quality.snr)
