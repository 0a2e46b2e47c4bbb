"""DICOMweb nodes (QIDO-RS find, WADO-RS retrieve, STOW-RS send) through dicomweb-client.

Objects are asked for in the transfer syntax the server stores them in (``transfer-syntax=*``),
so a compressed study arrives compressed. The password for basic auth is read from
``$MEDEXPORT_PACS_PASSWORD``, never from the settings file.
"""
from __future__ import annotations

import io
import os
import threading
from pathlib import Path

from medexport.engine.errors import BackendUnavailableError

from . import PacsError
from .files import durable_replace
from .nodes import Node

AS_STORED = (("application/dicom", "*"),)


def client(node: Node):
    try:
        import requests
        from dicomweb_client.api import DICOMwebClient
    except ImportError:
        raise BackendUnavailableError("DICOMweb nodes need dicomweb-client", fix="pip install 'medexport[pacs]'") from None
    session = requests.Session()
    if node.username:
        session.auth = (node.username, os.environ.get("MEDEXPORT_PACS_PASSWORD", ""))
    if node.tls_ca:
        session.verify = node.tls_ca
    if node.tls_cert:
        session.cert = (node.tls_cert, node.tls_key) if node.tls_key else node.tls_cert
    return DICOMwebClient(node.url, session=session)


def _call(node: Node, what: str, fn, *args, **kw):
    import requests

    try:
        return fn(*args, **kw)
    except requests.RequestException as exc:
        raise PacsError(f"{node.describe()} failed {what} ({exc})",
                        fix="check the DICOMweb URL, the network and the credentials") from None


def ping(node: Node) -> None:
    _call(node, "a QIDO-RS query", client(node).search_for_studies, limit=1)


def find(node: Node, wanted: dict, keys: list[str]) -> list[dict]:
    from pydicom.dataset import Dataset

    found = _call(node, "QIDO-RS", client(node).search_for_studies, search_filters=wanted, fields=keys)
    from .scu import row

    return [row(Dataset.from_json(item), keys) for item in found]


def get(node: Node, study_uid: str, folder: Path, *, cancel: threading.Event | None = None,
        progress=None) -> list[Path]:
    from .scu import safe_name

    web = client(node)
    total = len(_call(node, "WADO-RS metadata", web.retrieve_study_metadata, study_uid))
    paths = []
    for ds in _call(node, "WADO-RS", web.iter_study, study_uid, media_types=AS_STORED):
        if cancel is not None and cancel.is_set():
            break
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        paths.append(durable_replace(folder / f"{safe_name(str(ds.SOPInstanceUID))}.dcm", buf.getvalue()))
        if progress is not None:
            progress(len(paths), total)
    return paths


def send(node: Node, datasets: list) -> list[str]:
    response = _call(node, "STOW-RS", client(node).store_instances, datasets)
    failed = response.get("FailedSOPSequence") if response is not None else None
    if failed:
        uids = [str(item.get("ReferencedSOPInstanceUID", "?")) for item in failed]
        raise PacsError(f"{node.describe()} refused {len(uids)} object(s) in STOW-RS: {', '.join(uids)}",
                        expected="every object stored", fix="see the PACS's log for why it refused")
    return [str(ds.SOPInstanceUID) for ds in datasets]
