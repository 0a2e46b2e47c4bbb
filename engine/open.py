"""Open a bundle by its address: a bundle folder or .zip (:class:`~.model.Model`) or a model
served by ``medexport serve`` (``triton://``, :mod:`.remote`), and self-test a whole bundle.
The one engine module above both runners: nothing below it imports it."""
from __future__ import annotations

from .backends import BACKENDS
from .bundle_read import read_manifest
from .errors import ConfigurationError
from .model import Model
from .selftest import SelfTest


def open_bundle(path, backend: str = "auto", precision: str = "auto", **options) -> Model:
    """Open a bundle folder (or .zip), verifying every checksum and its signature before anything is loaded.

    ``trust``: a TrustPolicy, or public keys (files or folders) that may sign bundles; default
    ``$MEDEXPORT_TRUST`` or ``<data folder>/trust``. A present signature is always checked (a
    mismatch is refused); unsigned or untrusted bundles are refused with a trust store unless
    ``allow_unsigned=True`` (``model.signature``). See engine/trust_policy.py. ``triton://host:port/model``: a model served by
    ``medexport serve`` (engine/remote.py).
    """
    if isinstance(path, str) and path.startswith("triton://"):
        from .remote import open_remote
        return open_remote(path, backend, precision, **options)
    return Model(path, backend, precision, **options)


def self_test_bundle(path, *, every_artifact: bool = True, threads: int = 4, reference=None,
                     **open_options) -> list[SelfTest]:
    """Self-test a bundle: every artifact whose runtime runs here (the others come back skipped),
    or with ``every_artifact=False`` the one ``open_bundle`` would choose. A ``triton://`` address:
    the artifact its server runs, with the golden inputs from the server or from ``reference``, a
    local copy of the served bundle."""
    from .remote import is_remote

    if is_remote(path):
        with open_bundle(path, **open_options) as model:
            return [model.self_test(threads, reference=reference)]
    if reference is not None:
        raise ConfigurationError(f"a local copy ({reference}) for the local bundle {path}",
                                 expected="a local copy only for a served model (triton://...)",
                                 fix="leave it out: a local bundle's golden inputs are its own")
    if not every_artifact:
        with open_bundle(path, **open_options) as model:
            return [model.self_test(threads)]
    manifest, _, _ = read_manifest(path)
    out = []
    for artifact in manifest.artifacts:
        backend = next((b for b in BACKENDS.values() if artifact.target in b.targets), None)
        reason = "no runtime for this target" if backend is None else backend.unavailable_reason()
        if reason:
            out.append(SelfTest(manifest.model_id, artifact.target, artifact.precision, skipped=reason))
            continue
        with open_bundle(path, backend=backend.name, precision=artifact.precision, **open_options) as model:
            out.append(model.self_test(threads))
    return out
