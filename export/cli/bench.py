"""``medexport bench``: every target x precision side by side (export/bench/)."""
from __future__ import annotations

import sys
from pathlib import Path

from .argtypes import name_list
from .served import SERVED_FORM


def add_parsers(sub) -> None:
    be = sub.add_parser("bench", help="benchmark every target x precision side by side (+ torch eager)")
    be.add_argument("items", nargs="+", help="registered model names, bundle folders and/or served models "
                                             f"{SERVED_FORM} (one row each, end to end through the server)")
    be.add_argument("--target", "--targets", dest="targets", type=name_list, default=["openvino", "onnxruntime"],
                    help="targets to measure (comma-separated; default openvino,onnxruntime)")
    be.add_argument("--precision", "--precisions", dest="precisions", type=name_list, default=["fp32", "fp16", "int8"],
                    help="precisions to measure (comma-separated; default fp32,fp16,int8)")
    be.add_argument("--data", help="labelled data for the metric column (default: the model's validation data)")
    be.add_argument("--batch", type=int, default=8, help="batch size for the throughput column (served models: "
                                                        "requests in flight)")
    be.add_argument("--threads", type=int, help="inference threads (default: all cores)")
    be.add_argument("--study", help="file for the end-to-end column (default: a real CR radiograph DICOM)")
    be.add_argument("--syntaxes", action="store_true",
                    help="image bundles: end to end per transfer syntax and a 100-file mixed-syntax folder")
    be.add_argument("--out", help="folder for bench.csv and bench.json")


def cmd_bench(args) -> int:
    from ..bench.side_by_side import bench, render, write

    rows = bench(args.items, args.targets, args.precisions, data=args.data, batch=args.batch, threads=args.threads,
                 study=args.study, syntaxes=args.syntaxes, emit=lambda m: print(m, file=sys.stderr, flush=True))
    print(render(rows, args.threads, args.study))
    if args.out:
        for path in write(rows, Path(args.out)):
            print(f"wrote {path}", file=sys.stderr)
    return 0


COMMANDS = {"bench": cmd_bench}
