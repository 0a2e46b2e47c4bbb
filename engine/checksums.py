"""SHA-256 of files: bundle checksums, input hashes for the audit trail, weights provenance."""
from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_files(paths) -> str:
    """One hash over several files in the given order (e.g. a WFDB record's .hea + .dat + .atr)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()
