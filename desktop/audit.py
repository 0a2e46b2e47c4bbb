"""Append-only audit log of every inference (JSON lines); no patient names, only hashes."""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

from .paths import data_dir


def audit_path() -> Path:
    return data_dir() / "audit.jsonl"


def record(result, *, user_action: str = "predict") -> dict:
    """Append one line for ``result`` (a ClassificationResult or EcgRhythmResult)."""
    entry = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "action": user_action,
             "input_sha256": result.input_sha256, "input_name": Path(result.source).name,
             "model_id": result.model_id, "model_version": result.model_version,
             "bundle_sha256": result.bundle_sha256, "backend": result.backend, "precision": result.precision,
             "scores": {k: round(float(v), 6) for k, v in result.scores.items()},
             "infer_ms": round(result.timings_ms.get("infer", 0.0), 3)}
    line = json.dumps(entry, sort_keys=True) + "\n"
    with open(audit_path(), "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())
    return entry


def read_all() -> list[dict]:
    path = audit_path()
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
