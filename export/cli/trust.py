"""``medexport verify`` (integrity, signature, signer: the trust policy's two answers) and
``medexport sign`` (sign a built bundle): parsers and handlers."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from medexport.engine.errors import BundleError, MedError

TRUST_HELP = ("public key, certificate or folder of them (repeatable; default $MEDEXPORT_TRUST, else "
              "<data folder>/trust)")


def add_parsers(sub) -> None:
    v = sub.add_parser("verify", help="check a bundle's checksums and signature, and whether its signer is trusted "
                                      "(exit 0 trusted, 1 intact but unsigned or untrusted, 2 tampered or damaged)")
    v.add_argument("bundles", nargs="+", help="bundle folders or .zip files")
    v.add_argument("--trust", action="append", help=TRUST_HELP)
    v.add_argument("--json", action="store_true", help="print the verdicts as JSON")

    s = sub.add_parser("sign", help="sign a built bundle (folder or .zip) in place; replaces an earlier signature")
    s.add_argument("bundle", help="bundle folder or .zip")
    s.add_argument("--key", required=True, help="ECDSA private key (PEM) to sign with (see 'medexport keygen')")


def verdict(path, sources) -> dict:
    """Both answers for one bundle: integrity + signature (raises when either fails), then the signer."""
    from medexport.engine import read_manifest
    from medexport.engine.trust_policy import check_signature

    manifest, sha, root = read_manifest(path)
    signature = check_signature(root, sources, allow_unsigned=True)  # a mismatch still raises
    return {"bundle": str(path), "model_id": manifest.model_id, "version": manifest.model_version, "sha256": sha,
            "files": len(manifest.files), "intact": True, **signature.to_dict(), "valid": signature.valid, "describe": signature.describe()}


def cmd_verify(args) -> int:
    """Exit 0 when every bundle is intact and signed by a trusted key, 1 when one is intact but
    unsigned or untrusted, 2 when one was changed or is damaged (checksums or signature)."""
    from medexport.engine.trust_policy import trust_policy

    policy = trust_policy(args.trust)  # a misconfigured store is an error, not 'no store'
    rows = []
    for path in args.bundles:
        try:
            row = verdict(path, policy)
        except MedError as exc:
            row = {"bundle": str(path), "intact": False, "trusted": False, "error": str(exc)}
        rows.append(row)
        if args.json:
            continue
        if not row["intact"]:
            print(f"FAIL {path}: {row['error']}")
            continue
        signed = "signature valid" if row["signed"] else "no signature"
        signer = (f"trusted ({row['signer']})" if row["trusted"] else
                  "none (unsigned)" if not row["signed"] else
                  "not trusted (" + ("not in the trust store" if policy.keys else "no trust store") + ")")
        print(f"{'OK  ' if row['trusted'] else 'WARN'} {row['model_id']} {row['version']} ({path}): integrity: "
              f"{row['files']} checksums verified, {signed}; signer: {signer}"
              + (f"; key {row['fingerprint'][:16]}" if row["signed"] else ""))
    if args.json:
        print(json.dumps(rows, indent=2))
    return 2 if not all(r["intact"] for r in rows) else 0 if all(r["trusted"] for r in rows) else 1


def cmd_sign(args) -> int:
    """Sign a built bundle; a zip is rewritten atomically, a folder gets a new bundle.sig atomically."""
    from medexport.engine import read_manifest
    from medexport.engine.bundle_write import finish
    from medexport.engine.signing import SIGNATURE, sign_bundle, signing_key, verify_signature

    signing_key(args.key)  # a wrong key fails before anything is read
    path = Path(args.bundle)
    _, _, root = read_manifest(path)  # every checksum verified first
    if (root / SIGNATURE).exists():
        try:
            verify_signature(root, [])
        except BundleError as exc:
            raise BundleError(f"{path} has a signature that does not match its files, so it is not re-signed ({exc})",
                              expected="an unchanged bundle", fix="rebuild the bundle, or get it again from its "
                              "publisher; delete bundle.sig only if you checked every file yourself") from None
    if path.is_dir():
        signature = sign_bundle(path, args.key)
    else:
        with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as tmp:
            stage = Path(tmp) / "bundle"
            shutil.copytree(root, stage)
            signature = sign_bundle(stage, args.key)
            finish(stage, path)  # written beside the zip, then moved over it
    print(f"{path}: {signature.describe()}")
    return 0


COMMANDS = {"verify": cmd_verify, "sign": cmd_sign}
