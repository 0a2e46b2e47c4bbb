"""What a compile step may use, typed: the build hands one of these to every step."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class CompileContext:
    emit: Callable[[str], None]  # progress lines (the build's log)
    golden_inputs: np.ndarray  # real studies, preprocessed: on-target checks while compiling
    golden_tolerance: float  # largest disagreement with the source allowed on them
    calib_inputs: np.ndarray | None = None  # int8 only
    val_inputs: np.ndarray | None = None  # with --val: labelled data for the guarded metric
    val_metric: Callable | None = None  # ``val_metric(run, inputs=None) -> float`` of the guard
    metric_name: str = ""
    max_drop: float | None = None  # the guard's budget on that metric

    def with_tolerance(self, tolerance: float) -> "CompileContext":
        from dataclasses import replace

        return replace(self, golden_tolerance=tolerance)
