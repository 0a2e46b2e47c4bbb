"""Several studies through one opened Model with one runtime pass: what a server does with the
requests Triton's dynamic batcher hands it together.

Each study goes through the model's own task exactly as :meth:`Model.predict` does it (read,
preprocess, postprocess, explain, screening); only the runtime step is shared: the preprocessed
tensors of all studies are stacked and run together (in the model's chunks), then split back.
tests/test_serve.py holds server results to local ``predict`` results field by field, so the two
paths cannot drift apart unnoticed.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..bundle_write import process_alive
from ..errors import InvalidInputError, MedError
from . import checks, series, statement, wire

log = logging.getLogger(__name__)
UPLOAD_PREFIX = "medexport-serve-"  # + the server's pid


@dataclass
class Item:
    """One study of a batch: its header, what preprocessing made of it, or the error it met."""

    header: dict
    payload: bytes
    rows: int = 0
    feeds: np.ndarray | None = None
    prepared: object = None  # engine.model.Prepared
    infer_ms: float = 0.0
    error: MedError | None = None
    reply: dict | None = None


def run_batch(model, items: list[Item]) -> list[dict]:
    """One reply per item: ``{"result": ...}``, ``{"outputs": ...}``, ``{"info": ...}`` or ``{"error": ...}``.

    Whatever goes wrong with one item (a MedError, or a fault the checks missed) fails that item
    alone; if the shared runtime pass fails, each study runs by itself so only its own fails."""
    checked = [i for i in items if i.error is None]  # a request that failed its checks joins no batch
    if len(checked) > 1:  # decoding and resizing release the GIL: the batch's studies prepare side by side
        with ThreadPoolExecutor(max_workers=min(len(checked), os.cpu_count() or 1)) as pool:
            list(pool.map(lambda item: _guarded(item, _prepare, model, item), checked))
    else:
        for item in checked:
            _guarded(item, _prepare, model, item)
    ready = [i for i in items if i.error is None and i.reply is None]
    if ready and not _guarded(ready[0], _run_together, model, ready) and len(ready) > 1:
        for item in ready:  # the shared pass failed: each runs alone, so a bad study fails alone
            item.error = None
            _guarded(item, _run_together, model, [item])
    return [{"error": wire.error_dict(i.error)} if i.error is not None else i.reply for i in items]


def new_item(raw_header: bytes, payload: bytes) -> Item:
    """A request's item; one whose header fails the checks carries its error and joins no batch."""
    found = Item({}, payload)
    _guarded(found, lambda: setattr(found, "header", checks.header(raw_header)))
    return found


def as_med_error(exc: Exception) -> MedError:
    """``exc`` itself if it is a MedError; otherwise it is logged here with its traceback and
    reaches the client by its type only (no traceback, no server paths)."""
    if isinstance(exc, MedError):
        return exc
    log.error("medexport serve: a request failed", exc_info=exc)
    return InvalidInputError(f"the server failed on this request ({type(exc).__name__})",
                             expected="a study the bundle's task reads",
                             fix="the server's log has the details; report it if the study is valid")


def _guarded(item: Item, step, *args) -> bool:
    """Run ``step``; a failure becomes ``item``'s error and fails nothing else."""
    try:
        step(*args)
        return True
    except Exception as exc:  # noqa: BLE001 - one request's fault must not fail the others
        item.error = as_med_error(exc)
        return False


def _run_together(model, ready: list[Item]) -> None:
    t0 = time.perf_counter()
    outputs = model.infer(np.concatenate([i.feeds for i in ready]))
    run_ms = (time.perf_counter() - t0) * 1e3
    start = 0
    for item in ready:
        part = {k: v[start:start + item.rows] for k, v in outputs.items()}
        start += item.rows
        item.infer_ms = run_ms  # the shared runtime pass this study was part of
        _guarded(item, _finish_into, model, item, part)


def _finish_into(model, item: Item, outputs: dict) -> None:
    item.reply = _finish(model, item, outputs)


def _prepare(model, item: Item) -> None:
    kind = item.header["kind"]
    if kind in STATEMENTS:  # what the server states about the model: no study, no runtime pass
        item.reply = {kind: STATEMENTS[kind](model)}
        return
    if kind == "tensor":
        batch = checks.tensor(item.payload, model.manifest.input.shape[1:])
        item.feeds, item.rows = batch, len(batch)
        return
    options = item.header.get("options", {})
    if kind == "array":
        item.prepared = model.prepare(checks.array(item.payload), **options)
    elif kind == "series":
        item.prepared = _prepare_series(model, item, options)
    else:
        item.prepared = _prepare_file(model, item, options)
    item.feeds = item.prepared.feeds[model.manifest.input.name]
    item.rows = len(item.feeds)


def _prepare_file(model, item: Item, options: dict):
    """The file's bytes, read from a private temporary file (mode 0600, in a 0700 folder removed on
    every path) named like the client's file; the client sees its own name, never the server's path."""
    name = checks.name(item.header.get("name", "study"))
    checks.payload(item.payload)
    with tempfile.TemporaryDirectory(prefix=f"{UPLOAD_PREFIX}{os.getpid()}-") as folder:
        path = os.path.join(folder, name)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(item.payload)
            return model.prepare(path, **options)  # readers load the study into memory
        except MedError as exc:
            raise _renamed(exc, {path: name, folder: "(upload)"}) from None


def _prepare_series(model, item: Item, options: dict):
    """A series' files (:mod:`.series`: the whole volume, not windows), written like one file into a
    private upload folder and read as one study; errors name the client's own file names."""
    if model.task.study_kind != "volume":
        raise InvalidInputError(f"a series of files for {model.manifest.model_id}, which reads one "
                                f"{model.task.study_kind} per file", expected="one file per request",
                                fix="send the study's file (open_bundle('triton://...').predict(path) does)")
    files = series.table(item.header.get("files"))
    with tempfile.TemporaryDirectory(prefix=f"{UPLOAD_PREFIX}{os.getpid()}-") as folder:
        paths = series.write_files(folder, files, item.payload)
        try:
            return model.prepare(paths, **options)  # readers load the volume into memory
        except MedError as exc:
            raise _renamed(exc, {p: n for p, (n, _) in zip(paths, files)} | {folder: "(upload)"}) from None


def remove_stale_uploads() -> list[Path]:
    """Remove upload folders left by servers that were killed mid-request (nothing could clean up)."""
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(f"{UPLOAD_PREFIX}*-*"):
        pid = folder.name[len(UPLOAD_PREFIX):].split("-", 1)[0]
        try:
            if pid.isdigit() and folder.stat().st_uid == os.getuid() and not process_alive(int(pid)):
                shutil.rmtree(folder)
                removed.append(folder)
        except FileNotFoundError:
            pass
    return removed


def _renamed(exc: MedError, names: dict) -> MedError:
    """``exc`` with the server's temporary paths replaced by what the client knows them as."""
    if not any(k in str(exc) for k in names):
        return exc

    def text(value):
        for k, v in names.items():
            value = value.replace(k, v) if value else value
        return value

    return type(exc)(text(exc.what), expected=text(exc.expected), fix=text(exc.fix))


def _finish(model, item: Item, outputs: dict) -> dict:
    if item.header["kind"] == "tensor":
        return {"outputs": outputs, "scores": model.answered_scores(item.feeds, outputs)}
    return {"result": model.finish(item.prepared, outputs, item.infer_ms)}


def info(model) -> dict:
    """What a client needs to know about a served model before it sends studies."""
    m = model.manifest
    return {"protocol": wire.PROTOCOL, "model_id": m.model_id, "model_version": m.model_version,
            "task": model.task.name, "study_kind": model.task.study_kind, "labels": list(m.labels),
            "input_shape": list(m.input.shape), "provenance": model.provenance,
            "options": [f for f in model.task.options_type.__dataclass_fields__],
            "golden_tolerance": model.task.golden_tolerance.get(model.precision)}


STATEMENTS = {"info": info, "describe": statement.describe, "golden": statement.golden}
