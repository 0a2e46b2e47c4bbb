"""Acquisition shift for ``ecg-rhythm``: the recorder traits a new site changes, for training and for the check.

The model sees beats scaled by their own R height, so what a low-amplitude limb lead (an external
Holter's lead I: median 1st-99th percentile range 0.34 mV, against 0.96 mV on lead II) changes is
the recorder's fixed noise *relative to the beat*, and a lower sampling rate changes the beat shape.
``shifted`` recreates a record as such a recorder would have taken it: resampled (linear
interpolation), rescaled to a 1st-99th percentile range in mV, plus white noise of a fixed RMS in mV.
Training copies draw these traits at random; the check's conditions are fixed and seeded per record.
"""
from __future__ import annotations

import numpy as np

from medexport.engine import ecg_beats
from medexport.engine.compare import wilson_ci

TRAIN_RATES = (200.0, 250.0, 360.0)  # Hz: Holter, the engine's own rate, MIT-BIH
TRAIN_RANGE_MV = (0.25, 1.0)  # 1st-99th percentile range
TRAIN_NOISE_MV = (0.0, 0.04)  # RMS of the added recorder noise
COPIES = 3  # shifted copies per record, drawn once (preprocessing is the slow part)
KEEP_ORIGINAL = 0.4  # share of training draws that use the record as recorded
CONDITIONS = {  # name: (rate Hz, 1st-99th percentile range mV, noise RMS mV)
    "as recorded": None,
    "200 Hz, 0.34 mV, 20 µV noise": (200.0, 0.34, 0.02),
    "360 Hz, 0.34 mV, 20 µV noise": (360.0, 0.34, 0.02),
    "200 Hz, 0.34 mV, 40 µV noise": (200.0, 0.34, 0.04),
}


def resample(x: np.ndarray, fs: float, out_fs: float) -> np.ndarray:
    n = int(round(len(x) * out_fs / fs))
    return np.interp(np.arange(n) / out_fs, np.arange(len(x)) / fs, x)


def shifted(x: np.ndarray, fs: float, rate: float, range_mv: float, noise_mv: float,
            rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """``x`` (mV at ``fs``) as a recorder at ``rate`` Hz on a lead of ``range_mv`` with ``noise_mv`` RMS noise."""
    y = resample(np.asarray(x, np.float64), fs, rate) if rate != fs else np.asarray(x, np.float64)
    y = y * (range_mv / max(float(np.percentile(y, 99) - np.percentile(y, 1)), 1e-6))
    return y + rng.normal(0.0, noise_mv, len(y)), rate


def training_copies(x: np.ndarray, fs: float, spec, rng: np.random.Generator) -> list[np.ndarray]:
    """Beat tokens of ``COPIES`` shifted copies of one record (random rate, range and noise)."""
    return [ecg_beats.beats_of(*shifted(x, fs, float(rng.choice(TRAIN_RATES)), rng.uniform(*TRAIN_RANGE_MV),
                                         rng.uniform(*TRAIN_NOISE_MV), rng), spec).tokens for _ in range(COPIES)]


def condition_tokens(signals: list[tuple[np.ndarray, float]], spec) -> dict[str, list[np.ndarray]]:
    """Beat tokens of every record under every check condition (noise seeded by record index)."""
    out = {}
    for name, traits in CONDITIONS.items():
        out[name] = [ecg_beats.beats_of(*((x, fs) if traits is None else
                                          shifted(x, fs, *traits, np.random.default_rng(100 + i))), spec).tokens
                     for i, (x, fs) in enumerate(signals)]
    return out


def proportion(k: int, n: int) -> dict:
    lo, hi = wilson_ci(int(k), int(n))
    return {"k": int(k), "n": int(n), "value": round(k / n, 4) if n else None, "ci95": [round(lo, 4), round(hi, 4)]}


def af_rates(labels: np.ndarray, pred: np.ndarray, af: int = 1, noisy: int = 3) -> dict:
    """AF sensitivity and specificity, noisy recall (Wilson CIs) and AF records called noisy."""
    is_af, is_noisy = labels == af, labels == noisy
    return {"af_sensitivity": proportion(np.sum(pred[is_af] == af), is_af.sum()),
            "af_specificity": proportion(np.sum(pred[~is_af] != af), (~is_af).sum()),
            "noisy_recall": proportion(np.sum(pred[is_noisy] == noisy), is_noisy.sum()),
            "af_called_noisy": int(np.sum(pred[is_af] == noisy))}


def _cell(m: dict) -> str:
    lo, hi = m["ci95"]
    frac = f" ({m['k']}/{m['n']})" if "k" in m else ""
    return f"{m['value']:.3f} ({lo:.3f}-{hi:.3f}){frac}"


def markdown(rows: dict) -> str:
    """The card's table: each condition's CinC F1 and AF rates (95 % CI) side by side, and the gap."""
    base = rows["as recorded"]["f1"]["cinc"]["value"]
    lines = ["| condition | CinC F1 (gap) | AF sensitivity | AF specificity | noisy recall | AF called noisy |",
             "|---|---|---|---|---|---|"]
    for name in [k for k in CONDITIONS if k in rows]:
        m = rows[name]
        gap = m["f1"]["cinc"]["value"] - base
        lines.append(f"| {name} | {_cell(m['f1']['cinc'])}" + (f" ({gap:+.3f})" if name != "as recorded" else "") +
                     " | " + " | ".join(_cell(m[k]) for k in ("af_sensitivity", "af_specificity", "noisy_recall")) +
                     f" | {m['af_called_noisy']} |")
    return "\n".join(lines)
