"""Pieces every training recipe shares: seeding, splits, threshold choice, records and cards."""
from __future__ import annotations

import json
import os
import platform
import random
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from medexport.engine.compare import sens_spec


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out) with ``fraction`` of every class held out."""
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n = int(round(len(idx) * fraction))
        held.append(idx[:n])
        keep.append(idx[n:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


def youden_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """Threshold maximising sensitivity + specificity - 1 (ties: the lower threshold)."""
    candidates = np.unique(np.round(scores, 4))
    best = max(candidates, key=lambda t: (sum(sens_spec(labels, scores, t)) - 1, -t))
    return round(float(best), 4)


def balanced_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """Threshold maximising balanced accuracy (sensitivity + specificity) / 2, which does not depend
    on the class mix; among tied thresholds, the middle one (midway between the tied extremes)."""
    candidates = np.unique(np.round(scores, 4))
    values = np.array([sum(sens_spec(labels, scores, t)) for t in candidates])
    tied = candidates[values >= values.max() - 1e-12]
    return round(float((tied.min() + tied.max()) / 2), 4)


def save_weights(model, config) -> str:
    """Write the state dict atomically to the registry's weights path; return its SHA-256."""
    import torch

    from medexport.engine.checksums import sha256_file

    config.weights_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = config.weights_path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, config.weights_path)
    return sha256_file(config.weights_path)


def write_atomic(path: Path, data: bytes | str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def training_environment() -> dict:
    import torch

    return {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "threads": torch.get_num_threads(),
            "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def save_record(config, record: dict) -> None:
    write_atomic(config.metrics_path, json.dumps(record, indent=2, sort_keys=True) + "\n")


# card sections measured by other scripts (robustness report, ECG lead study): a recipe that
# rewrites the card carries them over instead of dropping them
KEPT_SECTIONS = ("## Leads", "## Robustness")


def publish(config, record: dict, card: str) -> dict:
    """Write the metrics record (read by the registry and bundles) and the model card."""
    save_record(config, record)
    write_atomic(config.card_path, card + kept_sections(config.card_path, card))
    return record


def kept_sections(card_path, new_card: str) -> str:
    """The KEPT_SECTIONS of the card on disk that ``new_card`` lacks, as text to append."""
    if not card_path.is_file():
        return ""
    old = card_path.read_text()
    out = []
    for heading in KEPT_SECTIONS:
        if heading in new_card or heading not in old:
            continue
        body = old[old.index(heading):]
        nxt = body.find("\n## ", len(heading))
        out.append(body if nxt < 0 else body[:nxt + 1])
    return "".join("\n" + part.rstrip() + "\n" for part in out)


def fmt_metric(m: dict) -> str:
    lo, hi = m["ci95"]
    return f"{m['value']:.3f} (95 % CI {lo:.3f}-{hi:.3f})"
