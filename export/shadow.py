"""``medexport shadow``: what would change if the clinic switched from CURRENT to CANDIDATE?

Both bundles run on the same studies (engine/pipeline.py). The report lists every study whose
decision would change (the labels at or above their threshold differ), agreement per label
(Cohen's kappa, flips each way, mean score shift), Dice between masks and differences of
measurements, the speed of both and, with a ``labels.csv``, sensitivity and specificity of both
with 95 % Wilson CIs. ``OUT/changes.csv`` (one row per changed study, its path in ``file``),
``OUT/shadow.json`` and ``OUT/shadow.pdf``.
"""
from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import numpy as np

from medexport.engine.atomic import write_new
from medexport.engine.cautions import join_warnings
from medexport.engine.compare import dice, wilson_ci
from medexport.engine.errors import ConfigurationError

from .commission import percentiles, run_studies, studies_in

CHANGE_COLUMNS = ("file", "sop_instance_uid", "current_decision", "candidate_decision", "current_scores",
                  "candidate_scores", "current_warnings", "candidate_warnings")


def decided(result) -> tuple:
    """The labels a result decides for (at or above their threshold; the top label without thresholds)."""
    return tuple(sorted(row.label for row in result.score_rows() if row.hit))


def kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa of two yes/no raters (1.0 where both always agree on one answer)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if len(a) == 0:
        return float("nan")
    observed = float((a == b).mean())
    expected = float(a.mean() * b.mean() + (1 - a.mean()) * (1 - b.mean()))
    return 1.0 if expected == 1.0 else round((observed - expected) / (1 - expected), 4)


def _scores(r) -> str:
    return "; ".join(f"{row.label} {row.score:.4f}" + (f" (threshold {row.threshold:.4f})" if row.threshold is not None
                                                       else "") for row in r.score_rows())


def study_row(study, cur, cand) -> dict:
    return {"file": study.path, "sop_instance_uid": str((cur.input_meta or {}).get("SOPInstanceUID", "")),
            "current_decision": cur.decision(), "candidate_decision": cand.decision(),
            "current_scores": _scores(cur), "candidate_scores": _scores(cand),
            "current_warnings": join_warnings(cur.warnings), "candidate_warnings": join_warnings(cand.warnings)}


def agreement(pairs: list) -> dict:
    """Per label: kappa, flips each way, mean score shift; Dice of masks; measurement differences."""
    labels = sorted({row.label for cur, _ in pairs for row in cur.score_rows()})
    per_label = {}
    for label in labels:
        both = [(next((r for r in cur.score_rows() if r.label == label), None),
                 next((r for r in cand.score_rows() if r.label == label), None)) for cur, cand in pairs]
        both = [(x, y) for x, y in both if x is not None and y is not None]
        a, b = np.array([x.hit for x, _ in both], bool), np.array([y.hit for _, y in both], bool)
        shift = np.array([y.score - x.score for x, y in both], float)
        per_label[label] = {"kappa": kappa(a, b), "to_positive": int((~a & b).sum()), "to_negative": int((a & ~b).sum()),
                            "mean_score_shift": round(float(shift.mean()), 5) if len(shift) else None}
    out = {"per_label": per_label}
    masks = [dice(cur.mask, cand.mask) for cur, cand in pairs
             if hasattr(cur, "mask") and hasattr(cand, "mask") and cur.mask.shape == cand.mask.shape]
    if masks:
        out["mask_dice"] = {"mean": round(float(np.mean(masks)), 4), "min": round(float(np.min(masks)), 4)}
    measured = {}
    for cur, cand in pairs:
        for k, v in (getattr(cur, "measurements", None) or {}).items():
            w = (getattr(cand, "measurements", None) or {}).get(k)
            if v is not None and w is not None:
                measured.setdefault(k, []).append(float(w) - float(v))
    out["measurement_differences"] = {k: {"mean": round(float(np.mean(d)), 4), "max_abs": round(float(np.abs(d).max()), 4)}
                                      for k, d in measured.items()}
    return out


def labelled_metrics(pairs: list, studies: list, truth: dict, label_names: tuple) -> dict:
    """Sensitivity and specificity of both bundles per thresholded label (95 % Wilson CIs) on the
    studies ``truth`` (file name or path -> label index) names."""
    out = {}
    for which in (0, 1):
        for label, m in _sens_spec([(p[which], truth.get(s.path, truth.get(Path(s.path).name)))
                                    for p, s in zip(pairs, studies)], label_names).items():
            out.setdefault(label, {})["current" if which == 0 else "candidate"] = m
    return out


def _sens_spec(rows: list, label_names: tuple) -> dict:
    rows = [(r, t) for r, t in rows if t is not None]
    out = {}
    for label in sorted({row.label for r, _ in rows for row in r.score_rows() if row.threshold is not None}):
        index = label_names.index(label)
        hit = np.array([next(x.hit for x in r.score_rows() if x.label == label) for r, _ in rows], bool)
        pos = np.array([t == index for _, t in rows], bool)
        m = {"n": len(rows), "n_positive": int(pos.sum())}
        for name, k, n in (("sensitivity", (hit & pos).sum(), pos.sum()), ("specificity", (~hit & ~pos).sum(), (~pos).sum())):
            lo, hi = wilson_ci(int(k), int(n))
            m[name] = {"value": round(float(k / max(n, 1)), 4), "ci95": [round(lo, 4), round(hi, 4)]}
        out[label] = m
    return out


def shadow(candidate, current, studies_folder, out, *, labels=None, trust=None, emit=print) -> tuple[Path, dict]:
    """Run both bundles on the studies in ``studies_folder``; write changes.csv, shadow.json, shadow.pdf to ``out``."""
    from medexport.engine.bundle import open_bundle
    from medexport.engine.labelled import read_label_file

    t0 = time.perf_counter()
    out = Path(out)
    with open_bundle(current, trust=trust) as cur, open_bundle(candidate, trust=trust) as cand:
        if cur.task.study_kind != cand.task.study_kind:
            raise ConfigurationError(f"{candidate} reads {cand.task.study_kind} studies and {current} reads "
                                     f"{cur.task.study_kind} studies", expected="two versions of one model",
                                     fix="shadow a candidate against the bundle it would replace")
        studies = studies_in(studies_folder, cur.task.study_kind)
        if not studies:
            raise ConfigurationError(f"{studies_folder} holds no {cur.task.study_kind} study",
                                     fix="point --studies at a folder of the studies both bundles read")
        truth = read_label_file(Path(labels), tuple(cur.manifest.labels)) if labels else None
        emit(f"shadow: {len(studies)} studies through {cur.manifest.model_id} {cur.manifest.model_version} and "
             f"{cand.manifest.model_id} {cand.manifest.model_version}")
        ran = [run_studies(m, studies) for m in (cur, cand)]
        who = {k: {"model_id": m.manifest.model_id, "version": m.manifest.model_version, "sha256": m.sha256,
                   "artifact": m.artifact.key, "thresholds": dict(m.manifest.postprocess.thresholds)}
               for k, m in (("current", cur), ("candidate", cand))}
        names = tuple(cur.manifest.labels)
    (rows_a, stats_a), (rows_b, stats_b) = ran
    pairs, kept, errors = [], [], []
    for (study, a, ea), (_, b, eb) in zip(rows_a, rows_b):
        if ea or eb:
            errors.append({"file": study.path, "current_error": ea, "candidate_error": eb})
        else:
            pairs.append((a, b))
            kept.append(study)
    changes = [study_row(s, a, b) for s, (a, b) in zip(kept, pairs) if decided(a) != decided(b)]
    report = {"schema": "medexport.shadow/1", "studies": len(studies), "compared": len(pairs), **who,
              "changed": len(changes), "changes": changes, "errors": errors, "agreement": agreement(pairs),
              "speed": {k: {**percentiles([p[i].timings_ms["total"] for p in pairs]),
                            "studies_per_s": round(s.studies_per_s, 2)}
                        for k, i, s in (("current", 0, stats_a), ("candidate", 1, stats_b))}}
    if truth is not None:
        report["labelled"] = labelled_metrics(pairs, kept, truth, names)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, CHANGE_COLUMNS)
    writer.writeheader()
    writer.writerows(changes)
    write_new(out / "changes.csv", buf.getvalue().encode("utf-8"))
    path = write_new(out / "shadow.json", json.dumps(report, indent=1).encode())
    from medexport.engine.pacs.textpdf import text_pdf

    write_new(out / "shadow.pdf", text_pdf(report_lines(report), title="medexport shadow run"))
    return path, report


def _thresholds(who: dict) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in who["thresholds"].items()) or "none"


def report_lines(r: dict) -> list[str]:
    """The shadow report as a document: who, how many changed, agreement, speed, labelled metrics, the list."""
    cur, cand = r["current"], r["candidate"]
    lines = ["medexport shadow run: what would change with the candidate", "",
             f"Current:   {cur['model_id']} {cur['version']} [{cur['artifact']}] SHA-256 {cur['sha256'][:16]}... "
             f"thresholds {_thresholds(cur)}",
             f"Candidate: {cand['model_id']} {cand['version']} [{cand['artifact']}] SHA-256 {cand['sha256'][:16]}... "
             f"thresholds {_thresholds(cand)}",
             f"Studies: {r['studies']} ({r['compared']} compared, {len(r['errors'])} refused by either) in {r['seconds']:.0f} s",
             f"Decisions that would change: {r['changed']} of {r['compared']}", "", "Agreement per label"]
    for label, a in r["agreement"]["per_label"].items():
        lines.append(f"   {label}: Cohen's kappa {a['kappa']}; {a['to_positive']} would become positive, "
                     f"{a['to_negative']} negative; mean score shift {a['mean_score_shift']:+.4f}")
    if "mask_dice" in r["agreement"]:
        d = r["agreement"]["mask_dice"]
        lines.append(f"   masks: Dice between the two mean {d['mean']}, lowest {d['min']}")
    for k, d in r["agreement"]["measurement_differences"].items():
        lines.append(f"   {k}: candidate - current mean {d['mean']:+.3f}, largest {d['max_abs']:.3f}")
    lines += ["", "Speed end to end"]
    for k in ("current", "candidate"):
        s = r["speed"][k]
        lines.append(f"   {k}: " + (f"p50 {s['p50_ms']:.1f} ms, p95 {s['p95_ms']:.1f} ms, " if s.get("n") else "")
                     + f"{s['studies_per_s']} studies/s")
    for label, both in r.get("labelled", {}).items():
        lines += ["", f"Against the labels: {label}"]
        for k in ("current", "candidate"):
            m = both[k]
            lines.append(f"   {k}: sensitivity {m['sensitivity']['value']:.3f} ({m['sensitivity']['ci95'][0]:.3f}-"
                         f"{m['sensitivity']['ci95'][1]:.3f}), specificity {m['specificity']['value']:.3f} "
                         f"({m['specificity']['ci95'][0]:.3f}-{m['specificity']['ci95'][1]:.3f}), "
                         f"n {m['n']} ({m['n_positive']} positive)")
    lines += ["", f"Studies whose decision would change ({r['changed']}; all in changes.csv)"]
    for c in r["changes"]:
        lines.append(f"   {Path(c['file']).name}: {c['current_decision']} -> {c['candidate_decision']}; "
                     f"{c['current_scores']} -> {c['candidate_scores']}"
                     + (f"; candidate warnings: {c['candidate_warnings']}"
                        if c["candidate_warnings"] != c["current_warnings"] else ""))
    return lines
