"""Keep the inference runtimes offline: no telemetry, no client ids, no files outside medexport's folders.

ONNX Runtime (>= 1.29, POSIX) writes a device id and an event queue under
``~/.cache/Microsoft/DeveloperTools`` and may upload events unless ``ORT_DISABLE_TELEMETRY=1``,
which it reads once, at import.

OpenVINO's ``import openvino`` imports its model converter (``openvino.tools.ovc``), which starts
``openvino_telemetry``: it writes ``~/intel/openvino_ga_cid`` (a persistent client id) and
``~/intel/stats``, and sends a Google Analytics event from a forked child (a DNS query, then
HTTPS). That package has no environment switch (only ``CI=true`` or a consent file under
``~/intel``, itself a file outside our folders); ovc falls back to its own no-op stub when the
package cannot be imported, so it is made unimportable in this process. nncf (build side) does
the same fallback.

Both must happen before the runtime is imported: the engine calls :func:`runtimes_offline` when
it is imported, before every backend load, and the viewer calls it at start.
"""
from __future__ import annotations

import os
import sys

BLOCKED = ("openvino_telemetry",)


def runtimes_offline() -> list[str]:
    """Switch telemetry off for the runtimes not imported yet; return those already imported with it
    (too late to switch off in this process), so a caller can say so."""
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"
    late = [name for name in BLOCKED if sys.modules.get(name) is not None]
    for name in BLOCKED:
        sys.modules.setdefault(name, None)  # None in sys.modules: "import openvino_telemetry" raises ImportError
    return late
