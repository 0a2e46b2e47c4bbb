"""Benchmarks, none of them part of the clinic runtime: ``side_by_side`` (``medexport bench``:
every target x precision, each row measured by ``worker`` in its own process), ``gpu``
(TensorRT against torch CUDA, tests/gpu/run.sh) and ``loadtest`` (``make bench-serve``:
concurrent clients against a local process and a Triton server)."""
