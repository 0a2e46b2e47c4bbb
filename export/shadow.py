"""``medexport shadow``: what would change if the clinic switched from CURRENT to CANDIDATE?

Both bundles run on the same studies (engine/pipeline.py). The report lists every study whose
decision would change (the labels at or above their threshold differ), agreement per label
(Cohen's kappa, flips each way, mean score shift), Dice between masks and differences of
measurements, the speed of both and, with a ``labels.csv``, sensitivity and specificity of both
with 95 % Wilson CIs. ``OUT/changes.csv`` (one row per changed study, its path in ``file``),
``OUT/shadow.json`` and ``OUT/shadow.pdf``. The studies come from a folder (:func:`shadow`), from
what ``medexport listen --shadow`` kept in its spool (:func:`shadow_spool`, which runs nothing) or
from a PACS query (:func:`shadow_pacs`); every way builds the same records (engine/shadow.py).
"""
from __future__ import annotations

import csv
import io
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from medexport.engine.atomic import write_new
from medexport.engine.compare import wilson_ci
from medexport.engine.errors import ConfigurationError
from medexport.engine.shadow import CHANGE_COLUMNS, agreement, change_row, kappa, record  # noqa: F401 (kappa re-exported)
from medexport.engine.shadow import label_row as _row

from .commission import percentiles, run_studies, studies_in


def labelled_metrics(records: list, truth: dict, label_names: tuple) -> dict:
    """Sensitivity and specificity of both bundles per thresholded label (95 % Wilson CIs) on the
    studies ``truth`` names (by path, file name or SOP Instance UID -> label index)."""
    def label_of(rec):
        for key in (rec["file"], Path(rec["file"]).name, rec.get("sop_instance_uid")):
            if key in truth:
                return truth[key]
        return None

    out = {}
    for which in ("current", "candidate"):
        for label, m in _sens_spec([(r[which], label_of(r)) for r in records], label_names).items():
            out.setdefault(label, {})[which] = m
    return out


def _sens_spec(rows: list, label_names: tuple) -> dict:
    rows = [(side, t) for side, t in rows if t is not None]
    out = {}
    for label in sorted({s["label"] for side, _ in rows for s in side["scores"] if s["threshold"] is not None}):
        index = label_names.index(label)
        hit = np.array([_row(side, label)["hit"] for side, _ in rows], bool)
        pos = np.array([t == index for _, t in rows], bool)
        m = {"n": len(rows), "n_positive": int(pos.sum())}
        for name, k, n in (("sensitivity", (hit & pos).sum(), pos.sum()), ("specificity", (~hit & ~pos).sum(), (~pos).sum())):
            lo, hi = wilson_ci(int(k), int(n))
            m[name] = {"value": round(float(k / max(n, 1)), 4), "ci95": [round(lo, 4), round(hi, 4)]}
        out[label] = m
    return out


def _who(manifest, sha: str, artifact: str) -> dict:
    return {"model_id": manifest.model_id, "version": manifest.model_version, "sha256": sha, "artifact": artifact,
            "thresholds": dict(manifest.postprocess.thresholds)}


def build_report(records: list, errors: list, who: dict, source: dict, *, studies: int, truth=None,
                 label_names: tuple = (), per_s: dict | None = None) -> dict:
    """The report of compared ``records`` (both sides answered) and ``errors`` (either refused)."""
    changes = [change_row(r) for r in records if r["changed"]]
    report = {"schema": "medexport.shadow/1", "source": source, "studies": studies, "compared": len(records), **who,
              "changed": len(changes), "changes": changes, "errors": errors, "agreement": agreement(records),
              "speed": {k: {**percentiles([r[k]["ms"] for r in records]), "studies_per_s": (per_s or {}).get(k)}
                        for k in ("current", "candidate")}}
    if truth is not None:
        report["labelled"] = labelled_metrics(records, truth, label_names)
    return report


def write_report(report: dict, out) -> Path:
    """changes.csv, shadow.json and shadow.pdf in ``out`` (never over an existing file); the JSON's path."""
    from medexport.engine.pacs.textpdf import text_pdf

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, CHANGE_COLUMNS)
    writer.writeheader()
    writer.writerows(report["changes"])
    write_new(out / "changes.csv", buf.getvalue().encode("utf-8"))
    path = write_new(out / "shadow.json", json.dumps(report, indent=1).encode())
    write_new(out / "shadow.pdf", text_pdf(report_lines(report), title="medexport shadow run"))
    return path


def _same_kind(cur, cand, candidate, current) -> None:
    if cur.task.study_kind != cand.task.study_kind:
        raise ConfigurationError(f"{candidate} reads {cand.task.study_kind} studies and {current} reads "
                                 f"{cur.task.study_kind} studies", expected="two versions of one model",
                                 fix="shadow a candidate against the bundle it would replace")


def shadow(candidate, current, studies_folder, out, *, labels=None, trust=None, emit=print, source=None,
           file_name=None) -> tuple[Path, dict]:
    """Run both bundles on the studies in ``studies_folder``; write changes.csv, shadow.json, shadow.pdf to ``out``.
    ``file_name(path)``: what the ``file`` column says for a study (default its path)."""
    from medexport.engine.open import open_bundle
    from medexport.engine.labelled import read_label_file

    t0 = time.perf_counter()
    with open_bundle(current, trust=trust) as cur, open_bundle(candidate, trust=trust) as cand:
        _same_kind(cur, cand, candidate, current)
        studies = studies_in(studies_folder, cur.task.study_kind)
        if not studies:
            raise ConfigurationError(f"{studies_folder} holds no {cur.task.study_kind} study",
                                     fix="point --studies at a folder of the studies both bundles read")
        truth = read_label_file(Path(labels), tuple(cur.manifest.labels)) if labels else None
        emit(f"shadow: {len(studies)} studies through {cur.manifest.model_id} {cur.manifest.model_version} and "
             f"{cand.manifest.model_id} {cand.manifest.model_version}")
        (rows_a, stats_a), (rows_b, stats_b) = [run_studies(m, studies) for m in (cur, cand)]
        who = {k: _who(m.manifest, m.sha256, m.artifact.key) for k, m in (("current", cur), ("candidate", cand))}
        names = tuple(cur.manifest.labels)
    name = file_name or str
    records, errors = [], []
    for (study, a, ea), (_, b, eb) in zip(rows_a, rows_b):
        if ea or eb:
            errors.append({"file": name(study.path), "current_error": ea, "candidate_error": eb})
        else:
            records.append(record(name(study.path), a, b))
    report = build_report(records, errors, who, source or {"studies": str(studies_folder)}, studies=len(studies),
                          truth=truth, label_names=names,
                          per_s={"current": round(stats_a.studies_per_s, 2), "candidate": round(stats_b.studies_per_s, 2)})
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return write_report(report, out), report


def shadow_spool(candidate, current, spool, out, *, labels=None, emit=print) -> tuple[Path, dict]:
    """Summarise the shadow runs ``medexport listen --shadow CANDIDATE`` kept in ``spool`` for exactly
    these two bundles (by SHA-256); runs nothing. ``labels``: by file name or SOP Instance UID."""
    from medexport.engine.bundle_read import read_manifest
    from medexport.engine.labelled import read_label_file
    from medexport.engine.pacs.shadow_runs import spooled_records

    t0 = time.perf_counter()
    (cur, cur_sha, _), (cand, cand_sha, _) = read_manifest(current), read_manifest(candidate)
    if not Path(spool, "shadow").is_dir():
        raise ConfigurationError(f"{spool} has no shadow/ folder", expected="the spool of 'medexport listen --shadow'",
                                 fix="pass the listener's --spool folder, after it ran with --shadow CANDIDATE")
    found = spooled_records(spool)
    ours = [r for r in found if r["current"].get("bundle_sha256") == cur_sha
            and r["candidate"].get("bundle_sha256") == cand_sha]
    if not ours:
        pairs = sorted({f"{r['current'].get('model_id')} {r['current'].get('version')} vs "
                        f"{r['candidate'].get('version', '?')}" for r in found})
        raise ConfigurationError(f"{spool} holds no shadow run of {cand.model_id} {cand.model_version} "
                                 f"(SHA-256 {cand_sha[:12]}...) beside {cur.model_id} {cur.model_version} "
                                 f"(SHA-256 {cur_sha[:12]}...)", expected=f"runs of these two bundles; it holds: "
                                 f"{'; '.join(pairs) or 'none'}", fix="name the bundles the listener ran")
    records = [r for r in ours if "error" not in r["candidate"]]
    errors = [{"file": r["file"], "current_error": None, "candidate_error": r["candidate"]["error"]}
              for r in ours if "error" in r["candidate"]]
    emit(f"shadow: {len(ours)} runs kept in {spool} ({len(found) - len(ours)} of other bundle versions left out)")

    def artifact(which):
        keys = [f"{r[which]['backend']}-{r[which]['precision']}" for r in records]
        return max(set(keys), key=keys.count) if keys else "?"

    who = {"current": _who(cur, cur_sha, artifact("current")), "candidate": _who(cand, cand_sha, artifact("candidate"))}
    times = [float(r.get("time", 0)) for r in ours]
    source = {"spool": str(spool), "runs_of_other_versions": len(found) - len(ours),
              "from": min(times), "to": max(times),
              "studies_kept": sum(Path(r["file"]).is_file() for r in ours)}
    truth = read_label_file(Path(labels), tuple(cur.labels)) if labels else None
    report = build_report(records, errors, who, source, studies=len(ours), truth=truth, label_names=tuple(cur.labels))
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return write_report(report, out), report


def shadow_pacs(candidate, current, node, query: dict, out, *, labels=None, trust=None, emit=print,
                max_studies: int = 500) -> tuple[Path, dict]:
    """Find studies on a PACS ``node`` (``query``: engine/pacs/scu.query's keys), retrieve them into a
    temporary folder (removed afterwards) and shadow them; ``file`` says NODE:STUDY_UID/SOP_UID.dcm."""
    import tempfile

    from medexport.engine.pacs import scu

    found = scu.find(node, **query)
    if not found:
        raise ConfigurationError(f"{node.describe()} found no study for {query}",
                                 fix="check the query with 'medexport pacs find'")
    if len(found) > max_studies:
        raise ConfigurationError(f"{node.describe()} found {len(found)} studies for {query}",
                                 expected=f"at most {max_studies}", fix="narrow the query (a date range, a modality)")
    emit(f"shadow: retrieving {len(found)} studies from {node.describe()}")
    with tempfile.TemporaryDirectory(prefix="medexport-shadow-") as tmp:
        for study in found:
            uid = study["StudyInstanceUID"]
            scu.get(node, uid, Path(tmp) / scu.safe_name(uid))
        source = {"pacs": node.describe(), "query": query, "retrieved_studies": len(found)}
        return shadow(candidate, current, tmp, out, labels=labels, trust=trust, emit=emit, source=source,
                      file_name=lambda p: f"{node.name}:{Path(p).relative_to(tmp).as_posix()}")


def _thresholds(who: dict) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in who["thresholds"].items()) or "none"


def _source_line(src: dict) -> str:
    if "spool" in src:
        span = " to ".join(datetime.fromtimestamp(src[k], timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
                           for k in ("from", "to"))
        return (f"Source: the listener's shadow runs in {src['spool']}, {span}; {src['runs_of_other_versions']} runs of "
                f"other bundle versions left out; {src['studies_kept']} studies still in the spool")
    if "pacs" in src:
        return f"Source: {src['retrieved_studies']} studies retrieved from {src['pacs']} for {src['query']}"
    return f"Source: the studies in {src.get('studies', '?')}"


def report_lines(r: dict) -> list[str]:
    """The shadow report as a document: who, how many changed, agreement, speed, labelled metrics, the list."""
    cur, cand = r["current"], r["candidate"]
    lines = ["medexport shadow run: what would change with the candidate", "",
             f"Current:   {cur['model_id']} {cur['version']} [{cur['artifact']}] SHA-256 {cur['sha256'][:16]}... "
             f"thresholds {_thresholds(cur)}",
             f"Candidate: {cand['model_id']} {cand['version']} [{cand['artifact']}] SHA-256 {cand['sha256'][:16]}... "
             f"thresholds {_thresholds(cand)}",
             _source_line(r.get("source", {})),
             f"Studies: {r['studies']} ({r['compared']} compared, {len(r['errors'])} refused by either)"
             + ("" if "spool" in r.get("source", {}) else f" in {r['seconds']:.0f} s"),
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
        lines.append(f"   {k}: " + (f"p50 {s['p50_ms']:.1f} ms, p95 {s['p95_ms']:.1f} ms" if s.get("n") else "no study")
                     + (f", {s['studies_per_s']} studies/s" if s.get("studies_per_s") is not None else ""))
    for label, both in r.get("labelled", {}).items():
        lines += ["", f"Against the labels: {label}"]
        for k in ("current", "candidate"):
            m = both[k]
            lines.append(f"   {k}: sensitivity {m['sensitivity']['value']:.3f} ({m['sensitivity']['ci95'][0]:.3f}-"
                         f"{m['sensitivity']['ci95'][1]:.3f}), specificity {m['specificity']['value']:.3f} "
                         f"({m['specificity']['ci95'][0]:.3f}-{m['specificity']['ci95'][1]:.3f}), "
                         f"n {m['n']} ({m['n_positive']} positive)")
    lines += ["", f"Studies whose decision would change ({r['changed']}; all in changes.csv)"]
    spool = "spool" in r.get("source", {})  # every kept study is a study.dcm: the UID names it
    for c in r["changes"]:
        name = f"SOP {c['sop_instance_uid']}" if spool else Path(c["file"]).name
        lines.append(f"   {name}: {c['current_decision']} -> {c['candidate_decision']}; "
                     f"{c['current_scores']} -> {c['candidate_scores']}"
                     + (f"; candidate warnings: {c['candidate_warnings']}"
                        if c["candidate_warnings"] != c["current_warnings"] else ""))
    return lines
