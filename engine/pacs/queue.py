"""A durable on-disk job queue: one JSON file per job, renamed between folders.

``pending/`` -> ``running/`` (claimed by one worker: the rename succeeds for exactly one) ->
``done/`` (the done-marker) or back to ``pending/`` with a later ``not_before`` (retry with
backoff) or ``failed/`` (with the reasons, for a person to look at). A job's results, once made,
wait in ``outbox/<job>/`` (``outcome.json`` written last) until delivered, so a retry only re-sends. Every write is fsynced and
every rename made durable, so after a crash or ``kill -9``, :meth:`JobQueue.recover` puts the
jobs that were running back to pending and nothing is lost; a job whose done-marker exists is
never run again.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .files import durable_move, durable_replace, fsync_dir, remove_tree

STATES = ("pending", "running", "done", "failed")


@dataclass
class Job:
    id: str
    data: dict
    path: Path  # where the job file is now

    @property
    def attempts(self) -> int:
        return int(self.data.get("attempts", 0))


class JobQueue:
    def __init__(self, root):
        self.root = Path(root)
        for name in (*STATES, "objects", "outbox"):
            (self.root / name).mkdir(parents=True, exist_ok=True)

    def folder(self, state: str) -> Path:
        return self.root / state

    def _file(self, state: str, job_id: str) -> Path:
        return self.root / state / f"{job_id}.json"

    def is_done(self, job_id: str) -> bool:
        return self._file("done", job_id).exists()

    def put(self, job_id: str, data: dict) -> str:
        """Queue a job; "queued", or "done" / "queued already" when it need not run again."""
        if self.is_done(job_id):
            return "done"
        if self._file("pending", job_id).exists() or self._file("running", job_id).exists():
            return "queued already"
        durable_replace(self._file("pending", job_id), _dump({"id": job_id, "attempts": 0, "not_before": 0.0,
                                                             "errors": [], "since": time.time(), **data}))
        return "queued"

    def recover(self) -> list[str]:
        """After a crash: every job that was running is pending again (its done-marker, if it got one, wins)."""
        for leftover in self.root.glob("*/.*.tmp"):  # half-written files of a killed process
            leftover.unlink(missing_ok=True)
        moved = []
        for path in sorted(self.folder("running").glob("*.json")):
            durable_move(path, self.folder("pending"))
            moved.append(path.stem)
        return moved

    def claim(self, now: float | None = None) -> Job | None:
        """The oldest pending job that is due, moved to running; None when there is none."""
        now = time.time() if now is None else now
        for path in sorted(self.folder("pending").glob("*.json"), key=_mtime):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                continue  # another worker took it
            except ValueError:
                data = {"id": path.stem, "errors": ["job file is not JSON"], "attempts": 0}
            if float(data.get("not_before", 0)) > now:
                continue
            try:
                running = durable_move(path, self.folder("running"))
            except FileNotFoundError:
                continue
            return Job(path.stem, data, running)
        return None

    def finish(self, job: Job, outcome: dict) -> Path:
        """Write the done-marker, then drop the running file."""
        marker = durable_replace(self._file("done", job.id), _dump({**job.data, **outcome, "finished": time.time()}))
        _remove(job.path)
        return marker

    def state(self, job_id: str) -> str | None:
        """Where the job is now (one of STATES), None when unknown."""
        return next((s for s in STATES if self._file(s, job_id).exists()), None)

    def stage(self, job_id: str, blobs: dict, outcome: dict) -> None:
        """Keep a job's results (file name -> bytes) until delivered; ``outcome.json`` goes last."""
        box = self.root / "outbox" / job_id
        for name, data in blobs.items():
            durable_replace(box / name, data)
        durable_replace(box / "outcome.json", _dump({**outcome, "staged": time.time()}))

    def staged(self, job_id: str) -> dict | None:
        """The outcome of a job whose results are made and wait for delivery, else None."""
        try:
            return json.loads((self.root / "outbox" / job_id / "outcome.json").read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None

    def staged_files(self, job_id: str) -> list[Path]:
        return sorted((self.root / "outbox" / job_id).glob("*.dcm"))

    def unstage(self, job_id: str) -> None:
        remove_tree(self.root / "outbox" / job_id)

    def requeue(self, job_id: str) -> bool:
        """A failed or waiting job is due now again, attempts and deadline reset; False when not found."""
        for state in ("failed", "pending"):
            path = self._file(state, job_id)
            if path.exists():
                data = json.loads(path.read_text(encoding="utf-8"))
                data.update(attempts=0, not_before=0.0, since=time.time())
                data.pop("reason", None)
                durable_replace(path, _dump(data))
                durable_move(path, self.folder("pending"))
                return True
        return False

    def retry(self, job: Job, reason: str, delay: float) -> None:
        job.data.update(attempts=job.attempts + 1, not_before=time.time() + delay,
                        errors=[*job.data.get("errors", []), reason])
        durable_replace(job.path, _dump(job.data))
        job.path = durable_move(job.path, self.folder("pending"))

    def fail(self, job: Job, reason: str) -> Path:
        """Give up: the job goes to ``failed/`` with every reason it collected."""
        job.data.update(attempts=job.attempts + 1, errors=[*job.data.get("errors", []), reason], reason=reason,
                        failed=time.time())
        durable_replace(job.path, _dump(job.data))
        job.path = durable_move(job.path, self.folder("failed"))
        return job.path

    def drop(self, job: Job) -> None:
        """A claimed job whose done-marker exists (it was received again while running)."""
        _remove(job.path)

    def counts(self) -> dict:
        return {state: sum(1 for _ in self.folder(state).glob("*.json")) for state in STATES}


def _dump(data: dict) -> bytes:
    return (json.dumps(data, sort_keys=True) + "\n").encode()


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _remove(path: Path) -> None:
    os.unlink(path)
    fsync_dir(path.parent)
