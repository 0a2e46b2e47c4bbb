"""Bundle signatures: who built a bundle, not only that it is intact.

Checksums in the manifest prove integrity; anyone can recompute them. A signature proves
origin: ``medexport build --sign-key KEY.pem`` (or ``medexport sign``) signs the finished bundle
folder with an ECDSA key using OpenSSF model signing (``model-signing``, key-based, offline) and
writes ``bundle.sig`` (a Sigstore bundle) into it.

A present signature is always checked against every file it covers (``verify_signature``):
with the trust store's key when the signer is in it, else with the key recovered from the
signature itself (engine/trust_recover.py), which must hash to the key id the file names. A
signature that does not match is refused everywhere. Whether the signer is trusted is the
separate question engine/trust_policy.py answers (the one policy of every entry point).
``model_signing`` and ``cryptography`` are imported only when a signature is made or checked.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import BundleError, ConfigurationError

SIGNATURE = "bundle.sig"
TRUST_ENV = "MEDEXPORT_TRUST"
MAX_SIGNATURE_BYTES = 1 << 20
KEY_SUFFIXES = (".pem", ".pub", ".crt", ".cer")


@dataclass(frozen=True)
class TrustedKey:
    name: str  # the file's name without suffixes, or a certificate's subject
    fingerprint: str  # SHA-256 of the public key's PEM (SubjectPublicKeyInfo): model-signing's key id
    pem: bytes  # the public key, PEM
    source: Path
    key_file: Path | None = None  # ``source`` when it is a plain public key PEM (model-signing reads files)


@dataclass(frozen=True)
class Signature:
    """What ``open_bundle`` found out about who signed a bundle."""

    signed: bool
    fingerprint: str | None = None
    signer: str | None = None  # the trusted key's name; None when the signer is not trusted
    trusted: bool = False  # the signer's key is in the trust store
    valid: bool = False  # the signature was checked and matches every file of the bundle
    store: bool = True  # a trust store was configured (False: "no trust store")

    def describe(self) -> str:
        if not self.signed:
            return "unsigned"
        if self.trusted:
            return f"signed by {self.signer} (key {self.fingerprint[:16]}): signature valid, signer trusted"
        why = "not in the trust store" if self.store else "no trust store"
        return f"signed by key {self.fingerprint[:16]}: signature valid, signer not trusted ({why})"

    def to_dict(self) -> dict:
        return {"signed": self.signed, "fingerprint": self.fingerprint, "signer": self.signer,
                "trusted": self.trusted}


# -- keys --------------------------------------------------------------------------------------
def _public_key_pem(public_key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def fingerprint_of(public_key_pem: bytes) -> str:
    return hashlib.sha256(public_key_pem).hexdigest()


def read_key(path: Path) -> TrustedKey:
    """A public key or an X.509 certificate (PEM) as a trust-store entry."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    path = Path(path)
    data = path.read_bytes()
    name = path.name.split(".")[0]
    key_file = None
    try:
        if b"BEGIN CERTIFICATE" in data:
            cert = x509.load_pem_x509_certificate(data)
            key = cert.public_key()
            name = cert.subject.rfc4514_string() or name
        else:
            key, key_file = serialization.load_pem_public_key(data), path
    except ValueError as exc:
        raise ConfigurationError(f"trust store file {path} is not a PEM public key or certificate ({exc})",
                                 fix="put only public keys (*.pub.pem) or certificates in the trust store") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
        raise ConfigurationError(f"trust store file {path} holds a {type(key).__name__}",
                                 expected="an ECDSA P-256/P-384/P-521 public key (what 'medexport keygen' writes)")
    pem = _public_key_pem(key)
    return TrustedKey(name, fingerprint_of(pem), pem, path, key_file)


def load_trust(sources) -> list[TrustedKey]:
    """Keys from PEM files, folders of them, or TrustedKey objects; a source that does not exist is an error."""
    keys: list[TrustedKey] = []
    for source in [sources] if isinstance(sources, (str, os.PathLike, TrustedKey)) else sources:
        if isinstance(source, TrustedKey):
            keys.append(source)
            continue
        source = Path(source)
        if source.is_dir():
            files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix in KEY_SUFFIXES)
            if not files:
                raise ConfigurationError(f"trust store folder {source} holds no keys",
                                         expected=f"public keys or certificates ({', '.join(KEY_SUFFIXES)})",
                                         fix="add the publisher's public key, or remove the folder")
            keys += [read_key(p) for p in files]
        elif source.is_file():
            keys.append(read_key(source))
        else:
            raise ConfigurationError(f"trust store {source} does not exist",
                                     fix=f"point --trust / ${TRUST_ENV} to a public key or a folder of them")
    return keys


def generate_key_pair(folder, name: str = "medexport-signing") -> tuple[Path, Path]:
    """An ECDSA P-256 pair: ``NAME.key.pem`` (private, mode 0600) and ``NAME.pub.pem``; never overwrites."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    folder = Path(folder)
    private, public = folder / f"{name}.key.pem", folder / f"{name}.pub.pem"
    taken = [str(p) for p in (private, public) if p.exists()]
    if taken:
        raise ConfigurationError(f"{', '.join(taken)} already exist(s)", fix="choose another folder or --name")
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    public.write_bytes(_public_key_pem(key.public_key()))
    return private, public


# -- signing and checking ------------------------------------------------------------------------
def _hashing(*ignore: str):
    from model_signing import hashing

    return hashing.Config().use_file_serialization(hashing_algorithm="sha256", allow_symlinks=False) \
        .set_ignored_paths(paths=[SIGNATURE, *ignore], ignore_git_paths=False)  # relative to the folder


def signing_key(private_key, password: str | None = None) -> TrustedKey:
    """Load a signing key (checked before a long build starts); returns its public half."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private_key = Path(private_key)
    try:
        key = serialization.load_pem_private_key(private_key.read_bytes(), password.encode() if password else None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigurationError(f"cannot read signing key {private_key} ({exc})",
                                 expected="an unencrypted ECDSA private key in PEM",
                                 fix="create one with 'medexport keygen -o DIR'") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
        raise ConfigurationError(f"signing key {private_key} is a {type(key).__name__}",
                                 expected="an ECDSA P-256/P-384/P-521 private key", fix="use 'medexport keygen -o DIR'")
    pem = _public_key_pem(key.public_key())
    return TrustedKey(private_key.name.split(".")[0], fingerprint_of(pem), pem, private_key)


def sign_bundle(folder, private_key, password: str | None = None) -> Signature:
    """Sign every file of ``folder`` into ``folder/bundle.sig`` (replacing one, atomically), then
    verify it with the public half."""
    import tempfile

    from model_signing import signing

    folder = Path(folder)
    key = signing_key(private_key, password)
    fd, tmp = tempfile.mkstemp(prefix=f".{SIGNATURE}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        signing.Config().use_elliptic_key_signer(private_key=private_key, password=password) \
            .set_hashing_config(_hashing(Path(tmp).name)).sign(folder, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, folder / SIGNATURE)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return _verify(folder, key, _read_signature(folder / SIGNATURE), trusted=True)


def _read_signature(path: Path) -> str:
    """The key id recorded in ``bundle.sig``; a damaged signature file is refused."""
    problem = None
    if path.is_symlink() or not path.is_file():
        problem = "is not a regular file"
    elif path.stat().st_size > MAX_SIGNATURE_BYTES:
        problem = f"is {path.stat().st_size} bytes (at most {MAX_SIGNATURE_BYTES})"
    else:
        try:
            data = json.loads(path.read_bytes().decode("utf-8"))
            hint = data["verificationMaterial"]["publicKey"]["hint"]
            if not data["dsseEnvelope"]["signatures"]:
                problem = "holds no signature"
            elif not (isinstance(hint, str) and len(hint) == 64 and all(c in "0123456789abcdef" for c in hint)):
                problem = "names no key (verificationMaterial.publicKey.hint)"
            else:
                return hint
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, KeyError, TypeError) as exc:
            problem = f"is not a Sigstore bundle from 'medexport build --sign-key' ({type(exc).__name__}: {exc})"
    raise BundleError(f"{path} {problem}", fix="get the bundle again from its publisher")


def verify_signature(root, keys: list[TrustedKey]) -> Signature:
    """Check ``root/bundle.sig`` against every file, whoever signed it; a mismatch is a BundleError.

    The signer is trusted when its key id is one of ``keys``; otherwise its key is recovered from
    the signature (it must hash to the key id ``bundle.sig`` names) and the result is valid, not trusted.
    """
    root = Path(root)
    fingerprint = _read_signature(root / SIGNATURE)
    match = next((k for k in keys if k.fingerprint == fingerprint), None)
    return _verify(root, match or _recovered_key(root, fingerprint), fingerprint, trusted=match is not None)


def _recovered_key(root: Path, fingerprint: str) -> TrustedKey:
    """The key named by ``bundle.sig``, recovered from its signature (see engine/trust_recover.py)."""
    from .trust_recover import candidate_keys

    unknown = TrustedKey("an unknown key", fingerprint, b"", root / SIGNATURE)
    try:
        pae, signature, _ = _envelope(root)
        candidates = candidate_keys(signature, pae)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:  # malformed file
        _mismatch(root, unknown, f"unreadable signature ({type(exc).__name__}: {exc})")
    for public in candidates:
        pem = _public_key_pem(public)
        if fingerprint_of(pem) == fingerprint:
            return TrustedKey("an unknown key", fingerprint, pem, root / SIGNATURE)
    _mismatch(root, unknown, "the signature does not match its statement or its key id")


def _verify(root: Path, key: TrustedKey, fingerprint: str, trusted: bool) -> Signature:
    """Check ``bundle.sig`` with ``key`` over every file in ``root``; any mismatch is a BundleError.

    The check is the OpenSSF model-signing v1 format read with ``cryptography`` alone (the clinic
    app ships without model-signing and its Sigstore client stack): the DSSE envelope's ECDSA
    signature over its in-toto statement, then every file's SHA-256 against the statement's list.
    ``model_signing verify key`` accepts the same files (tests/test_bundle_trust.py).
    """
    statement = _signed_statement(root, key)
    listed = {}
    try:
        for item in statement["predicate"]["resources"]:
            if item["algorithm"] != "sha256":
                raise KeyError(f"algorithm {item['algorithm']}")
            listed[item["name"]] = item["digest"]
    except (KeyError, TypeError) as exc:
        _mismatch(root, key, f"the signed statement is not a model-signing v1 file list ({exc})")
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != SIGNATURE}
    if present != set(listed):
        extra, missing = sorted(present - set(listed)), sorted(set(listed) - present)
        _mismatch(root, key, f"files not signed: {extra[:5]}; signed files missing: {missing[:5]}")
    from .checksums import sha256_file

    changed = sorted(name for name, digest in listed.items() if sha256_file(root / name) != digest)
    if changed:
        _mismatch(root, key, f"changed after signing: {', '.join(changed[:5])}")
    return Signature(True, fingerprint, key.name if trusted else None, trusted, valid=True)


def _envelope(root: Path) -> tuple[bytes, bytes, bytes]:
    """``bundle.sig``'s DSSE envelope: (the signed bytes (PAE), the DER signature, the payload)."""
    import base64

    envelope = json.loads((root / SIGNATURE).read_bytes())["dsseEnvelope"]
    payload = base64.b64decode(envelope["payload"], validate=True)
    kind = envelope["payloadType"].encode()
    signature = base64.b64decode(envelope["signatures"][0]["sig"], validate=True)
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload), signature, payload  # DSSE PAE


def _signed_statement(root: Path, key: TrustedKey) -> dict:
    """The in-toto statement of ``bundle.sig``, once its DSSE signature checks out with ``key``."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        pae, signature, payload = _envelope(root)
        public = serialization.load_pem_public_key(key.pem)
        digest = {"secp256r1": hashes.SHA256(), "secp384r1": hashes.SHA384(), "secp521r1": hashes.SHA512()}[
            public.curve.name]
        public.verify(signature, pae, ec.ECDSA(digest))
        return json.loads(payload)
    except InvalidSignature:
        _mismatch(root, key, "the signature does not match its statement")
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:  # malformed file or key
        _mismatch(root, key, f"unreadable signature ({type(exc).__name__}: {exc})")


def _mismatch(root: Path, key: TrustedKey, detail: str):
    raise BundleError(f"{root}: the signature by {key.name} (key {key.fingerprint[:16]}) does not match the "
                      f"bundle ({detail[:300]})", expected="the files exactly as their publisher signed them",
                      fix="the bundle was changed after signing: get it again from its publisher")


def check_signature(root, trust=None, allow_unsigned: bool = False) -> Signature:
    """The trust policy's verdict on the bundle at ``root`` (engine/trust_policy.py)."""
    from .trust_policy import check_signature as check

    return check(root, trust, allow_unsigned)
