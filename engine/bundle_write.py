"""Write a bundle folder atomically: staging folder, checksums, manifest last, rename (build and calibrate)."""
from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

from .checksums import sha256_file
from .errors import ConfigurationError
from .manifest import RESERVED


def staging_dir(out: Path, overwrite: bool) -> Path:
    """A fresh hidden folder beside ``out`` (same filesystem, so the final rename is atomic)."""
    if out.exists() and not overwrite:
        raise ConfigurationError(f"{out} already exists", fix="choose another -o path or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.building-*"):  # left by a build that died (crash, kill)
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    stage = out.parent / f".{out.name}.building-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    return stage


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def checksums(stage: Path) -> dict:
    """SHA-256 of every file but the manifest and its signature (which cannot list themselves)."""
    return {p.relative_to(stage).as_posix(): sha256_file(p) for p in sorted(stage.rglob("*"))
            if p.is_file() and p.relative_to(stage).as_posix() not in RESERVED}


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def write_manifest(stage: Path, manifest_json: str) -> None:
    """Written last: a folder without a manifest is never mistaken for a bundle."""
    (stage / "manifest.json").write_text(manifest_json)


def finish(stage: Path, out: Path) -> Path:
    """Move the staged, verified bundle into place (zip it when ``out`` ends in .zip)."""
    if out.suffix == ".zip":
        tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in sorted(stage.rglob("*")):
                if p.is_file():
                    zf.write(p, p.relative_to(stage))
        os.replace(tmp, out)
        shutil.rmtree(stage)
        return out
    if out.exists():  # --overwrite: swap, then remove the old bundle
        old = out.with_name(f".{out.name}.old{os.getpid()}")
        os.replace(out, old)
        os.replace(stage, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(stage, out)
    return out

