"""Backend registry: which runtimes exist, which can run here, and in what order to try them."""
from __future__ import annotations

from ..errors import BackendUnavailableError, ConfigurationError, suggest
from .base import Backend
from .onnxruntime import ONNXRuntimeBackend
from .openvino import OpenVINOBackend
from .tensorrt import TensorRTBackend

# Best first: TensorRT where an NVIDIA GPU and TensorRT exist, then the CPU runtimes.
BACKENDS: dict[str, type[Backend]] = {b.name: b for b in (TensorRTBackend, OpenVINOBackend, ONNXRuntimeBackend)}


def get_backend(name: str) -> type[Backend]:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ConfigurationError(f"unknown backend {name!r}.{suggest(name, BACKENDS)}",
                                 expected=f"one of {', '.join(BACKENDS)} or 'auto'") from None


def available_backends() -> list[str]:
    """Names of the backends that can run on this machine, best first."""
    return [name for name, cls in BACKENDS.items() if cls.unavailable_reason() is None]


def choose_artifact(manifest, backend: str = "auto", precision: str = "auto"):
    """Pick (backend class, artifact) for a bundle.

    ``auto`` takes the best backend that is installed, runs on this hardware and has an
    artifact in the bundle. An explicit choice that cannot run is an error, never a
    silent fallback.
    """
    if backend != "auto":
        cls = get_backend(backend)
        cls.require()
        candidates = [cls]
    else:
        default = available_backends()
        # GPU backends keep their lead; among the rest the bundle's measured preference comes first
        rank = {name: i for i, name in enumerate(manifest.backend_preference)}
        runnable = sorted(default, key=lambda n: (n != "tensorrt", rank.get(n, len(rank)), default.index(n)))
        candidates = [BACKENDS[n] for n in runnable]
        if not candidates:
            raise BackendUnavailableError("no inference runtime is installed",
                                          fix="pip install 'medexport[openvino]' or 'medexport[onnxruntime]'")
    built = sorted({a.key for a in manifest.artifacts})
    for cls in candidates:
        order = cls.precision_preference if precision == "auto" else (precision,)
        for prec in order:
            for target in cls.targets:
                artifact = manifest.artifact(target, prec)
                if artifact is not None:
                    return cls, artifact
    wanted = f"backend {backend!r}" + ("" if precision == "auto" else f" at precision {precision!r}")
    raise BackendUnavailableError(
        f"bundle {manifest.model_id} has no artifact for {wanted} that can run here (bundle has: {', '.join(built) or 'none'}; "
        f"runnable backends: {', '.join(available_backends()) or 'none'})",
        fix="choose one of the bundle's artifacts, or rebuild the bundle with "
            f"'medexport build {manifest.model_id} --target ...'")
