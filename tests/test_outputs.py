"""Outputs are never lost: concurrent saves get distinct names, every file is complete, nothing is replaced."""
import errno
import os
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from medexport.engine import atomic, outputs

from threads_together import together as _together


def test_sixteen_threads_saving_masks_of_one_study_keep_sixteen_complete_files(tmp_path):
    rng = np.random.default_rng(0)
    masks = [rng.random((512, 512)) > 0.5 for _ in range(16)]
    results = [SimpleNamespace(source="/studies/Doe_Jane_1234.dcm", model_id="em-membrane-seg", mask=m) for m in masks]
    written, errors = _together(16, lambda i: outputs.save_mask_png(results[i], tmp_path))
    assert not errors
    assert len(set(written)) == 16
    files = sorted(p for p in tmp_path.iterdir())
    assert len(files) == 16 and all(not p.name.startswith(".") for p in files)  # no temporary file left
    assert {p.name for p in files} == {"Doe_Jane_1234.em-membrane-seg.mask.png"} | {
        f"Doe_Jane_1234.em-membrane-seg.mask ({n}).png" for n in range(2, 17)}
    for i, path in enumerate(written):  # each file holds exactly the mask its caller saved
        assert np.array_equal(np.asarray(Image.open(path)) > 0, masks[i])


def test_an_existing_file_is_never_replaced(tmp_path):
    (tmp_path / "r.csv").write_bytes(b"old")
    first = atomic.write_new(tmp_path / "r.csv", b"new")
    second = atomic.write_new(tmp_path / "r.csv", lambda p: p.write_bytes(b"newer"))
    assert (first.name, second.name) == ("r (2).csv", "r (3).csv")
    assert [(tmp_path / n).read_bytes() for n in ("r.csv", "r (2).csv", "r (3).csv")] == [b"old", b"new", b"newer"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r (2).csv", "r (3).csv", "r.csv"]


def test_without_hard_links_names_are_still_claimed_exclusively(tmp_path, monkeypatch):
    def no_link(src, dst):
        raise OSError(errno.EPERM, "hard links not supported here")

    monkeypatch.setattr(os, "link", no_link)
    written, errors = _together(16, lambda i: atomic.write_new(tmp_path / "m.png", bytes([i]) * 100_000))
    assert not errors and len(set(written)) == 16
    assert sorted(p.read_bytes()[0] for p in written) == list(range(16))
    assert all(p.read_bytes() == bytes([p.read_bytes()[0]]) * 100_000 for p in written)


def test_a_failing_writer_leaves_nothing_behind(tmp_path):
    def broken(path):
        path.write_bytes(b"half")
        raise OSError(errno.ENOSPC, "disk full")

    with pytest.raises(OSError):
        atomic.write_new(tmp_path / "report.pdf", broken)
    assert list(tmp_path.iterdir()) == []
