"""PACS nodes: one JSON settings file shared by the CLI, the listener and the viewer.

``$MEDEXPORT_PACS_NODES``, else ``pacs-nodes.json`` in the app's data folder (``$MEDEXPORT_HOME``
or the platform's per-user data folder, the viewer's too). A node is a DICOM peer (AE title,
host, port, optional TLS) or a DICOMweb endpoint (``url``).
"""
from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from medexport.engine.atomic import write_new
from medexport.engine.errors import ConfigurationError, suggest

NODES_FILE = "pacs-nodes.json"
OUR_AE = "MEDEXPORT"
_AE = re.compile(r"[ -~]{1,16}")  # 1-16 printable ASCII characters, no backslash
_ADDRESS = re.compile(r"(?P<ae>[^@]{1,16})@(?P<host>[^:@]+):(?P<port>\d{1,5})")


def data_home() -> Path:
    """``$MEDEXPORT_HOME``, else the platform's per-user data folder + /medexport."""
    if os.environ.get("MEDEXPORT_HOME"):
        return Path(os.environ["MEDEXPORT_HOME"])
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA", Path.home())) / "medexport"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "medexport"
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "medexport"


def nodes_path() -> Path:
    return Path(os.environ.get("MEDEXPORT_PACS_NODES") or data_home() / NODES_FILE)


def check_ae(title: str, where: str) -> str:
    if not isinstance(title, str) or not _AE.fullmatch(title) or "\\" in title or not title.strip():
        raise ConfigurationError(f"{where} is {title!r}", expected="an AE title of 1-16 printable ASCII characters",
                                 fix="use the AE title configured on the PACS, e.g. ORTHANC")
    return title.strip()


@dataclass(frozen=True)
class Node:
    """A peer: DICOM (``ae_title``, ``host``, ``port``) or DICOMweb (``url``); TLS by file paths."""

    name: str
    ae_title: str = ""
    host: str = ""
    port: int = 0
    url: str = ""
    calling_ae: str = OUR_AE  # our AE title towards this node
    tls_ca: str = ""  # CA bundle that signed the peer's certificate: TLS on when set
    tls_cert: str = ""  # our certificate and key, when the peer asks for one
    tls_key: str = ""
    username: str = ""  # DICOMweb basic auth (password: $MEDEXPORT_PACS_PASSWORD, never in the file)
    send_overlay: bool = True  # results go with the overlay burnt into a secondary capture

    def __post_init__(self):
        if not isinstance(self.send_overlay, bool):
            raise ConfigurationError(f"node {self.name!r} has send_overlay {self.send_overlay!r}",
                                     expected="true or false", fix='write "send_overlay": true (or false) in the file')
        if self.url:
            if not self.url.startswith(("http://", "https://")):
                raise ConfigurationError(f"node {self.name!r} has url {self.url!r}",
                                         expected="an http:// or https:// DICOMweb root",
                                         fix="give the DICOMweb root, e.g. https://pacs.example/dicom-web")
            return
        check_ae(self.ae_title, f"node {self.name!r} AE title")
        check_ae(self.calling_ae, f"node {self.name!r} calling AE title")
        if not self.host or isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise ConfigurationError(f"node {self.name!r} has host {self.host!r} port {self.port!r}",
                                     expected="a host name or address and a port 1-65535",
                                     fix="give the PACS address as AET@HOST:PORT, e.g. ORTHANC@10.0.0.5:4242")

    @property
    def is_web(self) -> bool:
        return bool(self.url)

    def describe(self) -> str:
        where = self.url or f"{self.ae_title}@{self.host}:{self.port}"
        return (where if where == self.name else f"{self.name}: {where}") + (" (TLS)" if self.tls_ca or self.url.startswith("https") else "")

    @classmethod
    def from_address(cls, address: str, name: str | None = None, **extra) -> "Node":
        """``AET@HOST:PORT`` (or a DICOMweb ``http(s)://`` URL) as a node."""
        if address.startswith(("http://", "https://")):
            return cls(name or address, url=address.rstrip("/"), **extra)
        m = _ADDRESS.fullmatch(address.strip())
        if m is None:
            raise ConfigurationError(f"PACS address {address!r}", expected="AET@HOST:PORT or a DICOMweb URL",
                                     fix="e.g. ORTHANC@127.0.0.1:4242")
        return cls(name or address, ae_title=m["ae"], host=m["host"], port=int(m["port"]), **extra)


def load_nodes(path: Path | None = None) -> dict[str, Node]:
    path = Path(path or nodes_path())
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        known = {f.name for f in fields(Node)}
        return {name: Node(name=name, **{k: v for k, v in spec.items() if k in known})
                for name, spec in data.get("nodes", {}).items()}
    except (ValueError, TypeError, AttributeError) as exc:
        raise ConfigurationError(f"{path} cannot be read as PACS nodes ({exc})",
                                 expected='{"nodes": {"NAME": {"ae_title": ..., "host": ..., "port": ...}}}',
                                 fix="fix or delete the file and add nodes again with 'medexport pacs add'") from None


def save_nodes(nodes: dict[str, Node], path: Path | None = None) -> Path:
    """Replace the settings file (written complete, then renamed over the old one)."""
    path = Path(path or nodes_path())
    defaults = {f.name: f.default for f in fields(Node)}
    body = {"nodes": {n.name: {k: v for k, v in asdict(n).items() if k != "name" and v != defaults[k]}
                      for n in nodes.values()}}
    tmp = write_new(path.with_name(f".{path.name}.new"), (json.dumps(body, indent=2) + "\n").encode())
    os.replace(tmp, path)
    return path


def get_node(name_or_address: str, path: Path | None = None) -> Node:
    """A node by its name in the settings file, or an ``AET@HOST:PORT`` / URL given directly."""
    nodes = load_nodes(path)
    if name_or_address in nodes:
        return nodes[name_or_address]
    if "@" in name_or_address or name_or_address.startswith(("http://", "https://")):
        return Node.from_address(name_or_address)
    raise ConfigurationError(f"no PACS node named {name_or_address!r} in {path or nodes_path()}"
                             + suggest(name_or_address, nodes), expected=f"one of {sorted(nodes) or 'none yet'}",
                             fix="add it: medexport pacs add NAME AET@HOST:PORT (or a DICOMweb URL)")
