"""Read and verify a bundle: confine it to its own listed files (zips checked before unpacking),
check every file's SHA-256 against the manifest. The mirror of :mod:`.bundle_write`; running a
bundle is :mod:`.model`."""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import tempfile
import time
import zipfile
import zlib
from pathlib import Path

from .backends.base import default_cache_dir
from .checksums import sha256_file
from .errors import BundleError
from .manifest import MAX_MANIFEST_BYTES, RESERVED, Manifest, relative_path


MANIFEST = "manifest.json"
MAX_BUNDLE_BYTES = 16 << 30  # all members of a zipped bundle, unpacked
STALE_UNPACK_SECONDS = 3600
MAX_ZIP_RATIO = 200  # weights compress ~1.1:1; a member over 1 MB that deflates 200:1 is a zip bomb


def read_manifest(path, *, verify: bool = True) -> tuple[Manifest, str, Path]:
    """Return (manifest, bundle sha256, bundle dir) after checking every file's SHA-256.

    The bundle's identity is the SHA-256 of its manifest, which lists every other file's hash.
    The bundle may hold nothing else: no unlisted file, no symlink, no path leaving its folder.
    """
    root = _bundle_dir(Path(path)).resolve()
    raw = _read_capped(root / MANIFEST, MAX_MANIFEST_BYTES)
    manifest = Manifest.from_json(raw)
    referenced = [p for a in manifest.artifacts for p in a.files.values()]
    referenced += [p for p in (manifest.golden, manifest.card) if p]
    referenced += [a.report for a in manifest.artifacts if a.report]
    unlisted = sorted(set(referenced) - set(manifest.files))
    if unlisted:
        raise BundleError(f"{root}: manifest references files without a checksum: {unlisted}",
                          fix="rebuild the bundle")
    _check_contents(root, manifest)
    if verify:
        for rel, expected in manifest.files.items():
            file = root / rel
            if not file.is_file():
                raise BundleError(f"{root}: file {rel} listed in the manifest is missing",
                                  fix="copy the whole bundle folder again")
            actual = sha256_file(file)
            if actual != expected:
                raise BundleError(f"{root}: {rel} has SHA-256 {actual[:12]}..., the manifest says {expected[:12]}...",
                                  expected="an unmodified bundle",
                                  fix="the file was changed or corrupted: copy the bundle again or rebuild it")
    return manifest, hashlib.sha256(raw).hexdigest(), root


def _read_capped(file: Path, limit: int) -> bytes:
    if file.is_symlink() or not file.is_file():
        raise BundleError(f"{file} is not a regular file", expected="the manifest itself, not a link",
                          fix="copy the bundle folder again")
    with open(file, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise BundleError(f"{file} is larger than {limit} bytes", expected="a manifest of a few kB",
                          fix="rebuild the bundle")
    return data


def _check_contents(root: Path, manifest: Manifest) -> None:
    """Every file in the folder is the manifest, its signature or listed; no links; nothing outside."""
    allowed = set(manifest.files) | set(RESERVED)
    extra = []
    for folder, dirs, files in os.walk(root):  # never follows links
        for entry in [Path(folder, name) for name in dirs + files]:
            if entry.is_symlink():
                raise BundleError(f"{root}: {entry.relative_to(root).as_posix()} is a symbolic link",
                                  expected="a bundle of plain files",
                                  fix="copy the bundle without links (a link can point outside the bundle)")
        extra += [rel for rel in (Path(folder, name).relative_to(root).as_posix() for name in files)
                  if rel not in allowed or not (root / rel).is_file()]
    if extra:
        raise BundleError(f"{root}: {len(extra)} file(s) not listed in the manifest: {sorted(extra)[:5]}",
                          expected="only the files the manifest lists (plus manifest.json and bundle.sig)",
                          fix="remove them, or copy the bundle again from its source")
    for rel in manifest.files:
        if not (root / rel).resolve().is_relative_to(root):
            raise BundleError(f"{root}: {rel} resolves outside the bundle", fix="copy the bundle again")


def _bundle_dir(path: Path) -> Path:
    if path.is_dir():
        if not (path / MANIFEST).is_file():
            raise BundleError(f"{path} has no {MANIFEST}", expected="a bundle folder written by 'medexport build'",
                              fix="point to the bundle folder itself")
        return path
    if path.is_file():
        if path.suffix.lower() == ".onnx":
            raise BundleError(f"{path} is an ONNX model, not a bundle", expected="a bundle folder or .zip",
                              fix=f"build a bundle from it first: medexport build {path} --task classification "
                                  f"--labels ... -o bundles/{path.stem}")
        if not zipfile.is_zipfile(path):
            raise BundleError(f"{path} is neither a bundle folder nor a zip file", expected="a bundle folder or .zip",
                              fix="point to the bundle folder or the .zip that 'medexport build' wrote")
        return _unpack_zip(path)
    raise BundleError(f"bundle {path} does not exist", expected="a bundle folder or .zip",
                      fix="build one with 'medexport build' or check the path")


def _unpack_zip(path: Path) -> Path:
    """Unpack a zipped bundle once into the cache (keyed by the zip's hash); never in place.

    The zip's manifest is read and checked first; only listed members are accepted and each is
    hashed while it is written, so a tampered, unlisted or oversized member stops the unpacking
    and nothing but a complete, verified copy is ever left in the cache.
    """
    cache = Path(default_cache_dir()) / "bundles"
    target = cache / sha256_file(path)[:16]
    if (target / MANIFEST).is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    for stale in cache.glob("*.tmp*"):  # left by a killed process (a failure cleans up after itself)
        with contextlib.suppress(FileNotFoundError):  # another process may remove it first
            if time.time() - stale.stat().st_mtime > STALE_UNPACK_SECONDS:
                shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{target.name}.tmp-", dir=cache))
    try:
        try:
            with zipfile.ZipFile(path) as zf:
                for rel, (info, expected) in _zip_members(path, zf).items():
                    _extract(zf, info, tmp / rel, expected, path)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError,
                FileExistsError) as exc:  # FileExistsError: names that differ only in case, on such disks
            raise BundleError(f"{path} is a damaged or unsupported zip ({exc})",
                              fix="copy the .zip again, or rebuild it with 'medexport build -o NAME.zip'") from None
        if target.exists() and not (target / MANIFEST).is_file():
            shutil.rmtree(target)  # an incomplete copy left by an older version
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / MANIFEST).is_file():  # another process unpacked the same zip first: use theirs
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _zip_members(path: Path, zf: zipfile.ZipFile) -> dict[str, tuple[zipfile.ZipInfo, str | None]]:
    """Check a zipped bundle's member list against its manifest before anything is extracted.

    Returns bundle-relative path -> (member, expected SHA-256 or None for the manifest/signature).
    """
    infos = zf.infolist()
    tops = [i for i in infos if i.filename.rsplit("/", 1)[-1] == MANIFEST and i.filename.count("/") <= 1]
    if len(tops) != 1:
        raise BundleError(f"{path} holds {len(tops)} {MANIFEST} at its top", expected="exactly one",
                          fix="zip the bundle folder itself (medexport build -o NAME.zip does)")
    prefix = tops[0].filename[:-len(MANIFEST)]
    if tops[0].file_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{path}: {MANIFEST} is {tops[0].file_size} bytes", expected=f"at most {MAX_MANIFEST_BYTES}")
    with zf.open(tops[0]) as fh:
        manifest = Manifest.from_json(fh.read(MAX_MANIFEST_BYTES + 1))
    members, total = {}, 0
    for info in infos:
        name = info.filename
        if info.is_dir() and prefix.startswith(name):
            continue
        rel = name[len(prefix):] if name.startswith(prefix) else name
        if not name.startswith(prefix) or _is_link(info) or info.flag_bits & 0x1:
            raise BundleError(f"{path}: member {name!r} is outside the bundle folder, a link or encrypted",
                              fix="zip the bundle folder itself (medexport build -o NAME.zip does)")
        if info.is_dir():
            relative_path(f"zip folder {name!r}", rel.rstrip("/"))
            continue
        relative_path(f"zip member {name!r}", rel)
        if rel in members or (rel not in manifest.files and rel not in RESERVED):
            raise BundleError(f"{path}: member {name!r} is {'duplicated' if rel in members else 'not listed in the manifest'}",
                              expected="only the files the manifest lists, each once", fix="rebuild the bundle")
        ratio = info.file_size / max(info.compress_size, 1)
        total += info.file_size
        if (info.file_size > 1 << 20 and ratio > MAX_ZIP_RATIO) or total > MAX_BUNDLE_BYTES or \
                (rel in RESERVED and info.file_size > MAX_MANIFEST_BYTES):
            raise BundleError(f"{path}: member {name!r} unpacks to {info.file_size} bytes from {info.compress_size}",
                              expected=f"a compression ratio below {MAX_ZIP_RATIO} and at most "
                                       f"{MAX_BUNDLE_BYTES >> 30} GiB in all", fix="this is not a bundle: delete it")
        members[rel] = (info, manifest.files.get(rel))
    missing = sorted(set(manifest.files) - set(members))
    if missing:
        raise BundleError(f"{path}: {len(missing)} file(s) listed in the manifest are missing: {missing[:5]}",
                          fix="copy the .zip again")
    return members


def _is_link(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _extract(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, expected: str | None, path: Path) -> None:
    """Write one member while hashing it; stop at its declared size and at a hash mismatch."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest, written = hashlib.sha256(), 0
    with zf.open(info) as src, open(dest, "xb") as out:
        for block in iter(lambda: src.read(1 << 20), b""):
            written += len(block)
            if written > info.file_size:
                raise BundleError(f"{path}: member {info.filename!r} is longer than it declares", fix="delete it")
            digest.update(block)
            out.write(block)
    if expected is not None and digest.hexdigest() != expected:
        raise BundleError(f"{path}: {info.filename} has SHA-256 {digest.hexdigest()[:12]}..., the manifest says "
                          f"{expected[:12]}...", expected="an unmodified bundle",
                          fix="the file was changed or corrupted: copy the bundle again or rebuild it")
