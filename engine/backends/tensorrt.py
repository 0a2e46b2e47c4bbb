"""TensorRT backend: engines built on the target GPU from the bundle's ONNX, then cached.

An engine is tied to the GPU model and TensorRT version that built it, so the bundle carries
a TensorRT-ready ONNX graph (FP32/FP16, or explicit-QDQ INT8) and ``build.json`` (precision
flags, shape profiles, FP32-pinned layers). The first load builds the engine and caches it
under a key of everything that matters; a cached engine whose key no longer matches is
rebuilt, never loaded blindly. Device memory, pinned host buffers and the stream come from
cuda-python (cuda.bindings); no torch.

This path has not been run in CI: CI machines have no NVIDIA GPU and TensorRT's libraries
come from NVIDIA's own package index.
"""
from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailableError
from .base import Backend, default_cache_dir
from .pool import Pool

INSTALL_HINT = ("install TensorRT 10 from NVIDIA's index (pip install --extra-index-url https://pypi.nvidia.com "
                "tensorrt-cu12) and cuda-python; or use the CPU targets openvino / onnxruntime")


def cudart():
    """cuda-python's runtime module (new layout first, then the pre-12.6 one)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        from cuda import cudart as runtime
    return runtime


def cuda_call(result):
    """cuda-python returns (error, value...): raise on error, return the value(s)."""
    err, *rest = result
    if int(err) != 0:
        raise BackendUnavailableError(f"CUDA call failed: {err}", fix="check the NVIDIA driver and GPU with nvidia-smi")
    return rest[0] if len(rest) == 1 else tuple(rest)


def gpu_identity() -> dict:
    """Name and compute capability of GPU 0 (what an engine is tied to)."""
    rt = cudart()
    count = cuda_call(rt.cudaGetDeviceCount())
    if count < 1:
        raise BackendUnavailableError("no NVIDIA GPU found", fix=INSTALL_HINT)
    props = cuda_call(rt.cudaGetDeviceProperties(0))
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return {"gpu": name.strip("\x00 "), "compute_capability": f"{props.major}.{props.minor}",
            "cuda_runtime": cuda_call(rt.cudaRuntimeGetVersion())}


def engine_key(onnx_sha256: str, settings: dict, trt_version: str, gpu: dict) -> str:
    """Everything an engine depends on; any change gives a new key (and a rebuild)."""
    ident = {"onnx": onnx_sha256, "settings": settings, "tensorrt": trt_version,
             "gpu": gpu.get("gpu"), "compute_capability": gpu.get("compute_capability")}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


def cached_engine(cache: Path, key: str, ident: dict) -> bytes | None:
    """Cached engine bytes when the identity recorded beside it matches exactly; else None."""
    engine, meta = cache / f"{key}.engine", cache / f"{key}.json"
    if not (engine.is_file() and meta.is_file()):
        return None
    try:
        recorded = json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return engine.read_bytes() if recorded == ident else None


def store_engine(cache: Path, key: str, ident: dict, data: bytes) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    for name, payload in ((f"{key}.engine", data), (f"{key}.json", json.dumps(ident, sort_keys=True).encode())):
        replace_file(cache / name, payload)


def replace_file(path: Path, data: bytes) -> None:
    """Replace a cache file whole (a unique temporary file: two loads at once cannot collide)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


class TensorRTBackend(Backend):
    name = "tensorrt"
    module = "tensorrt"
    extra = "tensorrt"
    targets = ("tensorrt",)
    precision_preference = ("int8", "fp16", "fp32")
    install_hint = INSTALL_HINT

    def __init__(self, files, *, contexts: int = 2, **kw):
        super().__init__(files, **kw)
        self.contexts = contexts  # execution contexts for concurrent calls (each holds activation memory)

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if importlib.util.find_spec("tensorrt") is None:
            return "TensorRT is not installed (its libraries come from NVIDIA's package index, not PyPI)"
        if importlib.util.find_spec("cuda") is None:
            return "cuda-python is not installed"
        try:
            import tensorrt  # noqa: F401  (the PyPI placeholder fails here without libnvinfer)
            gpu_identity()
        except BackendUnavailableError as exc:
            return str(exc)
        except Exception as exc:
            return f"TensorRT cannot load ({exc})"
        return None

    # -- lifecycle ------------------------------------------------------------------------------
    def _load(self) -> None:
        import tensorrt as trt

        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        settings = json.loads(self.files["build"].read_text())
        onnx_bytes = self.files["model"].read_bytes()
        gpu = gpu_identity()
        ident = {"onnx": hashlib.sha256(onnx_bytes).hexdigest(), "settings": settings, "tensorrt": trt.__version__,
                 "gpu": gpu["gpu"], "compute_capability": gpu["compute_capability"]}
        key = engine_key(ident["onnx"], settings, trt.__version__, gpu)
        cache = Path(self.cache_dir or os.path.join(default_cache_dir(), "tensorrt"))
        data = cached_engine(cache, key, ident)
        runtime = trt.Runtime(self._logger)
        engine = runtime.deserialize_cuda_engine(data) if data else None
        if engine is None:  # not cached, stale, or unreadable: build here, for this GPU
            data = build_engine(trt, self._logger, onnx_bytes, settings, cache, gpu)
            store_engine(cache, key, ident, data)
            engine = runtime.deserialize_cuda_engine(data)
        self._runtime = runtime
        self._bind(trt, engine)
        self.device = f"{gpu['gpu']} (compute {gpu['compute_capability']})"

    def _bind(self, trt, engine) -> None:
        """Tensor names and the pool of execution contexts for a deserialized engine."""
        self._engine = engine
        self._names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._inputs = [n for n in self._names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        # an execution context holds one call's shapes and tensor addresses: one per concurrent call
        self._pool = Pool(lambda: Slot(trt, engine, self._names, self._inputs), self.contexts, Slot.close)

    def _infer(self, feeds):
        with self._pool.take() as slot:
            return slot.run(feeds)

    def _close(self) -> None:
        self._pool.close()
        self._pool = self._engine = self._runtime = None


class Slot:
    """One execution context with its own CUDA stream and device / pinned host buffers."""

    def __init__(self, trt, engine, names: list, inputs: list):
        self.trt, self.engine, self.names, self.inputs = trt, engine, names, inputs
        self.context = engine.create_execution_context()
        self.stream = cuda_call(cudart().cudaStreamCreate())
        self.buffers = {}  # name -> (device ptr, pinned host ptr, capacity bytes)

    def buffer(self, name: str, nbytes: int):
        """Device + pinned host buffers for a tensor, reused across calls and grown when needed."""
        rt = cudart()
        have = self.buffers.get(name)
        if have and have[2] >= nbytes:
            return have
        if have:
            cuda_call(rt.cudaFree(have[0]))
            cuda_call(rt.cudaFreeHost(have[1]))
        device = cuda_call(rt.cudaMalloc(nbytes))
        host = cuda_call(rt.cudaMallocHost(nbytes))
        self.buffers[name] = (device, host, nbytes)
        return self.buffers[name]

    def run(self, feeds):
        trt, rt, ctx = self.trt, cudart(), self.context
        h2d, d2h = rt.cudaMemcpyKind.cudaMemcpyHostToDevice, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name in self.inputs:
            arr = np.ascontiguousarray(feeds[name], dtype=trt.nptype(self.engine.get_tensor_dtype(name)))
            ctx.set_input_shape(name, arr.shape)
            device, host, _ = self.buffer(name, arr.nbytes)
            ctypes.memmove(host, arr.ctypes.data, arr.nbytes)
            cuda_call(rt.cudaMemcpyAsync(device, host, arr.nbytes, h2d, self.stream))
            ctx.set_tensor_address(name, device)
        outputs = {}
        for name in self.names:
            if name in self.inputs:
                continue
            shape = tuple(ctx.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            nbytes = int(np.prod(shape)) * dtype.itemsize
            device, host, _ = self.buffer(name, nbytes)
            ctx.set_tensor_address(name, device)
            outputs[name] = (shape, dtype, device, host, nbytes)
        if not ctx.execute_async_v3(self.stream):
            raise BackendUnavailableError("TensorRT execution failed", fix="rebuild the engine (clear the cache)")
        for name, (shape, dtype, device, host, nbytes) in outputs.items():
            cuda_call(rt.cudaMemcpyAsync(host, device, nbytes, d2h, self.stream))
        cuda_call(rt.cudaStreamSynchronize(self.stream))
        result = {}
        for name, (shape, dtype, device, host, nbytes) in outputs.items():
            out = np.empty(shape, dtype)
            ctypes.memmove(out.ctypes.data, host, nbytes)
            result[name] = out.astype(np.float32, copy=False)
        return result

    def close(self) -> None:
        rt = cudart()
        for device, host, _ in self.buffers.values():
            rt.cudaFree(device)
            rt.cudaFreeHost(host)
        self.buffers = {}
        rt.cudaStreamDestroy(self.stream)
        self.context = None


def build_engine(trt, logger, onnx_bytes: bytes, settings: dict, cache: Path, gpu: dict) -> bytes:
    """Parse the ONNX, apply precision flags, profiles and FP32 pins, build, keep the timing cache."""
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendUnavailableError(f"TensorRT could not parse the bundle's ONNX: {errors}",
                                      fix="rebuild the bundle with this TensorRT version, or use a CPU target")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.get("workspace_mb", 1024)) << 20)
    for flag in settings.get("flags", []):
        config.set_flag(getattr(trt.BuilderFlag, flag))
    pinned = set(settings.get("fp32_layer_types", []))
    if pinned:
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if layer.type.name in pinned:
                layer.precision = trt.float32
                for j in range(layer.num_outputs):
                    layer.set_output_type(j, trt.float32)
    profile = builder.create_optimization_profile()
    for name, shapes in settings["profiles"].items():
        profile.set_shape(name, tuple(shapes["min"]), tuple(shapes["opt"]), tuple(shapes["max"]))
    config.add_optimization_profile(profile)
    timing_path = cache / f"timing-{gpu['gpu'].replace(' ', '_')}-{gpu['compute_capability']}-{trt.__version__}.cache"
    timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
    config.set_timing_cache(timing, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendUnavailableError("TensorRT failed to build an engine for this GPU",
                                      fix="see the TensorRT log above; try --precision fp16 or a CPU target")
    cache.mkdir(parents=True, exist_ok=True)
    replace_file(timing_path, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)
