"""Gathering the instances of a series before a volume bundle runs on the whole of it.

A CT or MR series arrives one instance at a time. The listener keeps each instance a volume bundle
takes under ``series/gathering/<series key>/`` of its spool (fsynced before the C-STORE is
answered, as any received object); a series is complete when no new instance of it has arrived
for ``quiet_s`` seconds (``--series-quiet``). Completing renames the folder to
``series/closed/<job>/`` and queues one job for it (its id: a hash of the Series Instance UID and
the gathering's generation). After a crash or ``kill -9``: a gathering folder is still there and
completes ``quiet_s`` after the restart (a sender cut off mid-series re-sends the rest first); a
closed folder whose job was never queued is queued by :meth:`SeriesSpool.recover`. An instance
that arrives after its series was closed starts the next generation: a new gathering and job.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..atomic import fsync_dir
from .files import durable_copy, durable_replace, remove_tree

DEFAULT_QUIET_S = 10.0
INFO = ".series.json"  # the gathering's facts, written before its first instance (hidden: the folder reads as a series)


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def series_job_id(series_uid: str, generation: int) -> str:
    """The job of one gathering: a hash of the full Series Instance UID and the generation."""
    return _hash(f"series|{series_uid}|{generation}")


@dataclass(frozen=True)
class Gathered:
    """Where one received instance went: its series' gathering, how many instances it now holds,
    and, for the first instance of a later generation, the job of the series' previous gathering."""

    key: str
    generation: int
    instances: int
    new: bool
    after_job: str | None = None
    after_state: str | None = None


class SeriesSpool:
    """The gatherings of one listener spool (``queue``: its :class:`~.queue.JobQueue`). Thread-safe:
    receiving threads add instances while a worker closes quiet series."""

    def __init__(self, queue, quiet_s: float = DEFAULT_QUIET_S):
        self.queue = queue
        self.quiet_s = float(quiet_s)
        self.root = queue.root / "series"
        self.gathering, self.closed = self.root / "gathering", self.root / "closed"
        for folder in (self.gathering, self.closed):
            folder.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.last: dict[str, float] = {}  # gathering key -> when its newest instance arrived
        self.started = time.time()

    def folder(self, job_id: str) -> Path:
        """A closed series' instances (the job's input)."""
        return self.closed / job_id

    def add(self, src: Path, ds, calling_ae: str) -> Gathered:
        """Keep the received object ``src`` (its header ``ds``) in its series' gathering, durably.
        The same instance received again replaces itself (one file per SOP Instance UID)."""
        uid = str(ds.SeriesInstanceUID)
        key = _hash(f"gathering|{uid}")
        with self.lock:
            folder = self.gathering / key
            info = _read(folder / INFO)
            new = info is None
            after = None
            if new:
                generation = self._next_generation(uid)
                after = series_job_id(uid, generation - 1) if generation else None
                info = {"series_instance_uid": uid, "study_uid": str(ds.get("StudyInstanceUID", "")),
                        "modality": str(ds.get("Modality", "")), "generation": generation, "calling_ae": calling_ae,
                        "received": time.time()}
                folder.mkdir(parents=True, exist_ok=True)
                fsync_dir(self.gathering)
                durable_replace(folder / INFO, _dump(info))
            durable_copy(src, folder / f"{_hash(str(ds.SOPInstanceUID))}.dcm")
            self.last[key] = time.time()
            count = sum(1 for _ in folder.glob("*.dcm"))
        return Gathered(key, int(info["generation"]), count, new, after,
                        self.queue.state(after) if after else None)

    def _next_generation(self, uid: str) -> int:
        """The first generation of ``uid`` without a queued job or a closed folder."""
        generation = 0
        while self.queue.state(series_job_id(uid, generation)) or self.folder(series_job_id(uid, generation)).exists():
            generation += 1
        return generation

    def close_quiet(self, now: float | None = None) -> list[tuple[str, dict]]:
        """Close every gathering quiet for ``quiet_s``: its folder goes to ``closed/<job>``; returns
        (job id, job data) for the caller to queue. An empty gathering (a crash before its first
        instance was kept) is removed."""
        now = time.time() if now is None else now
        done = []
        with self.lock:
            for folder in sorted(p for p in self.gathering.iterdir() if p.is_dir()):
                last = self.last.get(folder.name)
                if last is None:  # a gathering from before a restart: its quiet time starts now
                    last = self.last[folder.name] = max(self.started, _newest(folder))
                if now - last < self.quiet_s:
                    continue
                info = _read(folder / INFO)
                count = sum(1 for _ in folder.glob("*.dcm"))
                self.last.pop(folder.name, None)
                if info is None or not count:
                    remove_tree(folder)
                    continue
                job_id = series_job_id(info["series_instance_uid"], int(info["generation"]))
                os.replace(folder, self.folder(job_id))
                fsync_dir(self.closed)
                fsync_dir(self.gathering)
                done.append((job_id, {**info, "kind": "series", "instances": count, "quiet_s": self.quiet_s,
                                      "completed": now}))
        return done

    def recover(self) -> list[tuple[str, dict]]:
        """Closed series whose job was never queued (a crash between closing and queueing). Called as
        the listener starts: the quiet time of gatherings left by a previous run counts from now."""
        self.started = time.time()
        for leftover in self.root.glob("*/*/.*.tmp"):  # half-written instances of a killed process
            leftover.unlink(missing_ok=True)
        found = []
        for folder in sorted(p for p in self.closed.iterdir() if p.is_dir()):
            info = _read(folder / INFO)
            if info is None or self.queue.state(folder.name) is not None:
                continue
            found.append((folder.name, {**info, "kind": "series",
                                        "instances": sum(1 for _ in folder.glob("*.dcm")), "quiet_s": self.quiet_s}))
        return found

    def files(self, job_id: str) -> list[Path]:
        return sorted(self.folder(job_id).glob("*.dcm"))

    def remove(self, job_id: str) -> None:
        """A delivered series' instances go (patient data)."""
        remove_tree(self.folder(job_id))

    def purge(self, keep_s: float, now: float | None = None) -> list[str]:
        """Closed series no longer needed: delivered ones at once, skipped or failed ones ``keep_s``
        after their job ended (the rule :func:`.spool.purgeable` applies to single objects)."""
        from .spool import purgeable

        purged = []
        for folder in [p for p in self.closed.iterdir() if p.is_dir()]:
            if purgeable(self.queue, folder.name, keep_s, now):
                shutil.rmtree(folder, ignore_errors=True)
                purged.append(folder.name)
        if purged:
            fsync_dir(self.closed)
        return purged

    def status(self) -> dict:
        """What ``listen status`` shows of the gatherings (files only)."""
        open_ = [p for p in self.gathering.iterdir() if p.is_dir()]
        return {"gathering": len(open_), "gathering_instances": sum(sum(1 for _ in p.glob("*.dcm")) for p in open_),
                "closed_kept": sum(1 for p in self.closed.iterdir() if p.is_dir())}


def _newest(folder: Path) -> float:
    times = [p.stat().st_mtime for p in folder.iterdir() if p.is_file()]
    return max(times, default=0.0)


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


def _dump(data: dict) -> bytes:
    return (json.dumps(data, sort_keys=True) + "\n").encode()





def series_objects(result, files: list, header, *, intended_use: str = "", pdf: bool = True) -> list:
    """What a volume result on a gathered series sends: DICOM SEG (a frame per slice and label,
    each referencing its slice), DICOM SR (TID 1500, volumes in mL, its ROIs referencing the SEG's
    segments) and, with ``pdf``, the report (three orthogonal slices, the volume table) as
    Encapsulated PDF: the engine's volume writers (engine/volume_outputs.py, engine/sr.py,
    engine/volume_report.py). UIDs derive from the Series Instance UID and the instances the result
    was computed on: a re-run of the same gathering stores nothing twice."""
    from ..sr import build_volume_sr
    from ..volume_outputs import seg_dataset, series_headers, source_volume
    from ..volume_report import report_pdf
    from .objects import pdf_dataset, restamp

    source = f"{header.SeriesInstanceUID}|{hashlib.sha256('|'.join(result.slice_uids).encode()).hexdigest()}"
    study = source_volume(result, [str(f) for f in files])
    headers = series_headers(study)
    seg = restamp(seg_dataset(result, study, headers), source, result.bundle_sha256, "SEG")  # before the SR cites it
    objects = [seg, restamp(build_volume_sr(result, headers, seg), source, result.bundle_sha256, "SR")]
    if pdf:
        lines = (f"Series UID: {header.SeriesInstanceUID} ({len(files)} instances gathered by the listener)",)
        report = report_pdf(result, study.voxels, headers[0], intended_use, by="listener", source_lines=lines)
        objects.append(restamp(pdf_dataset(report, result, str(files[0]), title="medexport AI volume report",
                                           src=headers[0]), source, result.bundle_sha256, "PDF"))
    return objects
