"""``python -m medexport.export.bench.gpu MODEL``: TensorRT FP16/INT8 against torch CUDA eager.

Run by tests/gpu/run.sh on a machine with an NVIDIA GPU and TensorRT; not part of CI.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from ..build import BuildOptions, build
from .side_by_side import Row, _bench_bundle, _measure, render, write


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    from medexport.models.data import default_data
    from medexport.models.registry import get_config

    config = get_config(args.model)
    emit = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    rows = [_measure(Row(args.model, "torch-cuda", "fp32", "ok"),
                     {"torch": True, "device": "cuda", "model": args.model, "batch": args.batch}, emit)]
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / args.model
        build(args.model, out, BuildOptions(targets=["tensorrt"], precisions=["fp16", "int8"],
                                            calib=default_data(config, "calib"), val=default_data(config, "val")),
              emit=emit)
        rows += _bench_bundle(out, ["tensorrt"], ["fp16", "int8"], None, args.batch, None, None, emit)
    print(render(rows, None, None))
    ref = next(r.values for r in rows if r.target == "torch-cuda")
    for r in rows[1:]:
        if r.values:
            print(f"TensorRT {r.precision} vs torch CUDA eager: throughput x{r.values['throughput'] / ref['throughput']:.2f}, "
                  f"latency x{ref['latency_p50_ms'] / r.values['latency_p50_ms']:.2f}")
    if args.out:
        write(rows, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
