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
    web = client(node)
    total = len(_call(node, "WADO-RS metadata", web.retrieve_study_metadata, study_uid))
    return _save_all(_call(node, "WADO-RS", web.iter_study, study_uid, media_types=AS_STORED), folder, total,
                     cancel, progress)


def _save_all(datasets, folder: Path, total: int, cancel, progress) -> list[Path]:
    """Write each retrieved dataset as it arrives (durably, named by its SOP Instance UID)."""
    from .scu import safe_name

    paths = []
    for ds in datasets:
        if cancel is not None and cancel.is_set():
            break
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        paths.append(durable_replace(folder / f"{safe_name(str(ds.SOPInstanceUID))}.dcm", buf.getvalue()))
        if progress is not None:
            progress(len(paths), total)
    return paths


def get_series(node: Node, series_uid: str, folder: Path, *, study_uid: str | None = None,
               cancel: threading.Event | None = None, progress=None) -> tuple[list[Path], list[str]]:
    """One series by WADO-RS into ``folder``; (the files, the SOP Instance UIDs its metadata lists).
    The study is found by a QIDO-RS series query when not given."""
    web = client(node)
    if study_uid is None:
        found = _call(node, "QIDO-RS", web.search_for_series, search_filters={"SeriesInstanceUID": series_uid},
                      fields=["StudyInstanceUID"])
        studies = {str(item.get("0020000D", {}).get("Value", [""])[0]) for item in found} - {""}
        if len(studies) != 1:
            raise PacsError(f"{node.describe()} gave {len(studies)} studies for series {series_uid}",
                            expected="the series' one (0020,000D) Study Instance UID",
                            fix="check the UID, or give --study")
        study_uid = studies.pop()
    meta = _call(node, "WADO-RS metadata", web.retrieve_series_metadata, study_uid, series_uid)
    expected = [str(item.get("00080018", {}).get("Value", [""])[0]) for item in meta]
    paths = _save_all(_call(node, "WADO-RS", web.iter_series, study_uid, series_uid, media_types=AS_STORED), folder,
                      len(expected), cancel, progress)
    return paths, expected


def send(node: Node, datasets: list) -> list[str]:
    response = _call(node, "STOW-RS", client(node).store_instances, datasets)
    failed = response.get("FailedSOPSequence") if response is not None else None
    if failed:
        uids = [str(item.get("ReferencedSOPInstanceUID", "?")) for item in failed]
        raise PacsError(f"{node.describe()} refused {len(uids)} object(s) in STOW-RS: {', '.join(uids)}",
                        expected="every object stored", fix="see the PACS's log for why it refused")
    return [str(ds.SOPInstanceUID) for ds in datasets]
