"""``medexport listen --shadow CANDIDATE``: a candidate bundle runs beside the live bundle of the same
model id on every object that bundle runs on; its result goes to the spool and the audit log only,
never to ``--forward``, and its failure never touches the live result.

In the spool: ``shadow/<job>/study.dcm`` (a hard link to the received object, so the study stays
when delivery deletes ``objects/<job>.dcm``) and ``shadow/<job>/<model id>.json`` (the record of
engine/shadow.py). The study is purged ``--keep-days`` after its run (engine/pacs/spool.purge); the
records (UIDs, scores, decisions) stay for ``medexport shadow --spool``.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from medexport.engine.errors import ConfigurationError, MedError

from .files import durable_copy, durable_replace, fsync_dir
from .spool import describe

STUDY = "study.dcm"


def check_candidates(candidates: list, live: list) -> None:
    """Each candidate (an opened model) must have exactly one live bundle of its model id, and not be
    that bundle itself; two candidates of one model id are refused."""
    seen = set()
    for cand in candidates:
        mid = cand.manifest.model_id
        same = [m for m in live if m.manifest.model_id == mid]
        if mid in seen:
            raise ConfigurationError(f"two --shadow candidates have model id {mid}",
                                     expected="one candidate per live bundle", fix="shadow one of them at a time")
        seen.add(mid)
        if len(same) != 1:
            found = ", ".join(sorted({m.manifest.model_id for m in live})) or "none"
            raise ConfigurationError(f"--shadow candidate {mid} {cand.manifest.model_version} matches {len(same)} "
                                     f"live bundles of model id {mid} (live: {found})",
                                     expected="exactly one live bundle with the candidate's model id",
                                     fix="shadow a new version of a bundle the listener runs, with --bundles naming it once")
        if same[0].sha256 == cand.sha256:
            raise ConfigurationError(f"--shadow candidate {mid} is the live bundle itself (SHA-256 {cand.sha256[:12]}...)",
                                     expected="another version of the live bundle",
                                     fix="keep the candidate out of the --bundles folder")


class ShadowRuns:
    """The candidates, keyed by model id, and where their runs go."""

    def __init__(self, spool: Path, candidates: list, audit):
        self.root = Path(spool) / "shadow"
        self.root.mkdir(parents=True, exist_ok=True)
        self.candidates = {m.manifest.model_id: m for m in candidates}
        self.audit = audit

    def describe(self) -> list[dict]:
        return [{"model_id": k, "version": m.manifest.model_version, "bundle_sha256": m.sha256}
                for k, m in self.candidates.items()]

    def run(self, job_id: str, path: Path, header, ran: list) -> list[dict]:
        """Run each candidate whose live bundle ran (``ran``: [(model, result)]) on the job's object;
        keep and audit the records. Never raises: a failure is the record's and the audit's."""
        out = []
        for model, live in ran:
            cand = self.candidates.get(model.manifest.model_id)
            if cand is None:
                continue
            try:
                out.append(self._one(cand, job_id, path, header, live))
            except Exception as exc:  # a candidate's bug (or a full disk) must not reach the live result
                self.audit("shadow-failed", job=job_id, model_id=cand.manifest.model_id,
                           reason=f"unexpected error: {describe(exc)}")
        return out

    def _one(self, cand, job_id: str, path: Path, header, live) -> dict:
        from medexport.engine.shadow import record

        from .listener import not_taken

        result, error = None, None
        try:
            why = not_taken(cand.manifest, header)
            if why is None:
                result = cand.predict(str(path))
            else:
                error = f"the candidate does not take this object: {why}"
        except MedError as exc:
            error = str(exc)
        except Exception as exc:  # noqa: B902 - the candidate failed, said in its record
            error = f"unexpected error: {describe(exc)}"
        folder = self.root / job_id
        rec = record(folder / STUDY, live, result, error=error, job=job_id, time=time.time())
        if result is None:  # which candidate failed
            rec["candidate"].update(model_id=cand.manifest.model_id, version=cand.manifest.model_version,
                                    bundle_sha256=cand.sha256)
        try:
            self._keep(folder, path, rec)
        except OSError as exc:
            self.audit("shadow-failed", job=job_id, model_id=cand.manifest.model_id,
                       reason=f"cannot keep the shadow run: {describe(exc)}")
        self.audit("shadow", job=job_id, sop_instance_uid=rec["sop_instance_uid"], model_id=cand.manifest.model_id,
                   changed=rec.get("changed"), current=_brief(rec["current"]), candidate=_brief(rec["candidate"]))
        return rec

    def _keep(self, folder: Path, path: Path, rec: dict) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        study = folder / STUDY
        if not study.exists():
            try:
                os.link(path, study)  # the same bytes, no copy
                fsync_dir(folder)
            except OSError:
                durable_copy(path, study)
        name = re.sub(r"[^A-Za-z0-9._-]", "_", rec["current"]["model_id"]) + ".json"
        durable_replace(folder / name, (json.dumps(rec, sort_keys=True) + "\n").encode())

    def close(self) -> None:
        for m in self.candidates.values():
            m.close()


def _brief(side: dict) -> dict:
    """One side for the audit line: the bundle, the decision and the scores (or the error)."""
    if "error" in side:
        return {"error": side["error"]}
    return {"bundle_sha256": side["bundle_sha256"], "version": side["version"], "decision": side["decision"],
            "scores": {s["label"]: s["score"] for s in side["scores"]}}


def spooled_records(spool) -> list[dict]:
    """Every shadow record a listener kept in ``spool`` (oldest first), ``file`` pointing at the kept
    study in this spool (wherever the spool now is)."""
    from medexport.engine.shadow import SCHEMA

    root = Path(spool) / "shadow"
    out = []
    for path in sorted(root.glob("*/*.json")) if root.is_dir() else []:
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and rec.get("schema") == SCHEMA:
            rec["file"] = str(path.parent / STUDY)
            out.append(rec)
    return sorted(out, key=lambda r: float(r.get("time", 0)))


def summary(spool) -> dict:
    """Per model id: the shadow runs kept, how many changed the decision, how many the candidate
    failed, and the candidate versions seen (``listen status``)."""
    out: dict = {}
    for rec in spooled_records(spool):
        entry = out.setdefault(rec["current"].get("model_id", "?"), {"runs": 0, "changed": 0, "candidate_failed": 0,
                                                                     "candidates": []})
        entry["runs"] += 1
        entry["changed"] += bool(rec.get("changed"))
        entry["candidate_failed"] += "error" in rec["candidate"]
        version = rec["candidate"].get("version")
        if version and version not in entry["candidates"]:
            entry["candidates"].append(version)
    return out
