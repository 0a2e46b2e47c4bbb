"""ECG rhythm: one lead -> beat windows -> CNN+BiLSTM -> rhythm class, beats, saliency."""
from __future__ import annotations

import numpy as np

from .. import ecg_beats
from ..errors import InvalidInputError
from ..io.ecg import EcgRecord, read_ecg
from ..results import EcgRhythmResult
from .base import EcgOptions, Task, item_scores

MIN_BEATS = 4


def record_windows(record: EcgRecord, spec, lead: str | None = None) -> tuple[np.ndarray, dict]:
    """A record's beat windows (W, beats, features + mask) and what postprocess needs."""
    signal, name = record.lead(lead or (None if spec.lead == "II" else spec.lead))
    beats = ecg_beats.beats_of(signal, record.fs, spec)
    if len(beats.peaks) < MIN_BEATS:
        raise InvalidInputError(
            f"{record.source}: only {len(beats.peaks)} beats found in lead {name} ({record.duration:.1f} s)",
            expected=f"at least {MIN_BEATS} detectable beats (a record of several seconds)",
            fix="check electrode contact, choose another lead, or record longer")
    windows, index = ecg_beats.windows(beats.tokens, spec)
    source_peaks = np.round(beats.peaks * (record.fs / spec.fs)).astype(np.int64)
    meta = {"lead": name, "fs": record.fs, "peaks": source_peaks, "index": index,
            "stats": ecg_beats.rhythm_stats(beats.peaks, spec.fs)}
    return windows, meta


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
        post = self.manifest.postprocess
        probs = self.scores(outputs)  # (W, C)
        mean = item_scores(probs, np.zeros(len(probs), np.int64), meta["weights"], 1)[0]
        scores = {label: float(p) for label, p in zip(self.manifest.labels, mean)}
        top = int(np.argmax(mean))
        saliency = np.zeros(len(meta["peaks"]))
        if post.heatmap_output and post.heatmap_output in outputs:
            cam, count = outputs[post.heatmap_output][..., top], np.zeros(len(meta["peaks"]))
            for w, idx in enumerate(meta["index"]):
                saliency[idx] += cam[w, :len(idx)]
                count[idx] += 1
            saliency = np.maximum(saliency / np.maximum(count, 1), 0)
            saliency = saliency / saliency.max() if saliency.max() > 0 else saliency
        return {"scores": scores, "lead": meta["lead"], "fs": meta["fs"], "beats": meta["peaks"],
                "stats": meta["stats"], "saliency": saliency.astype(np.float32), "windows": len(meta["index"])}
