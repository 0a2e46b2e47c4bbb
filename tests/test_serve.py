"""`medexport serve` on a real Triton (pytriton) on loopback: remote models give the local results,
and a server that is missing, stops or is too slow gives a clear MedError, never a hang."""
from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient.http", reason="the 'server' extra (tritonclient) is not installed")
pytest.importorskip("pytriton", reason="nvidia-pytriton is not installed (make install adds it on Linux x86_64)")

from medexport.engine import open_bundle  # noqa: E402
from medexport.engine.errors import BackendUnavailableError, BundleError, ConfigurationError, InvalidInputError, MedError  # noqa: E402
from medexport.engine.remote import parse_url  # noqa: E402
from medexport.engine.serve import wire  # noqa: E402
from medexport.engine.serve.loadtest import free_ports  # noqa: E402
from medexport.engine.serve.stub_env import stub_env_path  # noqa: E402

if not (stub_env_path() / "bin" / "python").is_file():
    pytest.skip(f"no Triton stub environment at {stub_env_path()}: run 'medexport serve --setup' (make install does)",
                allow_module_level=True)

pytestmark = pytest.mark.slow


class Server:
    """``medexport serve`` as a subprocess on free loopback ports."""

    def __init__(self, bundles, *extra, log: Path):
        self.http, grpc, metrics = free_ports(3)
        self.metrics = metrics
        cmd = [sys.executable, "-m", "medexport.export.cli", "serve", *map(str, bundles), "--port", str(self.http),
               "--grpc-port", str(grpc), "--metrics-port", str(metrics), *extra]
        self.log = log
        self.proc = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 240
        while not self.ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"medexport serve did not become ready: {log.read_text(errors='replace')[-3000:]}")
            time.sleep(1)

    def url(self, name: str) -> str:
        return f"triton://127.0.0.1:{self.http}/{name}"

    def ready(self) -> bool:
        """Health says ready and every model is bound (the server prints 'serving ...' then)."""
        if b"serving " not in self.log.read_bytes():
            return False
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)  # the server and the tritonserver it started, nothing else
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@pytest.fixture(scope="module")
def server(pneumonia_bundle, ecg_bundle, tmp_path_factory):
    srv = Server([pneumonia_bundle, ecg_bundle], "--backend", "onnxruntime", "--instances", "2",
                 log=tmp_path_factory.mktemp("serve") / "serve.log")
    yield srv
    srv.stop()


def same_result(remote, local, tolerance: float) -> None:
    """Every field the engine computed is the same; scores within the artifact's tolerance."""
    assert type(remote) is type(local)
    for f in dataclasses.fields(local):
        a, b = getattr(remote, f.name), getattr(local, f.name)
        if f.name in ("timings_ms", "created", "provenance"):
            continue
        if f.name == "scores":
            assert a.keys() == b.keys() and all(abs(a[k] - b[k]) <= tolerance for k in a), (a, b)
        elif isinstance(b, np.ndarray):
            np.testing.assert_allclose(a, b, atol=tolerance)
        else:
            assert a == b, f.name


def test_pneumonia_remote_equals_local(server, pneumonia_bundle, cxr, dcm):
    studies = cxr[:3] + [dcm("693_J2KR.dcm")]
    with open_bundle(pneumonia_bundle, backend="onnxruntime") as local, open_bundle(server.url("pneumonia-cxr")) as remote:
        tol = local.artifact.tolerance
        for study in studies:
            r, l = remote.predict(study), local.predict(study)
            same_result(r, l, tol)
            assert r.source == study and r.headline() == l.headline() and r.warnings == l.warnings
            assert r.provenance.server == server.url("pneumonia-cxr")
            assert server.url("pneumonia-cxr") in r.to_dict()["device"]
            assert r.provenance.bundle_sha256 == local.sha256 and r.backend == "onnxruntime"
            assert np.abs(r.heatmap - l.heatmap).max() <= 1e-3  # rebuilt from the same grid and geometry
        pixels = np.linspace(0, 1, 256 * 256, dtype=np.float32).reshape(256, 256)
        same_result(remote.predict(pixels), local.predict(pixels), tol)
        batch = np.random.default_rng(0).normal(size=(3, *local.manifest.input.shape[1:])).astype(np.float32)
        np.testing.assert_allclose(remote.scores(batch), local.scores(batch), atol=tol)


def test_ecg_remote_equals_local(server, ecg_bundle, shared, pydicom_file):
    from medexport.engine.io.ecg import read_ecg

    signal_ = read_ecg(shared / "ecg" / "cinc2017-af" / "A00004.hea").signals[0]
    with open_bundle(ecg_bundle, backend="onnxruntime") as local, open_bundle(server.url("ecg-rhythm")) as remote:
        tol = local.artifact.tolerance
        same_result(remote.predict(signal_, fs=300), local.predict(signal_, fs=300), tol)
        dicom = pydicom_file("waveform_ecg.dcm")
        same_result(remote.predict(dicom), local.predict(dicom), tol)
        with pytest.raises(InvalidInputError, match="WFDB"):
            remote.predict(str(shared / "ecg" / "cinc2017-af" / "A00004.hea"))


def test_server_errors_arrive_as_the_same_med_error(server, tmp_path):
    with open_bundle(server.url("pneumonia-cxr")) as remote:
        with pytest.raises(ConfigurationError, match="lead"):
            remote.predict(np.ones((64, 64), np.float32), lead="II")  # an option the task does not take
        bad = tmp_path / "not-an-image.png"
        bad.write_bytes(b"not a picture")
        with pytest.raises(InvalidInputError, match="127.0.0.1"):
            remote.predict(bad)
        with pytest.raises(InvalidInputError):
            remote.infer(np.zeros((1, 3, 7, 7), np.float32))  # wrong shape: refused with the expected shape


def test_missing_model_and_down_server_are_clear(server):
    with pytest.raises(BundleError, match="no ready model 'nope'"):
        open_bundle(server.url("nope"))
    port, = free_ports(1)
    t0 = time.monotonic()
    with pytest.raises(BackendUnavailableError, match="cannot be reached"):
        open_bundle(f"triton://127.0.0.1:{port}/pneumonia-cxr")
    assert time.monotonic() - t0 < 10
    silent = socket.socket()  # accepts connections (backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    t0 = time.monotonic()
    with pytest.raises(BackendUnavailableError, match="127.0.0.1"):
        open_bundle(f"triton://127.0.0.1:{silent.getsockname()[1]}/pneumonia-cxr", timeout=2)
    assert time.monotonic() - t0 < 15
    silent.close()
    with pytest.raises(ConfigurationError, match="triton://HOST"):
        parse_url("triton://127.0.0.1:8000/")
    with pytest.raises(ConfigurationError, match="server chose"):
        open_bundle(server.url("pneumonia-cxr"), backend="openvino")


def test_health_and_metrics(server):
    with urllib.request.urlopen(f"http://127.0.0.1:{server.http}/v2/health/live", timeout=5) as r:
        assert r.status == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{server.http}/v2/models/pneumonia-cxr/ready", timeout=5) as r:
        assert r.status == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics}/metrics", timeout=5) as r:
        text = r.read().decode()
    assert 'nv_inference_request_success{model="pneumonia-cxr"' in text  # the earlier tests' requests


def test_stopping_the_server_mid_load_fails_clients_clearly(pneumonia_bundle, cxr, tmp_path):
    srv = Server([pneumonia_bundle], "--instances", "1", log=tmp_path / "serve.log")
    errors, done = [], []

    def client():
        try:
            with open_bundle(srv.url("pneumonia-cxr"), timeout=20) as remote:
                while True:
                    remote.predict(cxr[0])
                    done.append(1)
        except MedError as exc:
            errors.append(exc)
        except BaseException as exc:  # noqa: BLE001 - the test reports anything that is not a MedError
            errors.append(exc)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(done) < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert done, "no request succeeded before the stop"
        srv.stop(signal.SIGKILL)  # the server goes away mid-load, without a goodbye
    finally:
        srv.stop()
    for t in threads:
        t.join(45)
    assert not any(t.is_alive() for t in threads), "a client hangs after the server stopped"
    assert len(errors) == 4 and all(isinstance(e, BackendUnavailableError) for e in errors), errors
    assert all("127.0.0.1" in str(e) and "Fix:" in str(e) for e in errors)


def test_wire_refuses_foreign_records():
    with pytest.raises(BundleError, match="record of type 'Popen'"):
        wire.decode({"__rec__": "Popen", "fields": {}})
    value = {"a": (1, np.arange(3, dtype=np.int16)), 2: [None, 1.5]}
    back = wire.decode(wire.json_loads(wire.dumps(wire.encode(value))))
    assert back["a"][0] == 1 and back["a"][1].dtype == np.int16 and back[2] == [None, 1.5]


def test_the_viewer_uses_the_server_named_in_its_settings(server, cxr):
    from medexport.desktop.paths import data_dir
    from medexport.desktop.state import AppState

    data_dir().mkdir(parents=True, exist_ok=True)
    ini = data_dir() / "viewer.ini"
    before = ini.read_text() if ini.exists() else None
    ini.write_text(f"[General]\nserved_models = {server.url('pneumonia-cxr')}, {server.url('ecg-rhythm')}\n")
    try:
        state = AppState()
        state.discover()
        assert sorted(b.model_id for b in state.bundles) == ["ecg-rhythm", "pneumonia-cxr"]
        entry = state.chosen["image"]
        assert entry.path == server.url("pneumonia-cxr") and "model server" in state.runtime_of(entry)
        r = state.engine(entry).predict(cxr[0])
        assert r.provenance.server == server.url("pneumonia-cxr")
        ini.write_text("[General]\nserved_models = triton://127.0.0.1:9/pneumonia-cxr\n")  # nothing listens on 9
        state = AppState()
        state.discover()
        assert state.bundles == [] and "127.0.0.1:9" in state.bundle_problems[0]
    finally:
        if before is None:
            ini.unlink()
        else:
            ini.write_text(before)


def test_the_stub_retries_a_refused_handshake(tmp_path):
    """pytriton 0.7.0's stub connected once to the handshake socket; the file exists from bind(),
    before listen(), and a CI run landed in that gap ("Connection refused"). The patched copy the
    stub runs retries until its deadline: here a socket that only starts listening 0.3 s later."""
    from pytriton.proxy import communication

    from medexport.engine.serve import server

    source = Path(communication.__file__).read_bytes()
    assert server.CONNECT_ONCE in source  # the pinned pytriton: the patch applies
    namespace: dict = {}
    exec(compile(source.replace(server.CONNECT_ONCE, server.CONNECT_RETRYING), "communication.py", "exec"), namespace)
    path = tmp_path / "handshake.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))  # the file exists, nobody listens yet: a connect is refused

    def serve_later():
        time.sleep(0.3)
        listener.listen(1)
        conn, _ = listener.accept()
        conn.recv(64)
        payload = b'{"ok": true}'
        conn.sendall(len(payload).to_bytes(4, "big") + payload)
        conn.close()

    thread = threading.Thread(target=serve_later)
    thread.start()
    try:
        assert namespace["get_config_from_handshake_server"](path, timeout_s=5.0) == {"ok": True}
    finally:
        thread.join()
        listener.close()
