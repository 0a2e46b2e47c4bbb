"""GPU tests run wherever an NVIDIA GPU and TensorRT exist, and skip cleanly elsewhere."""
from pathlib import Path

import pytest

from medexport.engine.backends.tensorrt import TensorRTBackend

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    mine = [i for i in items if HERE in Path(str(i.fspath)).parents]
    reason = TensorRTBackend.unavailable_reason() if mine else None
    if reason:
        for item in mine:
            item.add_marker(pytest.mark.skip(reason=f"TensorRT path not runnable here: {reason}"))
