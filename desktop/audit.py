"""Append-only audit log of every inference (JSON lines).

No patient data: file names are often patient names (``Jane_Doe_1234.dcm``), so an entry
identifies its input by the SHA-256 of the file and, for DICOM, by the Study / SOP Instance
UIDs; never by a file name or a path.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from medexport.engine.jsonl import JsonLines

from .paths import data_dir

UIDS = {"study_uid": "StudyInstanceUID", "sop_instance_uid": "SOPInstanceUID"}


def audit_path() -> Path:
    return data_dir() / "audit.jsonl"


def entry(result, *, user_action: str = "predict") -> dict:
    """The line recorded for ``result`` (a classification, segmentation or ECG result)."""
    meta = getattr(result, "input_meta", None) or {}
    line = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "action": user_action,
            "input_sha256": result.input_sha256,
            "model_id": result.model_id, "model_version": result.model_version,
            "bundle_sha256": result.bundle_sha256, "backend": result.backend, "precision": result.precision,
            "scores": {k: round(float(v), 6) for k, v in result.scores.items()},
            "infer_ms": round(result.timings_ms.get("infer", 0.0), 3)}
    line.update({key: str(meta[tag]) for key, tag in UIDS.items() if meta.get(tag)})
    return line


def record(result, *, user_action: str = "predict") -> dict:
    """Append one line for ``result``, whole and on disk (engine/jsonl.py: the listener's writer too)."""
    line = entry(result, user_action=user_action)
    _log(audit_path()).append(line)
    return line


_LOGS: dict = {}


def _log(path: Path) -> JsonLines:
    """One writer per file, so that lines lost to a full disk are counted across calls."""
    return _LOGS.setdefault(path, JsonLines(path, kind="action"))


def read_all() -> list[dict]:
    path = audit_path()
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
