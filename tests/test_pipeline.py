"""engine/pipeline.py (studies overlapped on worker threads) and the lean DICOM waveform read."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from medexport.engine.errors import InvalidInputError
from medexport.engine.pipeline import BatchStats, ordered, predicted


def test_results_in_order_errors_as_rows_and_overlap():
    def work(i):
        time.sleep(0.1 if i % 2 else 0.02)  # odd items slower: finish out of order
        if i == 3:
            raise InvalidInputError(f"study {i} is broken")
        return i * 10

    stats = BatchStats()
    t0 = time.perf_counter()
    out = list(ordered(work, range(8), workers=2, stats=stats))
    elapsed = time.perf_counter() - t0
    assert [item for item, _, _ in out] == list(range(8))
    assert [value for _, value, _ in out] == [0, 10, 20, None, 40, 50, 60, 70]
    assert "study 3 is broken" in out[3][2] and all(e is None for i, (_, _, e) in enumerate(out) if i != 3)
    assert elapsed < 0.9 * (4 * 0.1 + 4 * 0.02)  # two at a time, not one after another
    assert stats.studies == 8 and stats.studies_per_s > 0 and 0 <= stats.wait_share <= 1


def test_bounded_lookahead_and_cancel():
    running, most, lock = [0], [0], threading.Lock()
    cancel = threading.Event()

    def work(i):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        return i

    seen = []
    for item, _, _ in ordered(work, range(100), workers=2, ahead=3, cancel=cancel):
        seen.append(item)
        if item == 9:
            cancel.set()
    assert most[0] <= 2 and len(seen) <= 9 + 1 + 3  # nothing new submitted after cancel


def test_other_errors_propagate():
    def work(i):
        raise KeyError("a bug, not a bad study")

    with pytest.raises(KeyError):
        list(ordered(work, range(3)))


def test_predict_on_a_folder_runs_the_pipeline(pneumonia_bundle, dcm, cxr, tmp_path, capsys):
    """``medexport predict`` on a folder: rows in the folder's order, a broken file is its own row,
    the batch line reports studies/s; ``--reduced-decode`` reads the JPEG 2000 film reduced."""
    import csv
    import json
    import shutil

    from medexport.export.cli import main

    folder = tmp_path / "studies"
    folder.mkdir()
    shutil.copyfile(dcm("RG1_J2KR.dcm"), folder / "a.dcm")
    shutil.copyfile(cxr[0], folder / "b.png")
    (folder / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    scores = []
    for flag in ([], ["--reduced-decode"]):
        out = tmp_path / f"rows{len(flag)}.csv"
        code = main(["predict", str(pneumonia_bundle), str(folder), "--json", "--csv", str(out), *flag])
        captured = capsys.readouterr()
        assert code == 1  # one study failed
        assert "3 studies in" in captured.err and "studies/s" in captured.err
        rows = list(csv.DictReader(open(out)))
        assert [r["file"] for r in rows] == ["b.png", "c.png", "a.dcm"]  # open_paths' order: by series UID
        assert rows[1]["error"] and not rows[0]["error"] and not rows[2]["error"]
        film = json.loads(captured.out)[2]
        assert film["heatmap"]["shape"] == [1955, 1841]  # maps stay on the full image either way
        scores.append(np.array(list(film["scores"].values())))
    assert 0 < np.abs(scores[0] - scores[1]).max() < 0.05  # read reduced: close, not identical


def test_predicted_batches_ready_studies_and_matches_predict(pneumonia_bundle, dcm, cxr, tmp_path):
    """Studies prepared on worker threads go through the model together (one runtime pass for
    those already read); each result equals its own ``predict``, in order, a broken file its row."""
    from medexport.engine import open_bundle

    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00")
    paths = [dcm("RG1_UNCR.dcm"), dcm("RG1_J2KR.dcm"), *cxr[:2], dcm("RG3_UNCR.dcm"), str(broken), dcm("MR2_J2KR.dcm")]
    with open_bundle(pneumonia_bundle, backend="openvino", precision="fp32") as model:
        passes, run = [], model.run
        model.run = lambda feeds: passes.append(len(next(iter(feeds.values())))) or run(feeds)

        def prepare(path):
            if path == paths[0]:
                time.sleep(0.5)  # the others are read meanwhile: the first pass takes several
            return model.prepare(path)

        stats = BatchStats()
        out = list(predicted(model, paths, prepare, workers=2, stats=stats))
        model.run = run
        alone = [model.predict(p) for p in paths if p != str(broken)]
    assert [item for item, _, _ in out] == paths and stats.studies == len(paths)
    assert out[5][1] is None and "broken.dcm" in out[5][2]
    got = [r for _, r, e in out if e is None]
    for a, b in zip(got, alone):
        assert a.source == b.source and a.input_sha256 == b.input_sha256
        assert abs(a.scores["pneumonia"] - b.scores["pneumonia"]) < 1e-5
    assert max(passes) > 1 and sum(passes) == len(got)
