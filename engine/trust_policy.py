"""The one trust policy: which bundles open, the same in the CLI, the viewer, the listener and the server.

1. A present ``bundle.sig`` is always checked against every file it covers; one that does not
   match (or is damaged) is refused everywhere, whatever else is allowed.
2. The trust store is ``trust=`` when given, else ``$MEDEXPORT_TRUST`` (files or folders,
   ``os.pathsep``-separated), else ``<data folder>/trust/`` (``$MEDEXPORT_HOME`` or the platform's
   per-user folder: the viewer's) when it holds keys. Nothing is trusted implicitly: the demo
   publisher's key is trusted only where its public key is in the store.
3. A bundle signed by a key in the store is trusted. An unsigned bundle, or one validly signed
   by a key not in the store, opens only with ``allow_unsigned``, or, for library and CLI use
   (``required=False``), when no trust store is configured at all ("signer not trusted (no
   trust store)"). The viewer, the listener and the server require a store (``required=True``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import BundleError
from .signing import KEY_SUFFIXES, SIGNATURE, TRUST_ENV, Signature, TrustedKey, load_trust, verify_signature


@dataclass(frozen=True)
class TrustPolicy:
    """Trusted keys and what happens to bundles not signed by one of them."""

    keys: tuple[TrustedKey, ...]
    allow_unsigned: bool = False
    required: bool = False  # no trust store refuses unsigned/untrusted bundles (viewer, listener, server)

    def where(self) -> str:
        return ", ".join(sorted({str(k.source) for k in self.keys})) or "none configured"


def trust_home() -> Path:
    """``<data folder>/trust``: where the viewer, the CLI and the services look by default."""
    from .pacs.nodes import data_home

    return data_home() / "trust"


def default_trust_sources() -> list[Path]:
    """``$MEDEXPORT_TRUST``, else ``<data folder>/trust`` when it holds keys, else none."""
    if os.environ.get(TRUST_ENV):
        return [Path(p) for p in os.environ[TRUST_ENV].split(os.pathsep) if p]
    home = trust_home()
    has_keys = home.is_dir() and any(p.suffix in KEY_SUFFIXES for p in home.iterdir())
    return [home] if has_keys else []


def trust_policy(trust=None, allow_unsigned: bool = False, required: bool = False) -> TrustPolicy:
    """The policy for ``trust`` (None: the default store); a store that does not exist is an error."""
    if isinstance(trust, TrustPolicy):  # the arguments can only widen a given policy
        return replace(trust, allow_unsigned=trust.allow_unsigned or bool(allow_unsigned),
                       required=trust.required or bool(required))
    keys = load_trust(default_trust_sources() if trust is None else trust)
    return TrustPolicy(tuple(keys), bool(allow_unsigned), bool(required))


def check_signature(root, trust=None, allow_unsigned: bool = False) -> Signature:
    """The verdict on the bundle at ``root``: its Signature, or a BundleError saying why it is refused.

    ``trust``: a TrustPolicy, or trust-store sources (None: the default store).
    """
    root = Path(root)
    policy = trust_policy(trust, allow_unsigned)
    allow = policy.allow_unsigned or (not policy.keys and not policy.required)
    if (root / SIGNATURE).exists() or (root / SIGNATURE).is_symlink():
        signature = verify_signature(root, list(policy.keys))  # always, with or without a store
    else:
        signature = Signature(False)
    signature = replace(signature, store=bool(policy.keys))
    if signature.trusted or allow:
        return signature
    found = (f"signed by key {signature.fingerprint[:16]}, which is not in the trust store" if signature.signed
             else "not signed")
    if policy.keys:
        expected = f"a bundle signed by a trusted key ({', '.join(sorted({k.name for k in policy.keys}))})"
    else:
        expected = "a bundle signed by a trusted publisher; no trust store is configured"
    raise BundleError(f"{root} is {found}", expected=expected,
                      fix=f"add the publisher's public key to {trust_home()} (or ${TRUST_ENV}) if you trust them, "
                          "or allow unsigned bundles explicitly (--allow-unsigned, allow_unsigned_bundles=true in "
                          "viewer.ini, allow_unsigned=True)")
