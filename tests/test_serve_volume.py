"""A served volume model (hippocampus-mr) on a real Triton (pytriton) on loopback: the server gets
the whole volume (a NIfTI file, or a DICOM series' files in one request) and answers with the local
result; ``export-triton`` writes the volume network's own dims (the client windows for a stock Triton)."""
from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np
import pytest

from test_serve import Server, _raw_call, same_result  # noqa: E402 - skips this module where test_serve skips

from medexport.engine import open_bundle  # noqa: E402
from medexport.engine.errors import InvalidInputError  # noqa: E402
from medexport.engine.serve import checks  # noqa: E402

pytestmark = pytest.mark.slow
HIPPO = "volumes/hippocampus-mr"


@pytest.fixture(scope="module")
def hippo_server(hippo_bundle, pneumonia_bundle, tmp_path_factory):
    srv = Server([hippo_bundle, pneumonia_bundle], "--backend", "onnxruntime", "--instances", "1",
                 log=tmp_path_factory.mktemp("serve-volume") / "serve.log")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def local(hippo_bundle):
    with open_bundle(hippo_bundle, backend="onnxruntime") as model:
        yield model


def held_out(shared) -> Path:
    """The first volume of the recipe's validation split (never trained on)."""
    from medexport.models.registry import WEIGHTS_DIR

    row = (WEIGHTS_DIR / "hippocampus-mr.val.csv").read_text().splitlines()[1]
    return shared / row.split(",")[0]


def test_served_volume_equals_local_for_nifti_series_folder_and_file_list(hippo_server, local, shared):
    series = shared / HIPPO / "dicom" / "Study1" / "13_HCropVolume"
    shuffled = [str(p) for p in sorted(series.iterdir(), key=lambda p: p.name[::-1])]
    with open_bundle(hippo_server.url("hippocampus-mr")) as remote:
        assert remote.study_kind == "volume"
        for study in (str(held_out(shared)), str(series), shuffled):
            r, l = remote.predict(study), local.predict(study)
            same_result(r, l, 0.0)  # the same mask, volumes in mL, UIDs, warnings and source
            assert np.array_equal(r.mask, l.mask) and r.measurements == l.measurements
            assert r.provenance.server == hippo_server.url("hippocampus-mr")
        assert r.source == l.source and Path(r.source).parent == series  # a list: its first slice's own path
        assert len(r.slice_uids) == 32 and r.mask.shape == (32, 51, 35)
        assert 0.5 < r.measurements["total_volume_ml"] < 8.0


def test_concurrent_volumes_batch_on_the_server_and_each_gets_its_own_answer(hippo_server, local, shared):
    studies = [str(p) for p in sorted((shared / HIPPO / "dicom").glob("Study*/*_HCropVolume"))]
    studies += [str(held_out(shared))]
    want = {s: local.predict(s).mask for s in studies}
    got, errors = {}, []

    def client(study):
        try:
            with open_bundle(hippo_server.url("hippocampus-mr")) as remote:
                for _ in range(3):
                    got.setdefault(study, []).append(remote.predict(study).mask)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(s,)) for s in studies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    assert all(np.array_equal(m, want[s]) for s in studies for m in got[s]) and len(got) == len(studies)


def test_a_broken_series_is_refused_with_the_clients_file_names(hippo_server, shared):
    series = sorted((shared / HIPPO / "dicom" / "Study2" / "14_HCropVolume").iterdir())
    gap = series[:10] + series[12:]  # two slices missing in the middle
    with open_bundle(hippo_server.url("hippocampus-mr")) as remote:
        with pytest.raises(InvalidInputError) as info:
            remote.predict([str(p) for p in gap])
        text = str(info.value)
        assert "medexport-serve-" not in text and "/tmp" not in text  # no server path reaches the client
        assert re.search("slice|gap|missing", text, re.I), text
        remote.predict(str(series[0].parent))  # the server goes on


def test_bad_series_requests_fail_alone_with_named_errors(hippo_server, shared):
    import tempfile

    from medexport.engine.serve import wire

    before = set(Path(tempfile.gettempdir()).glob("medexport-serve-*"))
    nifti = held_out(shared).read_bytes()

    def header(files, **fields) -> bytes:
        return wire.dumps({"protocol": wire.PROTOCOL, "kind": "series", "files": files, "options": {}} | fields)

    bad = {"a path": (header([["../x.nii.gz", len(nifti)]]), "hippocampus-mr", "name"),
           "sizes do not add up": (header([["x.nii.gz", len(nifti) + 1]]), "hippocampus-mr", "adds up"),
           "no table": (header(None), "hippocampus-mr", "file table"),
           "an image model": (header([["x.nii.gz", len(nifti)]]), "pneumonia-cxr", "reads one image per file")}
    for name, (raw, model, text) in bad.items():
        answered, body = _raw_call(hippo_server.http, model, raw, nifti)
        error = wire.decode(wire.json_loads(body.encode()))["error"]
        assert answered and error["type"] == "InvalidInputError" and text in error["what"], (name, error)
    answered, body = _raw_call(hippo_server.http, "hippocampus-mr", header([["x.nii.gz", len(nifti)]]), nifti)
    result = wire.decode(wire.json_loads(body.encode()))["result"]  # the same request, well formed: answered
    assert result.mask.shape == (35, 51, 35)
    assert set(Path(tempfile.gettempdir()).glob("medexport-serve-*")) == before  # no upload left behind


def test_series_file_table_is_checked_before_anything_is_written():
    from medexport.engine.serve import series

    with pytest.raises(InvalidInputError, match="file table"):
        series.table([["a.dcm", 0]])
    with pytest.raises(InvalidInputError, match="name"):
        series.table([["../a.dcm", 10]])
    with pytest.raises(InvalidInputError, match="twice"):
        series.table([["a.dcm", 10], ["a.dcm", 10]])
    assert series.names_for(["x/1.dcm", "y/1.dcm"]) == ["0000-1.dcm", "0001-1.dcm"]
    with pytest.raises(InvalidInputError, match="adds up"):
        series.write_files("/nonexistent", [("a.dcm", 4)], b"abc")
    big = b'{"protocol": 1, "kind": "file", "files": [' + b'["a", 1],' * 9000 + b'["a", 1]]}'
    with pytest.raises(InvalidInputError, match="header"):
        checks.header(big)  # the file table's allowance is for series only


def test_export_triton_states_the_volume_networks_own_dims(hippo_bundle, tmp_path, local, shared):
    from test_triton_repo import parse_pbtxt

    from medexport.export.triton_repo import export_triton

    folder = export_triton(hippo_bundle, tmp_path / "repo")
    cfg = parse_pbtxt((folder / "config.pbtxt").read_text())
    (inp,), out = cfg["input"], next(o for o in cfg["output"] if o["name"] == ["logits"])  # (and the OOD features)
    assert inp["name"] == ["volume"] and inp["dims"][0] == [1, 40, 56, 40]
    assert out["name"] == ["logits"] and out["dims"][0] == [3, 40, 56, 40]  # classes x the window
    windows = local.prepare(str(held_out(shared))).feeds["volume"]
    assert list(local.infer(windows)["logits"].shape[1:]) == out["dims"][0]
