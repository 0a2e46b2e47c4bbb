"""Several studies through one opened Model with one runtime pass: what a server does with the
requests Triton's dynamic batcher hands it together.

Each study goes through the model's own task exactly as :meth:`Model.predict` does it (read,
preprocess, postprocess, explain, screening); only the runtime step is shared: the preprocessed
tensors of all studies are stacked and run together (in the model's chunks), then split back.
tests/test_serve.py holds server results to local ``predict`` results field by field, so the two
paths cannot drift apart unnoticed.
"""
from __future__ import annotations

import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePath

import numpy as np

from ..errors import InvalidInputError, MedError
from . import wire


@dataclass
class Item:
    """One study of a batch: its header, what preprocessing made of it, or the error it met."""

    header: dict
    payload: bytes
    rows: int = 0
    feeds: np.ndarray | None = None
    prepared: object = None  # engine.bundle.Prepared
    infer_ms: float = 0.0
    error: MedError | None = None
    reply: dict | None = None


def run_batch(model, items: list[Item]) -> list[dict]:
    """One reply per item: ``{"result": ...}``, ``{"outputs": ...}``, ``{"info": ...}`` or ``{"error": ...}``."""
    if len(items) > 1:  # decoding and resizing release the GIL: the batch's studies prepare side by side
        with ThreadPoolExecutor(max_workers=min(len(items), os.cpu_count() or 1)) as pool:
            list(pool.map(lambda item: _prepare_or_error(model, item), items))
    else:
        for item in items:
            _prepare_or_error(model, item)
    ready = [i for i in items if i.error is None and i.reply is None]
    if ready:
        t0 = time.perf_counter()
        try:
            outputs = model._run({model.manifest.input.name: np.concatenate([i.feeds for i in ready])})
        except MedError as exc:
            for item in ready:
                item.error = exc
            ready = []
        run_ms = (time.perf_counter() - t0) * 1e3
        start = 0
        for item in ready:
            part = {k: v[start:start + item.rows] for k, v in outputs.items()}
            start += item.rows
            item.infer_ms = run_ms  # the shared runtime pass this study was part of
            try:
                item.reply = _finish(model, item, part)
            except MedError as exc:
                item.error = exc
    return [{"error": wire.error_dict(i.error)} if i.error is not None else i.reply for i in items]


def _prepare_or_error(model, item: Item) -> None:
    try:
        _prepare(model, item)
    except MedError as exc:
        item.error = exc


def _prepare(model, item: Item) -> None:
    kind = item.header.get("kind")
    if kind not in wire.KINDS:
        raise InvalidInputError(f"request kind {kind!r}", expected=f"one of {', '.join(wire.KINDS)}",
                                fix="use medexport's remote model (open_bundle('triton://...'))")
    if item.header.get("protocol") != wire.PROTOCOL:
        raise InvalidInputError(f"request protocol {item.header.get('protocol')!r}",
                                expected=f"protocol {wire.PROTOCOL}",
                                fix="use the same medexport version on the server and the client")
    if kind == "info":
        item.reply = {"info": info(model)}
        return
    if kind == "tensor":
        batch = wire.npy_array(item.payload)
        expected = tuple(model.manifest.input.shape[1:])
        if batch.ndim != len(expected) + 1 or tuple(batch.shape[1:]) != expected:
            raise InvalidInputError(f"batch has shape {batch.shape}", expected=f"(N, {', '.join(map(str, expected))})",
                                    fix="preprocess inputs with the bundle's preprocessing (model.predict does)")
        item.feeds, item.rows = np.ascontiguousarray(batch, np.float32), len(batch)
        return
    options = item.header.get("options", {})
    if kind == "array":
        item.prepared = model.prepare(wire.npy_array(item.payload), **options)
    else:
        item.prepared = _prepare_file(model, item, options)
    item.feeds = item.prepared.feeds[model.manifest.input.name]
    item.rows = len(item.feeds)


def _prepare_file(model, item: Item, options: dict):
    """The file's bytes, read from a private temporary file named like the client's file."""
    name = PurePath(str(item.header.get("name", "study"))).name or "study"
    folder = tempfile.mkdtemp(prefix="medexport-serve-")
    path = Path(folder) / name
    try:
        path.write_bytes(item.payload)
        return model.prepare(str(path), **options)  # readers load the study into memory
    finally:
        path.unlink(missing_ok=True)
        os.rmdir(folder)


def _finish(model, item: Item, outputs: dict) -> dict:
    if item.header["kind"] == "tensor":
        return {"outputs": outputs, "scores": model.task.scores(outputs)}
    return {"result": model.finish(item.prepared, outputs, item.infer_ms)}


def info(model) -> dict:
    """What a client needs to know about a served model before it sends studies."""
    m = model.manifest
    return {"protocol": wire.PROTOCOL, "model_id": m.model_id, "model_version": m.model_version,
            "task": model.task.name, "study_kind": model.task.study_kind, "labels": list(m.labels),
            "input_shape": list(m.input.shape), "provenance": model.provenance,
            "options": [f for f in model.task.options_type.__dataclass_fields__],
            "golden_tolerance": model.task.golden_tolerance.get(model.precision)}
