"""Tasks: preprocess(input) -> (feeds, meta) and postprocess(outputs, meta) -> result fields."""
from __future__ import annotations

from ..errors import BundleError
from .classification import ClassificationTask
from .ecg_rhythm import EcgRhythmTask
from .segmentation import SegmentationTask

TASKS = {"classification": ClassificationTask, "ecg_rhythm": EcgRhythmTask, "segmentation": SegmentationTask}


def task_for(manifest):
    try:
        return TASKS[manifest.task](manifest)
    except KeyError:
        raise BundleError(f"bundle task {manifest.task!r} is not supported by this engine",
                          expected=f"one of {sorted(TASKS)}", fix="upgrade medexport") from None
