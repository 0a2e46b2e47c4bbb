"""A real PACS for the tests: Orthanc (Debian package ``orthanc`` + ``orthanc-dicomweb``) on loopback
ports with its own temporary storage, started once per session. No mock PACS."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Orthanc:
    aet: str
    dicom_port: int
    http_port: int
    process: subprocess.Popen

    @property
    def address(self) -> str:
        return f"{self.aet}@127.0.0.1:{self.dicom_port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def node(self, name: str = "orthanc", **extra):
        from medexport.engine.pacs.nodes import Node

        return Node(name, ae_title=self.aet, host="127.0.0.1", port=self.dicom_port, **extra)

    def web_node(self, name: str = "orthanc-web"):
        from medexport.engine.pacs.nodes import Node

        return Node(name, url=f"{self.http}/dicom-web")

    def rest(self, path: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.http + path, data=data, method="POST" if data is not None else "GET")
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
        return json.loads(raw) if r.headers.get_content_type() == "application/json" else raw

    def find(self, level: str = "Instance", **query) -> list:
        return self.rest("/tools/find", {"Level": level, "Query": query, "Expand": True})

    def delete_all(self) -> None:
        for pid in self.rest("/patients"):
            urllib.request.urlopen(urllib.request.Request(f"{self.http}/patients/{pid}", method="DELETE"), timeout=30)


def start_orthanc(folder: Path, ports: tuple[int, int] | None = None) -> Orthanc:
    """Orthanc on loopback with its storage in ``folder``; ``ports`` (DICOM, HTTP) to restart one
    where it was, else free ones."""
    exe = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    if not Path(exe).exists():
        pytest.fail("Orthanc is not installed: `make test` installs it (apt-get install -y orthanc orthanc-dicomweb)")
    dicom_port, http_port = ports or (free_port(), free_port())
    config = {
        "Name": "medexport-test", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
        "DicomAet": "ORTHANC", "DicomPort": dicom_port, "HttpPort": http_port,
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomCheckCalledAet": False,
        "DicomAlwaysAllowFind": True, "DicomAlwaysAllowGet": True, "DicomAlwaysAllowStore": True,
        "Plugins": [str(DICOMWEB_PLUGIN)] if DICOMWEB_PLUGIN.exists() else [],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}, "SaveJobs": False, "StableAge": 1,
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = open(folder / "orthanc.log", "wb")
    proc = subprocess.Popen([exe, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    server = Orthanc("ORTHANC", dicom_port, http_port, proc)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"Orthanc exited with {proc.returncode}: {(folder / 'orthanc.log').read_text()[-2000:]}")
        try:
            server.rest("/system")
            with socket.create_connection(("127.0.0.1", dicom_port), timeout=1):
                return server
        except OSError:
            time.sleep(0.1)
    proc.kill()
    pytest.fail("Orthanc did not answer within 30 s")


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory):
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    yield server
    server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()
