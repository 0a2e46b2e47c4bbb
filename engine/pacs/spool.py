"""The listener's spool beyond the queue: the audit log, retention of received objects, the backlog summary.

``audit.jsonl`` lines are written whole or not at all (engine/jsonl.py, the viewer's writer too).
Received objects are patient data: a delivered job's object is deleted at once, a skipped or
failed one kept ``keep_days`` after it ended, then purged. :func:`status` is what
``medexport listen status`` prints.
"""
from __future__ import annotations

import errno
import json
import logging
import time
import traceback
from pathlib import Path

from ..jsonl import JsonLines, now_iso
from .queue import STATES, JobQueue

log = logging.getLogger("medexport.listen")


def describe(exc: BaseException) -> str:
    """An unexpected exception as its type and where it was raised: never its message (a pydicom
    ValueError echoes the element's value, which may be a patient's name)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    code = f" [{errno.errorcode.get(exc.errno, exc.errno)}]" if isinstance(exc, OSError) and exc.errno else ""
    return f"{type(exc).__name__}{code}{where}"


class AuditLog:
    """One JSON line per event (UIDs, hashes, AE titles; never a patient attribute), through the one
    durable writer (engine/jsonl.py): whole or not at all; a line lost to a full disk is logged to
    stderr and counted in the ``audit-gap`` line written before the next one."""

    def __init__(self, path: Path):
        self.lines = JsonLines(path, kind="event")
        self.path = self.lines.path

    def __call__(self, event: str, **fields) -> bool:
        try:
            self.lines.append({"time": now_iso(), "event": event, **fields})
        except OSError as exc:
            log.warning("audit line %s not written (%s)", event, describe(exc))
            return False
        log.info("%s %s", event, " ".join(f"{k}={v}" for k, v in fields.items()))
        return True


def purge(queue: JobQueue, keep_s: float, now: float | None = None) -> list[str]:
    """Delete received objects no longer needed: delivered ones at once, skipped or failed ones
    ``keep_s`` after their job ended. Returns the job ids purged."""
    purged = []
    for obj in queue.root.joinpath("objects").glob("*.dcm"):
        if purgeable(queue, obj.stem, keep_s, now):
            obj.unlink(missing_ok=True)
            purged.append(obj.stem)
    now = time.time() if now is None else now
    for study in queue.root.joinpath("shadow").glob("*/study.dcm"):  # kept for a shadow report (shadow_runs.py)
        try:
            ran = max(p.stat().st_mtime for p in study.parent.glob("*.json"))
        except (OSError, ValueError):
            continue
        if now - ran >= keep_s:  # the study goes; its records (UIDs, scores) stay
            study.unlink(missing_ok=True)
            purged.append(f"shadow/{study.parent.name}")
    return purged


def purgeable(queue: JobQueue, job_id: str, keep_s: float, now: float | None = None) -> bool:
    """Whether a job's received data may go: delivered (done, not skipped), or skipped or failed
    ``keep_s`` ago (series too: engine/pacs/series.py)."""
    now = time.time() if now is None else now
    state = queue.state(job_id)
    if state not in ("done", "failed"):
        return False
    marker = queue.folder(state) / f"{job_id}.json"
    try:
        ended = marker.stat().st_mtime
        skipped = state == "done" and "skipped" in json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (state == "done" and not skipped) or now - ended >= keep_s


def _jobs(queue: JobQueue, state: str):
    for path in queue.folder(state).glob("*.json"):
        try:
            yield json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            yield {"id": path.stem, "errors": ["job file is not JSON"]}


def status(root, now: float | None = None, errors: int = 5) -> dict:
    """The backlog of a spool: jobs per state, results awaiting delivery, the oldest waiting job,
    the last errors, jobs per bundle. Reads files only (the listener may be running or not)."""
    now = time.time() if now is None else now
    queue = JobQueue(root)
    waiting = [*_jobs(queue, "pending"), *_jobs(queue, "running")]
    failed = list(_jobs(queue, "failed"))
    awaiting = [p.parent.name for p in queue.root.joinpath("outbox").glob("*/outcome.json")]
    oldest = min(waiting, key=lambda j: float(j.get("received", now)), default=None)
    bundles: dict = {}
    skipped = 0
    for job in _jobs(queue, "done"):
        skipped += "skipped" in job
        for r in job.get("results", []):
            bundles.setdefault(r.get("model_id", "?"), {"done": 0, "failed": 0})["done"] += 1
    for job in failed:
        for r in job.get("results", []):
            bundles.setdefault(r.get("model_id", "?"), {"done": 0, "failed": 0})["failed"] += 1
    last = sorted(({"job": j.get("id"), "error": j["errors"][-1], "state": s, "attempts": j.get("attempts", 0),
                    "at": float(j.get("failed", j.get("not_before", 0)))}
                   for s, js in (("waiting", waiting), ("failed", failed)) for j in js if j.get("errors")),
                  key=lambda e: -e["at"])[:errors]
    return {
        "spool": str(queue.root),
        "queue": {s: sum(1 for _ in queue.folder(s).glob("*.json")) for s in STATES},
        "awaiting_delivery": len(awaiting),
        "skipped": skipped,
        "objects_kept": sum(1 for _ in queue.root.joinpath("objects").glob("*.dcm")),
        "oldest_waiting": None if oldest is None else {
            "job": oldest.get("id"), "age_s": round(now - float(oldest.get("received", now)), 1),
            "attempts": oldest.get("attempts", 0), "not_before_s": round(max(0.0, float(oldest.get("not_before", 0)) - now), 1)},
        "last_errors": last,
        "bundles": bundles,
        "shadow": shadow_summary(queue.root),
    }


def shadow_summary(root) -> dict:
    from .shadow_runs import summary  # shadow_runs uses this module

    return summary(root)
