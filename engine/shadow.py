"""One study through the bundle in use and a candidate, kept as a plain, JSON-ready record.

``medexport shadow`` builds these records from its own runs, and ``medexport listen --shadow``
writes one per arriving study into its spool (engine/pacs/shadow_runs.py); the report
(export/shadow.py) reads only records, so it says the same whichever way the studies came. A
record holds UIDs, scores, decisions and warnings: never a patient attribute.
"""
from __future__ import annotations

import numpy as np

from .cautions import ResultWarning, join_warnings
from .compare import dice

SCHEMA = "medexport.shadow-record/1"
CHANGE_COLUMNS = ("file", "sop_instance_uid", "current_decision", "candidate_decision", "current_scores",
                  "candidate_scores", "current_warnings", "candidate_warnings")


def side(result) -> dict:
    """What the report needs of one result: who answered, the decision, the score table, warnings, time."""
    rows = result.score_rows()
    out = {"model_id": result.model_id, "version": result.model_version, "bundle_sha256": result.bundle_sha256,
           "backend": result.backend, "precision": result.precision, "decision": result.decision(),
           "decided": sorted(row.label for row in rows if row.hit),
           "scores": [{"label": row.label, "score": round(float(row.score), 6), "threshold": row.threshold,
                       "hit": bool(row.hit)} for row in rows],
           "warnings": [w.to_dict() for w in result.warnings],
           "ms": round(float(result.timings_ms.get("total", 0.0)), 3)}
    measurements = getattr(result, "measurements", None)
    if measurements:
        out["measurements"] = {k: float(v) for k, v in measurements.items() if v is not None}
    return out


def record(file, current, candidate=None, *, error: str | None = None, **extra) -> dict:
    """The record of one study: both sides (the candidate's ``error`` instead when it failed), whether
    the decision changed and, for two masks of one shape, the Dice between them. ``extra``: job, time..."""
    rec = {"schema": SCHEMA, "file": str(file),
           "sop_instance_uid": str((current.input_meta or {}).get("SOPInstanceUID", "")), **extra,
           "current": side(current)}
    if candidate is None:
        rec["candidate"] = {"error": error or "the candidate gave no result"}
        return rec
    rec["candidate"] = side(candidate)
    rec["changed"] = rec["current"]["decided"] != rec["candidate"]["decided"]
    a, b = getattr(current, "mask", None), getattr(candidate, "mask", None)
    if a is not None and b is not None and a.shape == b.shape:
        rec["mask_dice"] = round(dice(a, b), 6)
    return rec


def warnings_text(side_: dict) -> str:
    """A side's warnings as one CSV cell, as every other consumer writes them."""
    return join_warnings(ResultWarning(**w) for w in side_.get("warnings", []))


def scores_text(side_: dict) -> str:
    return "; ".join(f"{s['label']} {s['score']:.4f}" + (f" (threshold {s['threshold']:.4f})"
                                                         if s["threshold"] is not None else "")
                     for s in side_.get("scores", []))


def kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa of two yes/no raters (1.0 where both always agree on one answer)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if len(a) == 0:
        return float("nan")
    observed = float((a == b).mean())
    expected = float(a.mean() * b.mean() + (1 - a.mean()) * (1 - b.mean()))
    return 1.0 if expected == 1.0 else round((observed - expected) / (1 - expected), 4)


def change_row(rec: dict) -> dict:
    """One changes.csv row of a record (engine/shadow.py) whose decision changed."""
    cur, cand = rec["current"], rec["candidate"]
    return {"file": rec["file"], "sop_instance_uid": rec.get("sop_instance_uid", ""),
            "current_decision": cur["decision"], "candidate_decision": cand["decision"],
            "current_scores": scores_text(cur), "candidate_scores": scores_text(cand),
            "current_warnings": warnings_text(cur), "candidate_warnings": warnings_text(cand)}


def label_row(side: dict, label: str) -> dict | None:
    """A side's score row for ``label`` (None: that side has no such label)."""
    return next((s for s in side["scores"] if s["label"] == label), None)


def agreement(records: list) -> dict:
    """Per label: kappa, flips each way, mean score shift; Dice of masks; measurement differences."""
    labels = sorted({s["label"] for r in records for s in r["current"]["scores"]})
    per_label = {}
    for label in labels:
        both = [(label_row(r["current"], label), label_row(r["candidate"], label)) for r in records]
        both = [(x, y) for x, y in both if x is not None and y is not None]
        a, b = np.array([x["hit"] for x, _ in both], bool), np.array([y["hit"] for _, y in both], bool)
        shift = np.array([y["score"] - x["score"] for x, y in both], float)
        per_label[label] = {"kappa": kappa(a, b), "to_positive": int((~a & b).sum()), "to_negative": int((a & ~b).sum()),
                            "mean_score_shift": round(float(shift.mean()), 5) if len(shift) else None}
    out = {"per_label": per_label}
    masks = [r["mask_dice"] for r in records if r.get("mask_dice") is not None]
    if masks:
        out["mask_dice"] = {"mean": round(float(np.mean(masks)), 4), "min": round(float(np.min(masks)), 4)}
    measured = {}
    for r in records:
        for k, v in r["current"].get("measurements", {}).items():
            w = r["candidate"].get("measurements", {}).get(k)
            if w is not None:
                measured.setdefault(k, []).append(float(w) - float(v))
    out["measurement_differences"] = {k: {"mean": round(float(np.mean(d)), 4), "max_abs": round(float(np.abs(d).max()), 4)}
                                      for k, d in measured.items()}
    return out
