"""medexport shadow: pneumonia-cxr against its own site-calibrated version on real Kermany films."""
from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest


def _films(shared, n: int, start: int) -> dict:
    root = shared / "images" / "kermany-cxr224" / "train"
    return {c: sorted((root / c).glob("*.jpeg"))[start:start + n] for c in ("NORMAL", "PNEUMONIA")}


def _folder(path, films: dict):
    for cls, files in films.items():
        (path / cls).mkdir(parents=True)
        for f in files:
            shutil.copy(f, path / cls / f.name)
    return path


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, pneumonia_bundle, shared):
    from medexport.engine import open_bundle
    from medexport.engine.calibrate import Goal, calibrate, write_calibrated

    site = _folder(tmp_path_factory.mktemp("site") / "site", _films(shared, 40, 0))
    with open_bundle(pneumonia_bundle) as model:
        result = calibrate(model, site, Goal(0.95, 0.8), n_boot=100)
    return write_calibrated(pneumonia_bundle, result, tmp_path_factory.mktemp("cal") / "pneumonia-site")


def test_changed_decisions_are_exactly_the_scores_between_the_thresholds(tmp_path, pneumonia_bundle, calibrated,
                                                                        shared):
    from medexport.engine import open_bundle, read_manifest
    from medexport.engine.calibrate import rescale_scores
    from medexport.export.shadow import shadow

    films = _films(shared, 150, 100)
    studies = _folder(tmp_path / "studies", films)
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\n" + "".join(f"{f.name},{c.lower()}\n" for c, fs in films.items() for f in fs))
    path, report = shadow(calibrated, pneumonia_bundle, studies, tmp_path / "out", labels=labels, emit=lambda m: None)

    cur, _, _ = read_manifest(pneumonia_bundle)
    cand, _, _ = read_manifest(calibrated)
    t_cur, t_cand = cur.postprocess.thresholds["pneumonia"], cand.postprocess.thresholds["pneumonia"]
    ratio = cand.postprocess.temperature / cur.postprocess.temperature  # the candidate's threshold, in current scores
    t_back = float(rescale_scores(np.array([1 - t_cand, t_cand]), "softmax", ratio)[1])
    lo, hi = sorted((t_cur, t_back))
    files = [str(f) for f in sorted(studies.rglob("*.jpeg"))]
    with open_bundle(pneumonia_bundle) as model:
        scores = {f: model.predict(f).scores["pneumonia"] for f in files}
    between = {f for f, s in scores.items() if lo <= s < hi}
    with open(path.parent / "changes.csv", newline="") as fh:
        changed = {row["file"] for row in csv.DictReader(fh)}
    assert between and changed == between
    assert report["changed"] == len(between) and report["compared"] == 300
    flips = report["agreement"]["per_label"]["pneumonia"]
    assert flips["to_positive"] + flips["to_negative"] == len(between) and flips["kappa"] < 1
    both = report["labelled"]["pneumonia"]
    assert both["current"]["n"] == 300 and 0 <= both["candidate"]["sensitivity"]["ci95"][0] <= 1
    assert (path.parent / "shadow.pdf").read_bytes().startswith(b"%PDF")
