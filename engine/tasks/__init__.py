"""The task registry: the one place where a bundle's task name meets its behaviour."""
from __future__ import annotations

from ..errors import BundleError
from .base import EcgOptions, ImageOptions, MeasureOptions, Task, item_scores
from .classification import ClassificationTask
from .detection import DetectionTask
from .ecg_rhythm import EcgRhythmTask
from .fetal_head import FetalHeadTask
from .segmentation import SegmentationTask
from .volume_segmentation import VolumeSegmentationTask

TASKS: dict[str, type[Task]] = {t.name: t for t in (ClassificationTask, EcgRhythmTask, SegmentationTask,
                                                     DetectionTask, FetalHeadTask, VolumeSegmentationTask)}

__all__ = ["TASKS", "EcgOptions", "ImageOptions", "MeasureOptions", "Task", "item_scores", "task_class", "task_for"]


def task_class(name: str) -> type[Task]:
    try:
        return TASKS[name]
    except KeyError:
        raise BundleError(f"bundle task {name!r} is not supported by this engine",
                          expected=f"one of {sorted(TASKS)}", fix="upgrade medexport") from None


def task_for(manifest, artifact=None) -> Task:
    """The task of a bundle; ``artifact``: the one that runs (its checked reduced decode applies)."""
    return task_class(manifest.task)(manifest, artifact.decode_margin if artifact else 0)
