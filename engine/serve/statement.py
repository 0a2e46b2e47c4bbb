"""What a server states about the bundle behind one of its models, for ``medexport inspect`` and
``medexport selftest`` on ``triton://`` addresses (the ``describe`` and ``golden`` requests).

Every file is read again from the opened bundle and checked against the manifest's SHA-256 (and
the manifest against the bundle's), so the server never states something other than what it
verified when it opened the bundle. No server path travels: only names inside the bundle.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np

from ..bundle_read import MANIFEST
from ..errors import BundleError


def describe(model) -> dict:
    """The manifest as written (the client re-hashes it against ``sha256``), the signature check,
    each artifact's validation report and size, the model card, and what this server runs."""
    m = model.manifest
    raw = _verified(model, MANIFEST, model.sha256)
    reports = {a.key: json.loads(_read(model, a.report)) for a in m.artifacts if a.report}
    sizes = {a.key: sum((model.path / p).stat().st_size for p in a.files.values()) for a in m.artifacts}
    return {"manifest": raw.decode("utf-8"), "sha256": model.sha256,
            "signature": model.signature.to_dict() | {"describe": model.signature.describe()},
            "reports": reports, "sizes": sizes, "card": _read(model, m.card).decode("utf-8") if m.card else None,
            "artifact": model.artifact.key, "strict": model.strict}


def golden(model) -> dict:
    """The bundle's golden.npz as stored (the client checks it against the manifest's SHA-256)."""
    if not model.manifest.golden:
        raise BundleError(f"bundle {model.manifest.model_id} carries no golden inputs", fix="rebuild the bundle")
    return {"npz": np.frombuffer(_read(model, model.manifest.golden), np.uint8)}


def _read(model, rel: str) -> bytes:
    return _verified(model, rel, model.manifest.files[rel])


def _verified(model, rel: str, expected: str) -> bytes:
    data = (model.path / rel).read_bytes()
    if hashlib.sha256(data).hexdigest() != expected:
        raise BundleError(f"the served bundle's {rel} changed since the server opened it",
                          expected="the bundle the server verified at start",
                          fix="restore the bundle and restart the server (medexport serve)")
    return data
