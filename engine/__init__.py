"""medexport.engine: the clinic runtime. Opens bundles and turns studies into results.

Imports neither torch nor Qt; heavy runtimes load only when a backend is used.
"""
from .backends.offline import runtimes_offline

# ONNX Runtime and OpenVINO start telemetry when imported (device / client ids under the home
# folder, events sent to their vendors): switched off before any runtime is imported.
runtimes_offline()

from .bundle_read import read_manifest
from .model import Model
from .open import open_bundle
from .errors import (BackendUnavailableError, BundleError, ConfigurationError, ExportError,
                     InvalidInputError, MedError, ValidationError)
from .io.volume import read_volume
from .results import DISCLAIMER, ClassificationResult
from .volume import VolumeStudy

__all__ = ["open_bundle", "read_manifest", "Model", "ClassificationResult", "DISCLAIMER", "MedError",
           "InvalidInputError", "BundleError", "BackendUnavailableError", "ConfigurationError",
           "ExportError", "ValidationError", "read_volume", "VolumeStudy"]
