"""``medexport serve``: bundles served by a real Triton Inference Server through nvidia-pytriton.

Each bundle is one Triton model named by its ``model_id``. Its inference function is the engine's
own opened :class:`~medexport.engine.model.Model` (same preprocessing, backends, warnings,
provenance); Triton's dynamic batcher hands it several requests at once and their preprocessed
tensors go through the runtime together (:mod:`.batching`). HTTP/REST and gRPC (KServe v2),
``/v2/health/live`` and ``/v2/health/ready``, Prometheus metrics on ``/metrics``.

Model interface (every model): inputs ``study`` BYTES [1] (file bytes, or a .npy array) and
``request`` BYTES [1] (JSON: protocol, kind, name, options); outputs ``scores`` FP32 [-1] (the
study's scores in label order, empty on an error) and ``result`` BYTES [1] (JSON, see :mod:`.wire`).
Binds to loopback unless told otherwise.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailableError, ConfigurationError, InvalidInputError
from . import wire
from .batching import Item, as_med_error, new_item, remove_stale_uploads, run_batch
from .shm import keep_shm_private, make_shm_private, remove_stale_regions
from .stub_env import check_stub_env, server_library_path

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ServeOptions:
    host: str = LOOPBACK
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch_size: int = 8  # studies per batch; 1 turns dynamic batching off
    queue_delay_us: int = 5000  # how long the batcher may hold a request to fill a batch
    instances: int = 2  # inference functions per model (concurrent batches)
    backend: str = "auto"
    precision: str = "auto"
    threads: int | None = None
    grpc_tls_cert: Path | None = None
    grpc_tls_key: Path | None = None
    allow_unsigned: bool = False  # serve bundles no key in the trust store signed (the store is required)

    def __post_init__(self):
        for name in ("http_port", "grpc_port", "metrics_port"):
            port = getattr(self, name)
            if not 0 < port < 65536:
                raise ConfigurationError(f"{name} is {port}", expected="a TCP port 1-65535")
        if len({self.http_port, self.grpc_port, self.metrics_port}) != 3:
            raise ConfigurationError(f"ports {self.http_port}, {self.grpc_port}, {self.metrics_port} repeat",
                                     expected="three different ports (HTTP, gRPC, metrics)")
        if self.max_batch_size < 1 or self.instances < 1 or self.queue_delay_us < 0:
            raise ConfigurationError(f"max batch {self.max_batch_size}, instances {self.instances}, "
                                     f"queue delay {self.queue_delay_us} us",
                                     expected="a max batch >= 1, instances >= 1, a delay >= 0")
        if (self.grpc_tls_cert is None) != (self.grpc_tls_key is None):
            raise ConfigurationError("only one of the gRPC TLS certificate and key is given",
                                     expected="both --grpc-tls-cert and --grpc-tls-key, or neither")


def endpoints(options: ServeOptions) -> str:
    scope = "loopback only; --host 0.0.0.0 serves the network" if options.host == LOOPBACK else \
        f"listening on {options.host}: put a reverse proxy with authentication in front (docs/triton.md)"
    return (f"HTTP http://{options.host}:{options.http_port}, gRPC {options.host}:{options.grpc_port}"
            f"{' (TLS)' if options.grpc_tls_cert else ''}, metrics http://{options.host}:{options.metrics_port}"
            f"/metrics ({scope})")


def infer_function(model):
    """A pytriton inference callable over ``model`` (requests in, one response per request)."""

    def infer(requests):
        items, spans = [], []
        for request in requests:
            try:
                found = _items(request)
            except Exception as exc:  # noqa: BLE001 - a malformed request fails alone
                found = [Item({}, b"", error=as_med_error(exc)) for _ in range(_rows(request))]
            spans.append(len(found))
            items += found
        replies = run_batch(model, items)
        responses, start = [], 0
        for n in spans:
            responses.append(_response(replies[start:start + n]))
            start += n
        return responses

    return infer


def _items(request) -> list[Item]:
    """One checked item per study of a request (Triton has checked the tensors' names, BYTES and shapes)."""
    data = dict(request.items())
    studies, headers = data.get("study"), data.get("request")
    if studies is None or headers is None or len(studies) != len(headers) or len(studies) == 0:
        raise InvalidInputError("the request lacks its 'study' or 'request' input, or their batch sizes differ",
                                expected="inputs 'study' and 'request', BYTES [N, 1] each",
                                fix="use medexport's remote model (open_bundle('triton://...'))")
    studies, headers = studies.reshape(len(studies), -1), headers.reshape(len(headers), -1)
    if studies.shape[1] != 1 or headers.shape[1] != 1:
        raise InvalidInputError(f"inputs of shapes {studies.shape} and {headers.shape}",
                                expected="one study and one request header per row",
                                fix="use medexport's remote model (open_bundle('triton://...'))")
    return [new_item(bytes(header), bytes(payload)) for payload, header in zip(studies[:, 0], headers[:, 0])]


def _rows(request) -> int:
    try:
        return max(1, len(next(iter(request.values()))))
    except Exception:  # noqa: BLE001 - nothing readable: one error row
        return 1


def _response(replies: list[dict]) -> dict:
    scores = [_scores(r) for r in replies]
    width = max([1, *(len(s) for s in scores)])  # no zero-size tensors through pytriton: NaN = no score
    table = np.full((len(replies), width), np.nan, np.float32)
    for row, s in zip(table, scores):
        row[:len(s)] = s
    body = np.array([[wire.dumps(wire.encode(r))] for r in replies], dtype=object)
    return {"scores": table, "result": body}


def _scores(reply: dict) -> np.ndarray:
    if "result" in reply:
        return np.array(list(reply["result"].scores.values()), np.float32)
    if "scores" in reply:
        return np.ravel(np.asarray(reply["scores"], np.float32))
    return np.zeros(0, np.float32)


def serve(bundles, options: ServeOptions = ServeOptions(), *, emit=print, open_model=None) -> None:
    """Open every bundle with the engine, bind each as a Triton model and serve until stopped."""
    try:
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from pytriton.triton import Triton, TritonConfig
    except ImportError:
        raise BackendUnavailableError("nvidia-pytriton is not installed", expected="the 'server' extra (Linux x86_64)",
                                      fix="pip install 'medexport[server]'") from None
    from pytriton.server import triton_server

    from ..open import open_bundle
    from ..trust_policy import trust_policy

    stub = check_stub_env()
    os.environ["LD_LIBRARY_PATH"] = server_library_path()  # inherited by tritonserver and its stubs only
    os.umask(0o077)  # study bytes in temp files and shared memory: owner only (tritonserver, stubs inherit it)
    for left in remove_stale_regions() + remove_stale_uploads():
        emit(f"removed {left}: studies' bytes left by a server that was killed")
    triton_server.get_triton_python_backend_python_env = lambda: stub  # pytriton 0.7.0: the stub's numpy<2 env
    _patient_handshake()
    trust = trust_policy(allow_unsigned=options.allow_unsigned, required=True)
    open_model = open_model or (lambda b: open_bundle(b, options.backend, options.precision, threads=options.threads,
                                                      trust=trust))
    models = {}
    try:
        for bundle in bundles:
            model = open_model(bundle)
            name = model.manifest.model_id
            if name in models:
                raise ConfigurationError(f"two bundles are model {name!r}", expected="one bundle per model id",
                                         fix="serve each model once")
            models[name] = model
        config = TritonConfig(http_address=options.host, http_port=options.http_port,
                              grpc_address=options.host, grpc_port=options.grpc_port,
                              metrics_address=options.host, metrics_port=options.metrics_port,
                              grpc_use_ssl=bool(options.grpc_tls_cert) or None,
                              grpc_server_cert=options.grpc_tls_cert, grpc_server_key=options.grpc_tls_key)
        batching = options.max_batch_size > 1
        with Triton(config=config) as triton:
            for name, model in models.items():
                triton.bind(model_name=name,
                            infer_func=[infer_function(model) for _ in range(options.instances)],
                            inputs=[Tensor(name="study", dtype=bytes, shape=(1,)),
                                    Tensor(name="request", dtype=bytes, shape=(1,))],
                            outputs=[Tensor(name="scores", dtype=np.float32, shape=(-1,)),
                                     Tensor(name="result", dtype=bytes, shape=(1,))],
                            config=ModelConfig(max_batch_size=options.max_batch_size, batching=True,
                                               batcher=DynamicBatcher(
                                                   max_queue_delay_microseconds=options.queue_delay_us if batching else 0)),
                            strict=False)
                emit(f"model {name}: {model.backend} {model.precision} on {model.provenance.device}, "
                     f"{options.instances} instance(s), "
                     + (f"dynamic batching up to {options.max_batch_size}" if batching else "batch 1"))
            make_shm_private()
            stop = threading.Event()
            threading.Thread(target=keep_shm_private, args=(stop,), daemon=True).start()
            emit(f"serving {', '.join(models)} on {endpoints(options)}")
            try:
                triton.serve()
            finally:
                stop.set()
    finally:
        for model in models.values():
            model.close()


HANDSHAKE_TIMEOUT_S = 60.0
# pytriton 0.7.0's stub connects once when the handshake socket's file appears; the file exists
# from bind(), before the server listens, and a busy machine lands in that gap ("Connection
# refused", a CI failure): retry until the same deadline, a fresh socket each time
CONNECT_ONCE = b"""        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(max(0.0, should_stop_before_s - time.time()))
        sock.connect(socket_path.as_posix())
"""
CONNECT_RETRYING = b"""        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(max(0.0, should_stop_before_s - time.time()))
            try:
                sock.connect(socket_path.as_posix())
                break
            except ConnectionRefusedError:
                sock.close()
                sock = None
                if time.time() >= should_stop_before_s:
                    raise
                time.sleep(0.01)
"""


def _patient_handshake() -> None:
    """pytriton 0.7.0 gives a model's other instances (and this process) 1 s to find the handshake
    socket its first instance opens, and connects once; on a busy 2-core machine the first stub
    often takes longer and the model fails to load (measured). Allow a minute and retry a refused
    connection; the wait still ends as soon as the server answers."""
    import functools

    from pytriton.models import model as pt_model
    from pytriton.proxy import communication

    if getattr(pt_model.Model, "_medexport_patient", False):
        return
    pt_model.get_config_from_handshake_server = functools.partial(_retrying_handshake,
                                                                  communication.get_config_from_handshake_server)
    original = pt_model.Model.get_proxy_model_files

    def proxy_files(self):
        files = original(self)
        for key, data in files.items():
            if key.endswith("/communication.py"):  # the copy the stub runs
                files[key] = data.replace(b"timeout_s: float = 1.0) -> dict",
                                          f"timeout_s: float = {HANDSHAKE_TIMEOUT_S}) -> dict".encode()
                                          ).replace(CONNECT_ONCE, CONNECT_RETRYING)
        return files

    pt_model.Model.get_proxy_model_files = proxy_files
    pt_model.Model._medexport_patient = True


def _retrying_handshake(get_config, socket_path, timeout_s: float = HANDSHAKE_TIMEOUT_S) -> dict:
    """pytriton's ``get_config_from_handshake_server`` in this process, with the stub's patience."""
    import time

    deadline = time.time() + timeout_s
    while True:
        try:
            return get_config(socket_path, timeout_s=max(0.0, deadline - time.time()))
        except ConnectionRefusedError:
            if time.time() >= deadline:
                raise
            time.sleep(0.01)


def check_host(host: str) -> str:
    if not host or any(c.isspace() for c in host):
        raise InvalidInputError(f"host {host!r}", expected="an address to bind, e.g. 127.0.0.1 or 0.0.0.0")
    return host
