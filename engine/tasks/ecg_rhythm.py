"""ECG rhythm: lead(s) -> beat windows -> CNN+BiLSTM -> rhythm class, beats, saliency.

Which lead decides: with ``lead=`` that lead alone (a warning if its quality is low). Without it,
every lead of the record is checked (engine/signal_quality.py: flat line, clipping, noise, too few
beats) and the model runs on the best ``COMBINE`` leads that pass, in one batch; the record's
scores are the beat-weighted mean over all their windows (each lead counts by its beats, and
their beat counts agree within ``BEAT_AGREEMENT``: close to the plain mean of the leads' scores). A lead whose beat count disagrees with the best
lead's by more than ``BEAT_AGREEMENT`` (missed or extra beats) is left out. When no lead passes,
the best one decides and the result carries ``low_signal_quality``. Amplitude and polarity are
normalised per lead before the model (engine/ecg_beats.beat_tokens), so a low-amplitude lead I
or an inverted aVR reads like lead II.
"""
from __future__ import annotations

import numpy as np

from .. import ecg_beats, signal_quality
from ..errors import InvalidInputError
from ..io.ecg import EcgRecord, read_ecg
from ..results import EcgRhythmResult
from .base import EcgOptions, Task, item_scores

MIN_BEATS = signal_quality.MIN_BEATS
COMBINE = 3  # at most this many leads decide together
BEAT_AGREEMENT = 0.15  # a lead joins only if its beat count is within 15 % of the best lead's


def _too_few_beats(record: EcgRecord, n: int, name: str) -> InvalidInputError:
    return InvalidInputError(
        f"{record.source}: only {n} beats found in lead {name} ({record.duration:.1f} s)",
        expected=f"at least {MIN_BEATS} detectable beats (a record of several seconds)",
        fix="check electrode contact, choose another lead, or record longer")


def _lead_windows(record: EcgRecord, name: str, beats: ecg_beats.Beats, spec) -> dict:
    windows, index = ecg_beats.windows(beats.tokens, spec)
    source_peaks = np.round(beats.peaks * (record.fs / spec.fs)).astype(np.int64)
    return {"lead": name, "windows": windows, "peaks": source_peaks, "index": index,
            "stats": ecg_beats.rhythm_stats(beats.peaks, spec.fs)}


def record_windows(record: EcgRecord, spec, lead: str | None = None) -> tuple[np.ndarray, dict]:
    """The beat windows (W, beats, features + mask) of the deciding lead(s), and what postprocess needs.

    The engine and validation datasets (export/datasets.py) both score a record through this, so a
    validation score is the clinic's score. A bundle whose ``preprocess.lead`` is not II pins that lead.
    """
    leads, checked = choose_leads(record, spec, lead or (None if spec.lead == "II" else spec.lead))
    windows = np.concatenate([one.pop("windows") for one in leads])
    choice = "requested" if lead else ("only lead" if len(record.leads) == 1 else "signal quality")
    return windows, {"leads": leads, "checked": checked, "fs": record.fs, "choice": choice}


def choose_leads(record: EcgRecord, spec, lead: str | None = None) -> tuple[list[dict], list]:
    """The leads that decide (best first, each with its windows) and the quality of every lead checked.

    All leads are filtered, searched for R peaks and checked in one pass; only the deciding leads
    are cut into beat tokens."""
    names = [record.lead(lead)[1]] if lead else list(record.leads)
    signals = record.signals if lead is None else record.signals[[record.leads.index(name) for name in names]]
    conditioned, peaks = ecg_beats.detect(signals, record.fs, spec)
    quality = signal_quality.assess_leads(signals, record.fs, names, conditioned, peaks, spec.fs)
    checked = sorted(range(len(names)), key=lambda i: signal_quality.rank_key(quality[i]))
    usable = [i for i in checked if quality[i].beats >= MIN_BEATS]
    if not usable:
        best = quality[checked[0]]
        raise _too_few_beats(record, best.beats, best.lead if lead else f"{best.lead} (the best of {len(checked)})")
    passing = [i for i in usable if quality[i].ok]
    if passing:
        ref = quality[passing[0]].beats
        chosen = [i for i in passing if abs(quality[i].beats - ref) <= BEAT_AGREEMENT * ref][:COMBINE]
    else:
        chosen = usable[:1]
    leads = []
    for i in chosen:
        beats = ecg_beats.Beats(peaks[i], ecg_beats.beat_tokens(conditioned[i], peaks[i], spec), spec.fs, conditioned[i])
        leads.append(_lead_windows(record, names[i], beats, spec) | {"quality": quality[i]})
    return leads, [quality[i] for i in checked]


class EcgRhythmTask(Task):
    name = "ecg_rhythm"
    study_kind = "ecg"
    options_type = EcgOptions
    result_type = EcgRhythmResult
    metrics = ("f1",)
    ood_applies = False  # signal quality per lead plays that role

    def read(self, source, options: EcgOptions) -> EcgRecord:
        return read_ecg(source, fs=options.fs)

    def preprocess(self, record: EcgRecord, options: EcgOptions) -> tuple[dict, dict]:
        windows, meta = record_windows(record, self.spec, options.lead)
        return {self.input_name: windows}, meta | {"weights": self.row_weights(windows)}

    @staticmethod
    def row_weights(inputs: np.ndarray) -> np.ndarray:
        """A beat window counts by its number of beats (the last feature is the beat mask)."""
        return inputs[:, :, -1].sum(1).astype(np.float64)

    def postprocess(self, outputs: dict, meta: dict) -> dict:
        probs = self.scores(outputs)  # (W over all deciding leads, C)
        labels = self.manifest.labels
        weights = meta["weights"]
        mean = item_scores(probs, np.zeros(len(probs), np.int64), weights, 1)[0]
        per_lead, start = [], 0
        for one in meta["leads"]:
            n = len(one["index"])
            per_lead.append(item_scores(probs[start:start + n], np.zeros(n, np.int64), weights[start:start + n], 1)[0])
            start += n
        scores = {label: float(p) for label, p in zip(labels, mean)}
        top = int(np.argmax(mean))
        first = meta["leads"][0]  # the best lead: its beats, statistics and saliency are shown
        saliency = self._saliency(outputs, first, top, len(first["index"]))
        warnings = tuple(one["quality"].warning() for one in meta["leads"] if not one["quality"].ok)
        return {"scores": scores, "lead": first["lead"], "fs": meta["fs"], "beats": first["peaks"],
                "stats": first["stats"], "saliency": saliency, "windows": len(first["index"]),
                "leads": tuple(one["lead"] for one in meta["leads"]), "lead_choice": meta["choice"],
                "lead_scores": {one["lead"]: {label: round(float(p), 4) for label, p in zip(labels, s)}
                                for one, s in zip(meta["leads"], per_lead)},
                "quality": tuple(q.to_dict() for q in meta["checked"]), "warnings": warnings}

    def _saliency(self, outputs: dict, first: dict, top: int, rows: int) -> np.ndarray:
        """Per-beat saliency of the best lead (its windows come first in the batch)."""
        post = self.manifest.postprocess
        peaks = first["peaks"]
        saliency = np.zeros(len(peaks))
        if post.heatmap_output and post.heatmap_output in outputs:
            cam, count = outputs[post.heatmap_output][:rows, :, top], np.zeros(len(peaks))
            for w, idx in enumerate(first["index"]):
                saliency[idx] += cam[w, :len(idx)]
                count[idx] += 1
            saliency = np.maximum(saliency / np.maximum(count, 1), 0)
            saliency = saliency / saliency.max() if saliency.max() > 0 else saliency
        return saliency.astype(np.float32)
