"""One opened bundle used from many threads: every call gets its own input's result, memory stays bounded."""
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from medexport.engine import open_bundle
from medexport.engine.backends.pool import Pool
from medexport.engine.model import MAX_BATCH
from threads_together import together

THREADS, CALLS = 4, 40


def _in_threads(n, job):
    """``job(k)`` on ``n`` threads released together; returns the errors raised."""
    return together(n, job)[1]


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_threads_sharing_one_model_get_their_own_results(pneumonia_bundle, backend):
    rng = np.random.default_rng(7)
    inputs = [rng.integers(0, 256, (240, 240), dtype=np.uint8) for _ in range(THREADS * CALLS)]
    with open_bundle(pneumonia_bundle, backend=backend, precision="fp32") as model:
        model.predict(inputs[0])  # warm-up
        start = time.perf_counter()
        expected = [model.predict(x).scores for x in inputs]
        one = time.perf_counter() - start
        got = [None] * len(inputs)

        def work(k):
            for i in range(k, len(inputs), THREADS):
                got[i] = model.predict(inputs[i]).scores

        start = time.perf_counter()
        errors = _in_threads(THREADS, work)
        four = time.perf_counter() - start
    assert not errors, errors[:3]
    wrong = [i for i in range(len(inputs)) if got[i] != expected[i]]
    assert not wrong, f"{len(wrong)} of {len(inputs)} calls got another input's scores"
    assert len({tuple(s.values()) for s in expected}) > len(inputs) // 2  # the inputs really differ
    print(f"\n{backend}: 1 thread {len(inputs) / one:.0f} studies/s, {THREADS} threads "
          f"{len(inputs) / four:.0f} studies/s (x{one / four:.2f})")


def test_pool_lends_each_item_to_one_caller_and_never_exceeds_its_cap():
    made, in_use, overlap = [], set(), []
    lock = threading.Lock()

    def create():
        made.append(object())
        return made[-1]

    pool = Pool(create, cap=2)

    def work(k):
        for _ in range(50):
            with pool.take() as item:
                with lock:
                    if item in in_use:
                        overlap.append(item)
                    in_use.add(item)
                time.sleep(0.0002)
                with lock:
                    in_use.discard(item)

    assert not _in_threads(6, work)
    assert not overlap and len(made) == pool.created <= 2
    closed = []
    Pool(create, cap=1, destroy=closed.append).close()
    assert closed == []  # nothing was created, nothing to destroy


def test_first_use_of_the_hashing_thread_from_many_threads_starts_one(monkeypatch):
    import concurrent.futures

    from medexport.engine.io import image

    real = concurrent.futures.ThreadPoolExecutor
    started = []

    class Slow(real):
        def __init__(self, *args, **kw):
            time.sleep(0.05)  # widen the window between the check and the assignment
            started.append(self)
            super().__init__(*args, **kw)

    monkeypatch.setattr(concurrent.futures, "ThreadPoolExecutor", Slow)
    monkeypatch.setattr(image, "_POOL", None)
    pools = []
    assert not _in_threads(8, lambda k: pools.append(image._hasher()))
    assert len(started) == 1 and len({id(p) for p in pools}) == 1
    started[0].shutdown()


def test_tiles_reach_the_runtime_a_few_at_a_time(seg_bundle):
    with open_bundle(seg_bundle, backend="onnxruntime") as model:
        sizes, infer = [], model.runtime.infer
        model.runtime.infer = lambda feeds: (sizes.append(len(next(iter(feeds.values())))), infer(feeds))[1]
        result = model.predict(np.random.default_rng(0).integers(0, 256, (700, 900), dtype=np.uint8))
    assert result.tiles == sum(sizes) > MAX_BATCH and max(sizes) <= MAX_BATCH
    assert result.probability.shape == (700, 900)


@pytest.mark.slow
def test_a_4096_square_image_on_the_segmentation_bundle_stays_under_1_gb(seg_bundle):
    code = ("import numpy as np\n"
            "from medexport.engine import open_bundle\n"
            f"with open_bundle({str(seg_bundle)!r}, backend='openvino') as m:\n"
            "    r = m.predict(np.random.default_rng(0).integers(0, 256, (4096, 4096), dtype=np.uint8))\n"
            # VmHWM, not ru_maxrss: the latter keeps the forking parent's peak across exec (Linux)
            "hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
            "print(r.tiles, int(hwm.split()[1]) // 1024)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    tiles, peak_mb = map(int, proc.stdout.split())
    print(f"\n4096 x 4096: {tiles} tiles, peak RSS {peak_mb} MB")
    assert tiles > 400 and peak_mb < 1024
