"""``medexport serve`` (bundles on Triton through pytriton) and ``medexport export-triton``
(a Triton model repository for a hospital's own server): parsers and handlers."""
from __future__ import annotations

import sys
from pathlib import Path


def add_parsers(sub) -> None:
    s = sub.add_parser("serve", help="serve bundles on Triton Inference Server (HTTP, gRPC, metrics)")
    s.add_argument("bundles", nargs="*", help="bundle folders or .zip files (one Triton model each, named by model id)")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 serves the network, "
                        "behind a reverse proxy with authentication)")
    s.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    s.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (default 8001)")
    s.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics port (default 8002)")
    s.add_argument("--max-batch-size", type=int, default=8,
                   help="studies Triton's dynamic batcher groups into one call (default 8; 1: no batching)")
    s.add_argument("--queue-delay-us", type=int, default=5000,
                   help="how long a request may wait for others to fill a batch, in microseconds (default 5000)")
    s.add_argument("--instances", type=int, default=2, help="concurrent inference functions per model (default 2)")
    s.add_argument("--backend", default="auto", help="runtime for every bundle (default auto)")
    s.add_argument("--precision", default="auto", help="artifact precision for every bundle (default auto)")
    s.add_argument("--threads", type=int, help="runtime threads per model (default: the runtime's)")
    s.add_argument("--grpc-tls-cert", type=Path, help="PEM certificate: gRPC over TLS (with --grpc-tls-key)")
    s.add_argument("--grpc-tls-key", type=Path, help="PEM private key for --grpc-tls-cert")
    s.add_argument("--allow-unsigned", action="store_true",
                   help="serve bundles that no key in the trust store ($MEDEXPORT_TRUST) signed (default: refused)")
    s.add_argument("--setup", action="store_true",
                   help="create the Python environment Triton's stub needs (numpy<2, pyzmq; once, needs the "
                        "package index) and exit")

    e = sub.add_parser("export-triton", help="write a bundle as a Triton model repository (config.pbtxt + artifact)")
    e.add_argument("bundle", help="bundle folder or .zip")
    e.add_argument("-o", "--out", required=True, help="model repository folder (the model goes into OUT/MODEL_ID)")
    e.add_argument("--target", choices=["onnxruntime", "openvino"], help="which artifact (default: onnxruntime if any)")
    e.add_argument("--precision", help="which precision (default fp32 if any)")
    e.add_argument("--max-batch-size", type=int, default=8, help="Triton max_batch_size (default 8)")
    e.add_argument("--instances", type=int, default=2, help="instance_group count (default 2)")
    e.add_argument("--gpu", action="store_true", help="instance_group kind KIND_GPU (default KIND_CPU)")
    e.add_argument("--queue-delay-us", type=int, default=5000, help="dynamic batching delay (default 5000)")
    e.add_argument("--overwrite", action="store_true", help="replace OUT/MODEL_ID if it exists")


def cmd_serve(args) -> int:
    from medexport.engine.errors import ConfigurationError
    from medexport.engine.serve.server import ServeOptions, check_host, serve
    from medexport.engine.serve.stub_env import create_stub_env

    if args.setup:
        print(f"Triton stub environment ready: {create_stub_env()}")
        return 0
    if not args.bundles:
        raise ConfigurationError("no bundle given", expected="one or more bundle folders or .zip files",
                                 fix="medexport serve bundles/pneumonia-cxr bundles/ecg-rhythm")
    options = ServeOptions(host=check_host(args.host), http_port=args.port, grpc_port=args.grpc_port,
                           metrics_port=args.metrics_port, max_batch_size=args.max_batch_size,
                           queue_delay_us=args.queue_delay_us, instances=args.instances, backend=args.backend,
                           precision=args.precision, threads=args.threads, grpc_tls_cert=args.grpc_tls_cert,
                           grpc_tls_key=args.grpc_tls_key, allow_unsigned=args.allow_unsigned)
    serve(args.bundles, options, emit=lambda m: print(m, file=sys.stderr, flush=True))
    return 0


def cmd_export_triton(args) -> int:
    from ..triton_repo import export_triton

    path = export_triton(args.bundle, args.out, target=args.target, precision=args.precision,
                         max_batch_size=args.max_batch_size, instances=args.instances,
                         kind="KIND_GPU" if args.gpu else "KIND_CPU", queue_delay_us=args.queue_delay_us,
                         overwrite=args.overwrite)
    print(f"Triton model folder: {path} (repository {path.parent}; tritonserver --model-repository={path.parent})")
    return 0


COMMANDS = {"serve": cmd_serve, "export-triton": cmd_export_triton}
