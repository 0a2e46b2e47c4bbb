"""What ``medexport serve`` checks in every request before it joins a batch.

A request that fails a check gets its own named :class:`MedError` (what was found, what was
expected, how to fix it); the other requests of its batch go on. Bounds come from
:mod:`medexport.engine.limits`, so a served study meets the same limits as a local one.
"""
from __future__ import annotations

import json

import numpy as np

from ..errors import InvalidInputError
from ..limits import MAX_FILE_BYTES, MAX_SERIES_FILES
from . import wire

HEADER_KEYS = ("protocol", "kind", "name", "options", "files")
MAX_HEADER_BYTES = 64 * 2**10  # a header is a few short fields
MAX_SERIES_HEADER_BYTES = MAX_HEADER_BYTES + MAX_SERIES_FILES * 300  # and a series' file table (name, size per file)
MAX_NAME_CHARS = 255  # one file name (NAME_MAX)
CLIENT_FIX = "use medexport's remote model (open_bundle('triton://...')), which sends valid requests"


def header(raw: bytes) -> dict:
    """The request header as a dict of known keys with a known kind and protocol."""
    _bounded(raw, MAX_SERIES_HEADER_BYTES)
    try:
        found = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        found = None
    if not isinstance(found, dict):
        raise InvalidInputError("the request header is not a JSON object",
                                expected='{"protocol": 1, "kind": ..., "name": ..., "options": {...}}',
                                fix=CLIENT_FIX)
    unknown = sorted(set(found) - set(HEADER_KEYS))
    if unknown:
        raise InvalidInputError(f"request header key(s) {', '.join(map(repr, unknown))[:200]}",
                                expected=f"only {', '.join(HEADER_KEYS)}", fix=CLIENT_FIX)
    if found.get("protocol") != wire.PROTOCOL:
        raise InvalidInputError(f"request protocol {_short(found.get('protocol'))}", expected=f"protocol {wire.PROTOCOL}",
                                fix="use the same medexport version on the server and the client")
    if found.get("kind") not in wire.KINDS:
        raise InvalidInputError(f"request kind {_short(found.get('kind'))}", expected=f"one of {', '.join(wire.KINDS)}",
                                fix=CLIENT_FIX)
    if found["kind"] != "series":
        _bounded(raw, MAX_HEADER_BYTES)
    options(found.get("options", {}))
    if found["kind"] == "file":
        name(found.get("name", "study"))
    return found


def _bounded(raw: bytes, limit: int) -> None:
    if len(raw) > limit:
        raise InvalidInputError(f"the request header is {len(raw)} bytes", expected=f"at most {limit}",
                                fix=CLIENT_FIX)


def options(value) -> dict:
    """Per-study options: a JSON object of scalars (the task refuses names it does not take)."""
    if not isinstance(value, dict):
        raise InvalidInputError(f"the request's options are a JSON {type(value).__name__}: {_short(value)}",
                                expected="a JSON object, e.g. {\"frame\": 0}", fix="pass options as keywords")
    for key, v in value.items():
        if v is not None and not isinstance(v, (bool, int, float, str)) or isinstance(v, str) and len(v) > 100:
            raise InvalidInputError(f"option {_short(key)} is {_short(v)}",
                                    expected="a number, true/false or a short text",
                                    fix="see the option's meaning in docs/triton.md")
    return value


def name(value) -> str:
    """The study's file name: a plain name (readers go by its extension), never a path."""
    plain = isinstance(value, str) and 0 < len(value) <= MAX_NAME_CHARS and value not in (".", "..") \
        and not any(c in "/\\" or ord(c) < 32 for c in value)
    if not plain:
        raise InvalidInputError(f"the study's name is {_short(value)}",
                                expected=f"a plain file name of 1-{MAX_NAME_CHARS} characters without '/', '\\', "
                                         "control characters, '.' or '..'",
                                fix="send the file's own name (e.g. chest.dcm), not a path")
    return value


def payload(data: bytes) -> bytes:
    if not 0 < len(data) <= MAX_FILE_BYTES:
        raise InvalidInputError(f"the study is {len(data)} bytes", expected=f"1 to {MAX_FILE_BYTES} bytes",
                                fix="send one study file or array")
    return data


def array(data: bytes) -> np.ndarray:
    """A study sent as an array: numeric and not empty (the task checks its shape and size)."""
    found = wire.npy_array(payload(data))
    if found.dtype.kind not in "iuf" or found.size == 0:
        raise InvalidInputError(f"the study array is {found.dtype} with shape {found.shape}",
                                expected="a non-empty integer or floating-point array", fix="send the pixels or samples")
    return found


def tensor(data: bytes, shape: tuple) -> np.ndarray:
    """A preprocessed batch: float32 (N, *shape) with N >= 1 (``payload`` bounds its size)."""
    found = wire.npy_array(payload(data))
    if found.dtype != np.float32 or found.ndim != len(shape) + 1 or tuple(found.shape[1:]) != tuple(shape) \
            or len(found) == 0:
        raise InvalidInputError(f"the batch is {found.dtype} with shape {found.shape}",
                                expected=f"float32 (N, {', '.join(map(str, shape))}) with N >= 1",
                                fix="preprocess inputs with the bundle's preprocessing (model.predict does)")
    return found


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}... ({len(text)} characters)"
