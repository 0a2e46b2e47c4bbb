"""Which publishers' bundles the viewer opens (Qt-free).

The trust store is the public keys shipped with the app (``desktop/trust/``: the demo key,
NOT for clinical use), the clinic's own in ``<data folder>/trust/`` and ``$MEDEXPORT_TRUST``.
Unsigned or untrusted bundles are refused unless the clinic's settings say
``allow_unsigned_bundles=true``; ``trust_demo_key=false`` drops the shipped demo key. Both live
in ``[General]`` of ``viewer.ini`` in the data folder (the file the viewer's QSettings use).
"""
from __future__ import annotations

import configparser
import os
from pathlib import Path

from medexport.engine.errors import ConfigurationError
from medexport.engine.signing import KEY_SUFFIXES, TRUST_ENV

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


def _has_keys(folder: Path) -> bool:
    return folder.is_dir() and any(p.suffix in KEY_SUFFIXES for p in folder.iterdir())


def trust_sources() -> list[Path]:
    sources = [SHIPPED] if setting("trust_demo_key", True) and _has_keys(SHIPPED) else []
    clinic = data_dir() / "trust"
    if _has_keys(clinic):
        sources.append(clinic)
    sources += [Path(p) for p in os.environ.get(TRUST_ENV, "").split(os.pathsep) if p]
    return sources


def open_options() -> dict:
    """Keyword arguments for ``open_bundle`` / ``check_signature`` under the viewer's policy.

    The viewer never falls back to 'no trust store, accept anything': without a trusted key and
    without the clinic allowing unsigned bundles it refuses to open any.
    """
    sources, allow = trust_sources(), setting("allow_unsigned_bundles", False)
    if not sources and not allow:
        raise ConfigurationError("the viewer has no trusted signing keys, so it opens no bundle",
                                 fix=f"put your publishers' public keys (*.pub.pem) in {data_dir() / 'trust'}, "
                                     f"or set allow_unsigned_bundles=true in [General] of {data_dir() / SETTINGS}")
    return {"trust": sources, "allow_unsigned": allow}


def served_models() -> list[str]:
    """``served_models`` in viewer.ini: ``triton://host:port/model`` addresses, separated by spaces
    or commas. When given, the viewer runs these models on the server instead of local bundles."""
    return (_general("served_models") or "").replace(",", " ").split()


def model_options() -> dict:
    """``open_options`` plus the clinic's strict mode: ``refuse_outside_intended_use=true`` in
    viewer.ini (or ``$MEDEXPORT_STRICT=1``) refuses studies outside a bundle's intended use."""
    from medexport.engine.screening import strict_default

    return open_options() | {"strict": setting("refuse_outside_intended_use", strict_default())}
