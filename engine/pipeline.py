"""Many studies through one model, overlapped: the next studies decode while the current one infers.

The slow parts of a study release the GIL (file reads, OpenJPEG / libjpeg decoding, Pillow's
resize, the runtime's inference). ``predicted`` reads and preprocesses studies on worker threads
(``Model.prepare``) and runs the model on the calling thread, one study at a time, so the runtime
keeps the cores it was configured for and never competes with a second inference (on 2 cores,
two whole-study workers each inferring with 2 threads were slower than one worker: 23 against
27 uncompressed studies/s). ``ordered`` runs any function on worker threads (the viewer's batch
when its studies go to different models, served models). Results come back in input order; a
study that fails becomes an error, not the end of the batch. Used by ``medexport predict`` on
folders, the benchmark and the viewer.
"""
from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from .errors import MedError

DEFAULT_WORKERS = 2  # decode of one study overlaps inference of another; more mostly adds contention


@dataclass
class BatchStats:
    """How a batch went: studies per second and the share of wall time spent waiting for a study
    to be ready (decode / preprocessing / inference not yet done: the pipeline's stall)."""

    studies: int = 0
    seconds: float = 0.0
    waiting_s: float = 0.0
    stage_ms: dict = field(default_factory=dict)  # summed per-study timings (read, preprocess, infer, ...)

    @property
    def studies_per_s(self) -> float:
        return self.studies / self.seconds if self.seconds > 0 else 0.0

    @property
    def wait_share(self) -> float:
        return self.waiting_s / self.seconds if self.seconds > 0 else 0.0

    def decode_share(self) -> float:
        """Share of the summed study time spent reading and preprocessing (decode-bound when high)."""
        total = sum(self.stage_ms.get(k, 0.0) for k in ("read", "preprocess", "infer", "postprocess"))
        return (self.stage_ms.get("read", 0.0) + self.stage_ms.get("preprocess", 0.0)) / total if total else 0.0

    def line(self) -> str:
        return (f"{self.studies} studies in {self.seconds:.2f} s: {self.studies_per_s:.1f} studies/s; "
                f"waiting for the next study {100 * self.wait_share:.0f} % of the time; "
                f"read + preprocess {100 * self.decode_share():.0f} % of study time")


def default_workers() -> int:
    return max(1, min(DEFAULT_WORKERS, os.cpu_count() or 1))


def ordered(fn: Callable, items: Iterable, *, workers: int | None = None, ahead: int | None = None,
            stats: BatchStats | None = None, cancel=None) -> Iterator[tuple[object, object, str | None]]:
    """(item, fn(item), None) or (item, None, error message) for each item, in order.

    ``fn`` runs on ``workers`` threads, at most ``ahead`` items in flight (default twice the
    workers: memory stays bounded on a folder of thousands). ``cancel`` (a threading.Event)
    stops submitting new items. A ``MedError`` is the study's error; anything else propagates."""
    for group in _groups(fn, items, workers, ahead, stats, cancel, 1):
        yield from group


def run(runner, items: Iterable, prepare: Callable, predict: Callable, *, stats: BatchStats | None = None,
        cancel=None) -> Iterator[tuple[object, object, str | None]]:
    """The one way studies go through a model, batched as ``runner`` runs best (engine/runner.py):
    a local bundle (``batches_locally``) reads on worker threads and runs what is read in one runtime
    pass (``predicted``); a served model, or none that opened, gets one ``predict`` per study on
    worker threads (``ordered``: the server batches)."""
    if runner is not None and runner.batches_locally:
        return predicted(runner, items, prepare, stats=stats, cancel=cancel)
    return ordered(predict, items, stats=stats, cancel=cancel)


def predicted(model, items: Iterable, prepare: Callable, *, workers: int | None = None,
              stats: BatchStats | None = None, cancel=None, batch: int = 8) -> Iterator[tuple[object, object, str | None]]:
    """(item, result, None) or (item, None, error message) for each item, in order: ``prepare(item)``
    (``model.prepare(...)``, read + preprocess) on worker threads; here, the studies already
    prepared (up to ``batch``) go through the model in one runtime pass (``Model.complete_many``)."""
    stats = stats if stats is not None else BatchStats()
    for group in _groups(prepare, items, workers, None, stats, cancel, batch):
        ready = [prepared for _, prepared, error in group if error is None]
        results = iter(model.complete_many(ready) if ready else ())
        for item, _, error in group:
            result = None if error else next(results)
            if isinstance(result, MedError):  # e.g. a borderline study's fp32 second opinion that cannot run
                result, error = None, str(result)
            if result is not None:
                for k, v in result.timings_ms.items():
                    stats.stage_ms[k] = stats.stage_ms.get(k, 0.0) + v
            yield item, result, error


def _groups(fn: Callable, items: Iterable, workers, ahead, stats, cancel, batch: int) -> Iterator[list]:
    """In order, lists of (item, value, error): the next item, waited for, then up to ``batch`` - 1
    following ones that are already done."""
    workers = workers or default_workers()
    ahead = max(ahead or 2 * workers, workers, batch)
    stats = stats if stats is not None else BatchStats()
    start = time.perf_counter()
    pending: deque = deque()
    source = iter(items)
    with ThreadPoolExecutor(workers, thread_name_prefix="medexport-batch") as pool:
        try:
            while True:
                while len(pending) < ahead and not (cancel is not None and cancel.is_set()):
                    item = next(source, _END)
                    if item is _END:
                        break
                    pending.append((item, pool.submit(_call, fn, item)))
                if not pending:
                    break
                group = []
                while pending and (not group or (len(group) < batch and pending[0][1].done())):
                    item, future = pending.popleft()
                    t0 = time.perf_counter()
                    value, error = future.result()
                    stats.waiting_s += time.perf_counter() - t0
                    stats.studies += 1
                    for k, v in (getattr(value, "timings_ms", None) or {}).items():
                        stats.stage_ms[k] = stats.stage_ms.get(k, 0.0) + v
                    group.append((item, value, error))
                stats.seconds = time.perf_counter() - start
                yield group
        finally:
            for _, future in pending:
                future.cancel()
    stats.seconds = time.perf_counter() - start


_END = object()


def _call(fn, item):
    try:
        return fn(item), None
    except MedError as exc:  # one bad study must not hide the others' results
        return None, str(exc)
