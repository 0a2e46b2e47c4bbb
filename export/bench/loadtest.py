"""A bounded load test (``make bench-serve``): N concurrent clients for S seconds on loopback.

Three rows on the same study: one local process (N threads sharing one opened Model), the
server with batch-1 serving (``--max-batch-size 1``), and the server with dynamic batching.
Each row reports throughput and p50 / p95 latency; the server rows also the mean batch Triton
formed (from its Prometheus counters). Prints a table and writes JSON with ``--out``.

    python -m medexport.export.bench.loadtest bundles/pneumonia-cxr --study x.png --clients 16 --seconds 30
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from medexport.engine import open_bundle
from medexport.engine.errors import MedError


def drive(model, study, clients: int, seconds: float) -> dict:
    """``clients`` threads call ``model.predict(study)`` until ``seconds`` pass; latencies in ms."""
    latencies, failures, stop = [], [], time.monotonic() + seconds
    lock = threading.Lock()

    def client():
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            try:
                model.predict(study)
            except MedError as exc:  # counted and reported, the benchmark goes on
                with lock:
                    failures.append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                latencies.append((time.perf_counter() - t0) * 1e3)

    start = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - start
    lat = np.array(latencies or [np.nan])
    return {"requests": len(latencies), "failures": len(failures), "first_failure": failures[:1],
            "seconds": round(wall, 1), "throughput_per_s": round(len(latencies) / wall, 2),
            "p50_ms": round(float(np.percentile(lat, 50)), 1), "p95_ms": round(float(np.percentile(lat, 95)), 1)}


def free_ports(n: int = 3) -> list[int]:
    """``n`` loopback ports free right now (for servers started by tests and the load test)."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _batches(metrics_port: int, name: str) -> tuple[float, float]:
    """(requests, executions) Triton counted for the model: their ratio is the mean batch."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()

    def counter(metric):
        m = re.search(rf'^{metric}{{model="{re.escape(name)}"[^}}]*}} (\S+)$', text, re.M)
        return float(m.group(1)) if m else float("nan")

    return counter("nv_inference_count"), counter("nv_inference_exec_count")


def served(bundle, study, clients, seconds, extra: list[str], log: Path) -> dict:
    http, grpc, metrics = free_ports()
    cmd = [sys.executable, "-m", "medexport.export.cli", "serve", str(bundle), "--port", str(http),
           "--grpc-port", str(grpc), "--metrics-port", str(metrics),
           "--allow-unsigned", *extra]  # a benchmark on loopback: whoever signed the bundle
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while b"serving " not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {log}")
            time.sleep(1)
        with open_bundle(f"triton://127.0.0.1:{http}/{_model_id(bundle)}") as model:
            drive(model, study, 2, 3)  # warm-up, not counted
            before = _batches(metrics, model.name)
            row = drive(model, study, clients, seconds)
            after = _batches(metrics, model.name)
        row["mean_batch"] = round((after[0] - before[0]) / max(after[1] - before[1], 1), 2)
        return row
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)


def _model_id(bundle) -> str:
    from medexport.engine import read_manifest

    return read_manifest(bundle, verify=False)[0].model_id


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle")
    p.add_argument("--study", required=True)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--backend", default="auto")
    p.add_argument("--instances", type=int, default=2)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    logs = Path(args.out.parent if args.out else ".")
    rows = {}
    with open_bundle(args.bundle, backend=args.backend) as model:
        drive(model, args.study, 2, 3)
        rows["local process"] = drive(model, args.study, args.clients, args.seconds)
    common = ["--backend", args.backend, "--instances", str(args.instances)]
    rows["server, batch 1"] = served(args.bundle, args.study, args.clients, args.seconds,
                                     common + ["--max-batch-size", "1"], logs / "bench-serve-batch1.log")
    rows["server, dynamic batching (8)"] = served(args.bundle, args.study, args.clients, args.seconds,
                                                  common + ["--max-batch-size", "8"], logs / "bench-serve-dynamic.log")
    print(f"{args.clients} clients x {args.seconds:g} s, {Path(args.study).name}, {os.cpu_count()} CPUs")
    print(f"{'mode':32} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'batch':>6} {'fail':>5}")
    for name, r in rows.items():
        print(f"{name:32} {r['throughput_per_s']:7.2f} {r['p50_ms']:8.1f} {r['p95_ms']:8.1f} "
              f"{r.get('mean_batch', 1):6} {r['failures']:5}")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
