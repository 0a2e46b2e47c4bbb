"""The named perturbations of the robustness report and the shift check: each changes a study as
read (pixels in [0, 1] or an ECG record in mV), before the engine's own preprocessing, seeded per
perturbation and study so that a rerun gives the same numbers.

Moved here from ``export/robustness.py`` so that the recipes' shift check (models layer) and the
build's robustness report (export layer, above models) share one implementation.
"""
from __future__ import annotations

import io
import zlib
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

DEFAULT_SEED = 0


# ---------------------------------------------------------------- images (float pixels in [0, 1])

def _channels(pixels: np.ndarray, fn) -> np.ndarray:
    """Apply a 2-D ``fn`` to a greyscale image or to each channel of a colour one."""
    if pixels.ndim == 2:
        return fn(pixels)
    return np.stack([fn(pixels[..., c]) for c in range(pixels.shape[-1])], axis=-1)


def gaussian_noise(pixels, rng, sigma=0.03):
    """Additive Gaussian noise, standard deviation ``sigma`` of the display range, clipped."""
    return np.clip(pixels + rng.normal(0.0, sigma, pixels.shape), 0.0, 1.0).astype(np.float32)


def contrast(pixels, rng, factor=0.6):
    """Contrast scaled by ``factor`` around the image's mean (a flat, washed-out exposure)."""
    mean = pixels.mean()
    return np.clip(mean + factor * (pixels - mean), 0.0, 1.0).astype(np.float32)


def gamma(pixels, rng, gamma=1.5):
    """Display gamma: ``pixels ** gamma`` (> 1 darker mid-tones, < 1 brighter)."""
    return np.power(np.clip(pixels, 0.0, 1.0), gamma).astype(np.float32)


def jpeg(pixels, rng, quality=30):
    """Lossy JPEG at ``quality`` (8-bit, Pillow's default 4:2:0 subsampling for colour)."""
    from PIL import Image

    img = Image.fromarray(np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return (np.asarray(Image.open(io.BytesIO(buf.getvalue())), np.float32) / 255.0).astype(np.float32)


def _gauss_kernel(sigma: float) -> np.ndarray:
    radius = max(1, int(np.ceil(3 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def blur(pixels, rng, sigma_fraction=1 / 150):
    """Gaussian blur, sigma = ``sigma_fraction`` of the shorter side (1.5 px on a 224-px image),
    edges reflected."""
    sigma = sigma_fraction * min(pixels.shape[:2])
    k = _gauss_kernel(sigma)
    r = len(k) // 2

    def one(img):
        padded = np.pad(img.astype(np.float64), r, mode="reflect")
        rows = np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 1, padded)
        return np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 0, rows)

    return _channels(pixels, one).astype(np.float32)


def rotate(pixels, rng, degrees=10.0):
    """Rotation by ``degrees`` (counter-clockwise) about the centre, bilinear, same size, corners
    filled with black."""
    from PIL import Image

    return _channels(pixels, lambda p: np.asarray(Image.fromarray(p.astype(np.float32)).rotate(
        degrees, resample=Image.BILINEAR), np.float32)).astype(np.float32)


def resample(pixels, rng, scale=0.5):
    """Down-sampling by ``scale`` (box filter) then back to the original size (bilinear): a study
    stored or sent at lower resolution."""
    from PIL import Image

    h, w = pixels.shape[:2]
    small = (max(1, round(w * scale)), max(1, round(h * scale)))

    def one(p):
        img = Image.fromarray(p.astype(np.float32)).resize(small, Image.BOX)
        return np.asarray(img.resize((w, h), Image.BILINEAR), np.float32)

    return np.clip(_channels(pixels, one), 0.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------- ECG (leads x samples, mV)

def baseline_wander(signals, fs, rng, amplitude_mv=0.5, hz=0.3):
    """Respiratory baseline wander: a ``hz`` sinusoid of ``amplitude_mv`` with a random phase per lead."""
    t = np.arange(signals.shape[1]) / fs
    phase = rng.uniform(0, 2 * np.pi, (signals.shape[0], 1))
    return signals + amplitude_mv * np.sin(2 * np.pi * hz * t + phase)


def mains(signals, fs, rng, amplitude_mv=0.2, hz=50.0):
    """Power-line interference: a ``hz`` sinusoid of ``amplitude_mv`` with a random phase per lead."""
    t = np.arange(signals.shape[1]) / fs
    phase = rng.uniform(0, 2 * np.pi, (signals.shape[0], 1))
    return signals + amplitude_mv * np.sin(2 * np.pi * hz * t + phase)


def muscle_noise(signals, fs, rng, rms_mv=0.1, low_hz=20.0, high_hz=150.0):
    """EMG-like broadband noise: white Gaussian noise band-limited to ``low_hz``-``high_hz`` (or
    Nyquist), scaled to ``rms_mv`` RMS per lead (20 dB below a 1 mV QRS)."""
    n = signals.shape[1]
    spectrum = np.fft.rfft(rng.normal(size=signals.shape), axis=1)
    f = np.fft.rfftfreq(n, 1 / fs)
    spectrum[:, (f < low_hz) | (f > high_hz)] = 0
    noise = np.fft.irfft(spectrum, n, axis=1)
    noise *= rms_mv / np.maximum(noise.std(axis=1, keepdims=True), 1e-12)
    return signals + noise


def amplitude(signals, fs, rng, factor=0.5):
    """Gain error: every lead multiplied by ``factor``."""
    return signals * factor


def invert(signals, fs, rng):
    """Inverted lead (electrodes swapped): every lead negated."""
    return -signals


# ---------------------------------------------------------------- the named table

@dataclass(frozen=True)
class Perturbation:
    """One named perturbation: ``kind`` (image / ecg), its function and stated parameters."""

    name: str
    kind: str
    fn: Callable
    params: dict = field(default_factory=dict)
    description: str = ""  # a few words for tables, the parameters stated
    rotation: float = 0.0  # degrees, when spatial truth (masks, boxes) must turn with the pixels

    def rng(self, item: str, seed: int) -> np.random.Generator:
        """The seeded generator of one study: the same for every rerun and every artifact."""
        return np.random.default_rng([seed, zlib.crc32(self.name.encode()), zlib.crc32(str(item).encode())])

    def apply(self, x, item: str = "", seed: int = DEFAULT_SEED):
        """The perturbed pixels (image) or ECG record (ecg)."""
        if self.kind == "image":
            return self.fn(np.asarray(x, np.float32), self.rng(item, seed), **self.params)
        signals = self.fn(np.asarray(x.signals, np.float64), x.fs, self.rng(item, seed), **self.params)
        return replace(x, signals=signals.astype(np.float32))


IMAGE_PERTURBATIONS = (
    Perturbation("gaussian_noise", "image", gaussian_noise, {"sigma": 0.03},
                 "additive Gaussian noise, sd 0.03 of the range"),
    Perturbation("contrast_x0.6", "image", contrast, {"factor": 0.6}, "contrast x0.6 around the mean"),
    Perturbation("gamma_0.6", "image", gamma, {"gamma": 0.6}, "gamma 0.6 (brighter mid-tones)"),
    Perturbation("gamma_1.5", "image", gamma, {"gamma": 1.5}, "gamma 1.5 (darker mid-tones)"),
    Perturbation("jpeg_q30", "image", jpeg, {"quality": 30}, "JPEG quality 30"),
    Perturbation("blur", "image", blur, {"sigma_fraction": round(1 / 150, 5)},
                 "Gaussian blur, sd = shorter side / 150"),
    Perturbation("rotate_+10", "image", rotate, {"degrees": 10.0}, "rotated 10 deg counter-clockwise", rotation=10.0),
    Perturbation("rotate_-10", "image", rotate, {"degrees": -10.0}, "rotated 10 deg clockwise", rotation=-10.0),
    Perturbation("resample_x0.5", "image", resample, {"scale": 0.5}, "down-sampled x0.5, then back up"),
)
ECG_PERTURBATIONS = (
    Perturbation("baseline_wander", "ecg", baseline_wander, {"amplitude_mv": 0.5, "hz": 0.3},
                 "0.3 Hz baseline wander, 0.5 mV"),
    Perturbation("mains_50hz", "ecg", mains, {"amplitude_mv": 0.2, "hz": 50.0}, "50 Hz mains, 0.2 mV"),
    Perturbation("mains_60hz", "ecg", mains, {"amplitude_mv": 0.2, "hz": 60.0}, "60 Hz mains, 0.2 mV"),
    Perturbation("muscle_noise", "ecg", muscle_noise, {"rms_mv": 0.1, "low_hz": 20.0, "high_hz": 150.0},
                 "EMG-like noise 20-150 Hz, 0.1 mV RMS"),
    Perturbation("amplitude_x0.5", "ecg", amplitude, {"factor": 0.5}, "amplitude x0.5"),
    Perturbation("amplitude_x2", "ecg", amplitude, {"factor": 2.0}, "amplitude x2"),
    Perturbation("inverted_lead", "ecg", invert, {}, "lead inverted (signal negated)"),
)
PERTURBATIONS = {p.name: p for p in IMAGE_PERTURBATIONS + ECG_PERTURBATIONS}


def perturbations_for(study_kind: str) -> tuple:
    return ECG_PERTURBATIONS if study_kind == "ecg" else IMAGE_PERTURBATIONS

