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
    x = np.asarray(signal, np.float64)
    duration = len(x) / fs
    flat = flat_share(x, fs)
    clipped = clipped_share(x, fs) if flat < 1.0 else 0.0
    hf = hf_ratio(x, fs)
    snr = qrs_snr(beats)
    n = len(beats.peaks)
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


def flat_share(x: np.ndarray, fs: float) -> float:
    """Share of whole 1-s segments (at least one) whose peak-to-peak is below FLAT_MV."""
    size = max(int(round(fs)), 1)
    k = max(len(x) // size, 1)
    segments = x[:k * size].reshape(k, -1) if len(x) >= size else x[None, :]
    return float(np.mean(np.ptp(segments, axis=1) < FLAT_MV))


def clipped_share(x: np.ndarray, fs: float) -> float:
    """Share of samples in runs of >= CLIP_RUN_S pinned at the lead's maximum or minimum."""
    lo, hi = float(x.min()), float(x.max())
    tol = CLIP_TOLERANCE * (hi - lo)
    min_run = max(3, int(round(CLIP_RUN_S * fs)))
    total = 0
    for pinned in (x >= hi - tol, x <= lo + tol):
        edges = np.diff(np.concatenate([[0], pinned.astype(np.int8), [0]]))
        runs = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
        total += int(runs[runs >= min_run].sum())
    return total / len(x)


def hf_ratio(x: np.ndarray, fs: float) -> float | None:
    """Power in HF_BAND (mains bands left out) over power in 0.5-40 Hz; None below 90 Hz sampling."""
    top = min(HF_BAND[1], fs / 2)
    if top <= HF_BAND[0] + 5:
        return None
    f = np.fft.rfftfreq(len(x), 1.0 / fs)
    power = np.abs(np.fft.rfft(x - x.mean())) ** 2
    band = (f >= 0.5) & (f <= HF_BAND[0])
    high = (f > HF_BAND[0]) & (f <= top)
    for m in MAINS:
        high &= np.abs(f - m) > 2.0
    return float(power[high].sum() / max(power[band].sum(), 1e-12))


def qrs_snr(beats: ecg_beats.Beats) -> float:
    """Median |R| of the conditioned lead over the robust SD of its 15-40 Hz band outside +-100 ms of each R."""
    x = beats.conditioned
    if x is None or len(beats.peaks) == 0:
        return 0.0
    amplitude = float(np.median(np.abs(x[beats.peaks])))
    outside = np.ones(len(x), bool)
    half = int(round(0.1 * beats.fs))
    for p in beats.peaks:
        outside[max(0, p - half):p + half] = False
    if outside.sum() < beats.fs * 0.5:  # beats everywhere: no quiet stretch to measure noise on
        return 0.0
    high = ecg_beats.band_pass(x, beats.fs, 15.0, min(40.0, beats.fs / 2 * 0.95))[outside]
    noise = 1.4826 * float(np.median(np.abs(high - np.median(high))))
    return amplitude / max(noise, 1e-6)


def rank_key(quality: LeadQuality) -> tuple:
    """Sort key, best lead first: leads that pass every check, then by QRS-to-noise ratio."""
    return (not quality.ok, -quality.snr)
