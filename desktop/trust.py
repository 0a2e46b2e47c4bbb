"""The viewer's side of the trust policy (Qt-free): engine/trust_policy.py decides.

The viewer uses the engine's trust store (``$MEDEXPORT_TRUST``, else ``<data folder>/trust/``)
and always requires one: unsigned or untrusted bundles are refused unless the clinic sets
``allow_unsigned_bundles=true`` in ``[General]`` of ``viewer.ini`` in the data folder (the file the
viewer's QSettings use). Where no store is configured at all, the publishers' keys shipped with the
app (``desktop/trust/``: the demo key, NOT for clinical use) are the store, so the demo opens its
own bundles; once a clinic configures a store, only that store counts, as for the CLI and the services.
"""
from __future__ import annotations

import configparser
from pathlib import Path

from medexport.engine.trust_policy import TrustPolicy, trust_policy

from .paths import data_dir

SHIPPED = Path(__file__).parent / "trust"
SETTINGS = "viewer.ini"


def _general(name: str) -> str | None:
    """A raw value from ``[General]`` of viewer.ini (None when absent or the file is unreadable)."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read(data_dir() / SETTINGS, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError):
        return None
    return parser.get("General", name, fallback=None)


def setting(name: str, default: bool) -> bool:
    """A yes/no setting from ``[General]`` of viewer.ini (QSettings writes 'true'/'false')."""
    value = _general(name)
    return default if value is None else value.strip().lower() in ("true", "1", "yes")


def policy() -> TrustPolicy:
    """The engine's policy with the clinic's ``allow_unsigned_bundles``; a store is required (with
    none configured, the publishers' keys shipped with the app)."""
    allow = setting("allow_unsigned_bundles", False)
    configured = trust_policy(allow_unsigned=allow, required=True)
    if configured.keys:
        return configured
    return trust_policy(sorted(SHIPPED.glob("*.pem")), allow_unsigned=allow, required=True)


def commissioning_folder() -> Path | None:
    """Where commissioning reports are required from: ``require_commissioning=true`` in viewer.ini
    makes the viewer run only bundles a current, passing report commissions (engine/commissioning.py),
    read from ``commissioning_reports`` (default ``<data folder>/commissioning``); None: not required."""
    if not setting("require_commissioning", False):
        return None
    return Path(_general("commissioning_reports") or data_dir() / "commissioning")


def open_options() -> dict:
    """Keyword arguments for ``open_bundle`` / ``check_signature`` under the viewer's policy."""
    return {"trust": policy()}


def served_models() -> list[str]:
    """``served_models`` in viewer.ini: ``triton://host:port/model`` addresses, separated by spaces
    or commas. When given, the viewer runs these models on the server instead of local bundles."""
    return (_general("served_models") or "").replace(",", " ").split()


def model_options() -> dict:
    """``open_options`` plus the clinic's strict mode: ``refuse_outside_intended_use=true`` in
    viewer.ini (or ``$MEDEXPORT_STRICT=1``) refuses studies outside a bundle's intended use."""
    from medexport.engine.screening import strict_default

    return open_options() | {"strict": setting("refuse_outside_intended_use", strict_default())}
