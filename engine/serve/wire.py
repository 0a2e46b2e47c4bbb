"""What travels between ``medexport serve`` and a remote model: one request header and one result,
as JSON, with every field of the engine's own :class:`~medexport.engine.results.Result` kept.

Arrays travel as base64 with dtype and shape, tuples stay tuples, and only the engine's own
record classes are rebuilt (a fixed list: nothing named by the peer is imported). Errors travel
as the :class:`MedError` subclass's name and its parts, so a client raises the same error the
engine raised on the server. Needs neither pytriton nor tritonclient.
"""
from __future__ import annotations

import base64
import dataclasses
import io
import json

import numpy as np

from .. import errors
from ..errors import BundleError, MedError

PROTOCOL = 1  # bumped when a field's meaning changes; client and server refuse another
KINDS = ("file", "array", "tensor", "info", "describe", "golden", "series")  # what a request's study payload is
_ERRORS = {c.__name__: c for c in (errors.InvalidInputError, errors.BundleError, errors.BackendUnavailableError,
                                   errors.ConfigurationError, errors.ExportError, errors.ValidationError)}


def _records() -> dict[str, type]:
    """The record classes a result may hold, by name (the only classes a peer may name)."""
    from .. import results
    from ..cautions import ResultWarning
    from ..ellipse import Ellipse
    from ..ood import OodScore
    from ..preprocess import Geometry

    found = [v for v in vars(results).values() if isinstance(v, type) and dataclasses.is_dataclass(v)
             and v.__module__ == results.__name__]
    return {c.__name__: c for c in [*found, ResultWarning, OodScore, Ellipse, Geometry]}


def encode(value):
    """A JSON-ready copy of ``value`` (results, records, arrays, tuples, dicts, scalars)."""
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value)
        return {"__nd__": base64.b64encode(data.tobytes()).decode("ascii"), "dtype": data.dtype.str,
                "shape": list(data.shape)}
    if isinstance(value, np.generic):
        return value.item()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"__rec__": type(value).__name__,
                "fields": {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}}
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {"__dict__": {k: encode(v) for k, v in value.items()}}
        return {"__pairs__": [[encode(k), encode(v)] for k, v in value.items()]}
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise TypeError(f"cannot send a {type(value).__name__} in a result")  # a programming error, not input


def decode(value, records: dict | None = None):
    """Rebuild what :func:`encode` wrote; a record class outside the engine's own is refused."""
    records = _records() if records is None else records
    if isinstance(value, list):
        return [decode(v, records) for v in value]
    if not isinstance(value, dict):
        return value
    if "__nd__" in value:
        raw = base64.b64decode(value["__nd__"])
        return np.frombuffer(raw, dtype=np.dtype(value["dtype"])).reshape(value["shape"]).copy()
    if "__tuple__" in value:
        return tuple(decode(v, records) for v in value["__tuple__"])
    if "__dict__" in value:
        return {k: decode(v, records) for k, v in value["__dict__"].items()}
    if "__pairs__" in value:
        return {_hashable(decode(k, records)): decode(v, records) for k, v in value["__pairs__"]}
    if "__rec__" in value:
        cls = records.get(value["__rec__"])
        if cls is None:
            raise BundleError(f"the server sent a record of type {value['__rec__']!r}",
                              expected=f"one of the engine's own: {', '.join(sorted(records))}",
                              fix="use the same medexport version on the server and the client")
        return cls(**{k: decode(v, records) for k, v in value["fields"].items()})
    raise BundleError(f"the server sent an object with keys {sorted(value)[:5]}", expected="a medexport result",
                      fix="use the same medexport version on the server and the client")


def _hashable(key):
    return tuple(key) if isinstance(key, list) else key


def dumps(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def json_loads(data: bytes):
    try:
        return json.loads(bytes(data))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"the server's answer is not JSON ({exc})", expected="a medexport result",
                          fix="check that the address is a 'medexport serve' server") from None


def npy_bytes(array: np.ndarray) -> bytes:
    """An array as .npy bytes (no pickles)."""
    out = io.BytesIO()
    np.save(out, np.asarray(array), allow_pickle=False)
    return out.getvalue()


def npy_array(data: bytes) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise errors.InvalidInputError(f"the array payload cannot be read ({exc})", expected="a .npy array",
                                       fix="send a numeric numpy array") from None


def error_dict(exc: MedError) -> dict:
    return {"type": type(exc).__name__, "what": exc.what, "expected": exc.expected, "fix": exc.fix}


def raise_error(info: dict, where: str) -> None:
    """Raise the server's error on the client, as the same MedError subclass."""
    cls = _ERRORS.get(info.get("type"), MedError)
    raise cls(f"{where}: {info.get('what', 'the server refused the request')}", expected=info.get("expected"),
              fix=info.get("fix"))
