"""medexport.engine: the clinic runtime. Opens bundles and turns studies into results.

Imports neither torch nor Qt; heavy runtimes load only when a backend is used.
"""
import os

# ONNX Runtime >= 1.29 has POSIX telemetry: at import it writes a device id and an event queue
# under ~/.cache/Microsoft/DeveloperTools and may upload events. Clinic machines get none of that;
# it reads this variable once, at import, so it is set before any backend loads.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from .bundle import Model, open_bundle, read_manifest
from .errors import (BackendUnavailableError, BundleError, ConfigurationError, ExportError,
                     InvalidInputError, MedError, ValidationError)
from .results import DISCLAIMER, ClassificationResult

__all__ = ["open_bundle", "read_manifest", "Model", "ClassificationResult", "DISCLAIMER", "MedError",
           "InvalidInputError", "BundleError", "BackendUnavailableError", "ConfigurationError",
           "ExportError", "ValidationError"]
