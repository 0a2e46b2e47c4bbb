"""Talk to a PACS node: verify (C-ECHO), find (C-FIND), retrieve (C-GET), send (C-STORE).

DICOMweb nodes (``node.url``) go through :mod:`.dicomweb` (QIDO-RS, WADO-RS, STOW-RS) behind the
same four functions. Compressed transfer syntaxes (JPEG, JPEG 2000, JPEG-LS, RLE, deflate) are
proposed one per presentation context, so the PACS sends and takes objects as it stores them.
"""
from __future__ import annotations

import io
import os
import shutil
import socket
import ssl
import tempfile
import threading
import time
from pathlib import Path

from medexport.engine.errors import BackendUnavailableError, ConfigurationError

from . import PacsError
from ..atomic import fsync_dir
from .files import durable_copy, durable_replace
from ..io.dicom.syntaxes import NETWORK_ORDER
from .nodes import Node

TRANSFER_SYNTAXES = list(NETWORK_ORDER)  # uncompressed first, then each compressed family
UNCOMPRESSED = TRANSFER_SYNTAXES[:2]
MAX_CONTEXTS = 128  # DICOM's limit on presentation contexts in one association
QUERY_KEYS = {  # what the user asks by -> the C-FIND / QIDO attribute
    "patient_id": "PatientID", "patient_name": "PatientName", "date": "StudyDate", "modality": "ModalitiesInStudy",
    "accession": "AccessionNumber", "study_uid": "StudyInstanceUID", "description": "StudyDescription"}
RETURN_KEYS = ["PatientName", "PatientID", "StudyDate", "StudyTime", "ModalitiesInStudy", "StudyDescription",
               "AccessionNumber", "StudyInstanceUID", "NumberOfStudyRelatedInstances"]
SUCCESS, WARNINGS = 0x0000, (0x0001, 0xB000, 0xB006, 0xB007)


def _pynetdicom():
    try:
        import pynetdicom
    except ImportError:
        raise BackendUnavailableError("DICOM networking needs pynetdicom",
                                      fix="pip install 'medexport[pacs]'") from None
    return pynetdicom


def tls_context(node: Node, server: bool = False) -> ssl.SSLContext | None:
    """The TLS context for ``node`` (None: plain TCP). Server side: our cert/key, peers checked
    against ``tls_ca`` when given."""
    if not (node.tls_ca or node.tls_cert):
        return None
    try:
        if server:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=node.tls_ca or None)
            ctx.verify_mode = ssl.CERT_REQUIRED if node.tls_ca else ssl.CERT_NONE
        else:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=node.tls_ca or None)
        if node.tls_cert:
            ctx.load_cert_chain(node.tls_cert, node.tls_key or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"TLS files for {node.name!r} cannot be used ({exc})",
                                 expected="PEM files: CA bundle, certificate and its private key",
                                 fix="check the tls_ca / tls_cert / tls_key paths in the PACS node settings") from None
    return ctx


def associate(node: Node, contexts: list[tuple[str, list[str]]], roles: list[str] = ()):
    """An established association with ``node`` proposing ``contexts`` ((SOP class, [syntaxes]));
    SOP classes in ``roles`` are also offered in the SCP role (C-GET's storage sub-operations)."""
    pn = _pynetdicom()
    if len(contexts) > MAX_CONTEXTS:
        raise PacsError(f"{len(contexts)} presentation contexts", expected=f"at most {MAX_CONTEXTS}",
                        fix="retrieve fewer series at once")
    ae = pn.AE(ae_title=node.calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for sop, syntaxes in contexts:
        ae.add_requested_context(sop, syntaxes)
    negotiation = [pn.build_role(sop, scp_role=True) for sop in dict.fromkeys(roles)]
    ctx = tls_context(node)
    try:
        assoc = ae.associate(node.host, node.port, ae_title=node.ae_title, ext_neg=negotiation or None,
                             tls_args=(ctx, node.host) if ctx else None,
                             evt_handlers=[(pn.evt.EVT_C_STORE, _store_sub)] if roles else None)
    except (OSError, ssl.SSLError) as exc:
        raise PacsError(f"cannot connect to {node.describe()} ({exc})", fix="check the address, port and TLS settings")
    if assoc.is_established:
        return assoc
    if not assoc.is_rejected:
        try:  # aborted or no answer: say whether anything listens there at all
            socket.create_connection((node.host, node.port), timeout=5).close()
        except OSError as exc:
            raise PacsError(f"cannot connect to {node.describe()} ({exc})",
                            fix="check the address and port, and that the PACS is running") from None
    why = "rejected the association" if assoc.is_rejected else "did not answer" if not assoc.is_aborted \
        else "aborted the association"
    raise PacsError(f"{node.describe()} {why}",
                    expected=f"a DICOM node that accepts AE title {node.calling_ae!r} calling {node.ae_title!r}",
                    fix=f"check the PACS is running at {node.host}:{node.port} and has {node.calling_ae} in its "
                        "list of known modalities")


def _ok(status, what: str, node: Node) -> None:
    if status is None or "Status" not in status:
        raise PacsError(f"{node.describe()} gave no answer to {what} (connection lost or timed out)",
                        fix="check the network and try again")
    code = int(status.Status)
    if code != SUCCESS and code not in WARNINGS and not 0xFF00 <= code <= 0xFF01:
        comment = f" ({status.ErrorComment})" if "ErrorComment" in status else ""
        raise PacsError(f"{node.describe()} answered {what} with status 0x{code:04X}{comment}",
                        expected="0x0000 Success", fix="see the PACS's log for why it refused")


def echo(node: Node) -> float:
    """Verify the node (C-ECHO or a QIDO ping for DICOMweb); the round trip in ms."""
    t0 = time.perf_counter()
    if node.is_web:
        from . import dicomweb

        dicomweb.ping(node)
        return (time.perf_counter() - t0) * 1e3
    assoc = associate(node, [("1.2.840.10008.1.1", UNCOMPRESSED)])
    try:
        _ok(assoc.send_c_echo(), "C-ECHO", node)
    finally:
        assoc.release()
    return (time.perf_counter() - t0) * 1e3


def query(**filters) -> dict:
    """User filters (``patient_id``, ``patient_name``, ``date`` as YYYYMMDD or YYYYMMDD-YYYYMMDD,
    ``modality``, ``accession``, ``study_uid``, ``description``) as DICOM attributes."""
    unknown = sorted(set(filters) - set(QUERY_KEYS))
    if unknown:
        raise ConfigurationError(f"unknown query keys {unknown}", expected=f"some of {sorted(QUERY_KEYS)}")
    return {QUERY_KEYS[k]: str(v) for k, v in filters.items() if v not in (None, "")}


def row(ds, keys=RETURN_KEYS) -> dict:
    """A found study as text (several values, as ModalitiesInStudy has, joined by a backslash)."""
    from pydicom.multival import MultiValue

    values = {k: ds.get(k, "") for k in keys}
    return {k: "\\".join(map(str, v)) if isinstance(v, MultiValue) else str(v or "") for k, v in values.items()}


def find(node: Node, **filters) -> list[dict]:
    """Studies matching ``filters`` (see :func:`query`), one dict of RETURN_KEYS per study."""
    wanted = query(**filters)
    if node.is_web:
        from . import dicomweb

        return dicomweb.find(node, wanted, RETURN_KEYS)
    from pydicom.dataset import Dataset

    ident = Dataset()
    ident.QueryRetrieveLevel = "STUDY"
    for key in RETURN_KEYS:
        setattr(ident, key, "")
    for key, value in wanted.items():
        setattr(ident, key, value)
    model = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Q/R FIND
    assoc = associate(node, [(model, UNCOMPRESSED)])
    rows = []
    try:
        for status, found in assoc.send_c_find(ident, model):
            _ok(status, "C-FIND", node)
            if found is not None and int(status.Status) in (0xFF00, 0xFF01):
                rows.append(row(found))
    finally:
        assoc.release()
    return rows


def _instances(node: Node, study_uid: str) -> list[str]:
    """The SOP classes in a study (an IMAGE-level C-FIND), to propose only those for retrieval."""
    return _classes(_image_level(node, StudyInstanceUID=study_uid))


def _classes(found: list) -> list[str]:
    return [c for c in dict.fromkeys(str(f.get("SOPClassUID", "")) for f in found) if c]


def _image_level(node: Node, **match) -> list:
    """The instances matching ``match`` (StudyInstanceUID and / or SeriesInstanceUID) by an
    IMAGE-level C-FIND, with their study, series, SOP class and instance UIDs."""
    from pydicom.dataset import Dataset

    ident = Dataset()
    ident.QueryRetrieveLevel = "IMAGE"
    ident.StudyInstanceUID = ident.SeriesInstanceUID = ident.SOPInstanceUID = ident.SOPClassUID = ""
    for key, value in match.items():
        setattr(ident, key, value)
    model = "1.2.840.10008.5.1.4.1.2.2.1"
    assoc = associate(node, [(model, UNCOMPRESSED)])
    found = []
    try:
        # IMAGE level straight under STUDY is relational; peers that refuse it get the usual classes
        for status, item in assoc.send_c_find(ident, model):
            if status is not None and int(status.Status) in (0xFF00, 0xFF01) and item is not None:
                found.append(item)
    finally:
        assoc.release()
    return found


# SOP classes offered when the study's classes cannot be asked for (CR, DX, MR, CT, US, SC, ECG)
COMMON_CLASSES = ["1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1", "1.2.840.10008.5.1.4.1.1.4",
                  "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.7",
                  "1.2.840.10008.5.1.4.1.1.9.1.1", "1.2.840.10008.5.1.4.1.1.9.1.2"]


class _Sink:
    """Where one C-GET's sub-operations land (set on the association for the store handler)."""

    def __init__(self, folder: Path, cancel: threading.Event | None):
        self.folder, self.cancel, self.paths = folder, cancel, []
        self.failed, self.cancelled = 0, False  # sub-operations the peer says failed; stopped by ``cancel``


def _store_sub(event):
    sink = getattr(event.assoc, "medexport_sink", None)
    if sink is None or (sink.cancel is not None and sink.cancel.is_set()):
        return 0xA702  # refused: out of resources (cancelled)
    target = sink.folder / f"{safe_name(str(event.request.AffectedSOPInstanceUID))}.dcm"
    streamed = getattr(event.request, "_dataset_path", None)  # a listener in this process set STORE_RECV_CHUNKED_DATASET
    sink.paths.append(durable_copy(streamed, target) if streamed else durable_replace(target, event.encoded_dataset()))
    return SUCCESS


def safe_name(uid: str) -> str:
    return "".join(c for c in uid if c.isdigit() or c == ".")[:64] or "unnamed"


def get(node: Node, study_uid: str, folder, *, cancel: threading.Event | None = None, progress=None) -> list[Path]:
    """Retrieve a study into ``folder`` (one fsynced file per instance, named by SOP Instance UID).

    ``progress(done, total)`` after each instance; ``cancel`` set: stop, keep what arrived.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if node.is_web:
        from . import dicomweb

        return dicomweb.get(node, study_uid, folder, cancel=cancel, progress=progress)
    from pydicom.dataset import Dataset

    ident = Dataset()
    ident.QueryRetrieveLevel = "STUDY"
    ident.StudyInstanceUID = study_uid
    sink = _c_get(node, ident, _instances(node, study_uid) or COMMON_CLASSES, folder, cancel, progress)
    if not sink.paths and not sink.cancelled:
        raise PacsError(f"{node.describe()} sent no instance of study {study_uid}",
                        fix="check the Study Instance UID with 'medexport pacs find'")
    return sink.paths


def _c_get(node: Node, ident, classes: list[str], folder: Path, cancel, progress) -> "_Sink":
    """One C-GET of ``ident`` (Study Root), its instances stored into ``folder``."""
    model = "1.2.840.10008.5.1.4.1.2.2.3"  # Study Root Q/R GET
    contexts = [(model, UNCOMPRESSED)] + [(sop, [ts]) for sop in classes for ts in TRANSFER_SYNTAXES]
    assoc = associate(node, contexts[:MAX_CONTEXTS], roles=classes)
    sink = _Sink(folder, cancel)
    assoc.medexport_sink = sink
    try:
        for status, _ in assoc.send_c_get(ident, model):
            if cancel is not None and cancel.is_set():
                assoc.abort()
                sink.cancelled = True
                return sink
            _ok(status, "C-GET", node)
            if status is not None and "NumberOfFailedSuboperations" in status:
                sink.failed = int(status.NumberOfFailedSuboperations or 0)
            if progress is not None and status is not None and "NumberOfCompletedSuboperations" in status:
                done = int(status.NumberOfCompletedSuboperations)
                progress(done, done + int(status.get("NumberOfRemainingSuboperations", 0) or 0))
    finally:
        if assoc.is_established:
            assoc.release()
    return sink


def get_series(node: Node, series_uid: str, folder, *, study_uid: str | None = None,
               cancel: threading.Event | None = None, progress=None) -> list[Path]:
    """Retrieve one whole series (C-GET at SERIES level, or WADO-RS) into ``folder``: one file per
    instance, named by SOP Instance UID, and all of them or none. The instances arrive in a hidden
    folder beside ``folder``; only when every instance the PACS lists for the series (an IMAGE-level
    C-FIND) has arrived do they move into ``folder`` (a new folder appears whole, by one rename).
    ``study_uid`` is found by the query when not given."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
    try:
        if node.is_web:
            from . import dicomweb

            paths, expected = dicomweb.get_series(node, series_uid, staging, study_uid=study_uid, cancel=cancel,
                                                  progress=progress)
        else:
            paths, expected = _get_series(node, series_uid, staging, study_uid, cancel, progress)
        if cancel is not None and cancel.is_set():
            raise PacsError(f"the retrieval of series {series_uid} was cancelled", expected="every instance",
                            fix="retrieve the series again")
        names = {p.name for p in paths}
        missing = [u for u in expected if f"{safe_name(u)}.dcm" not in names]
        if missing or not paths:
            raise PacsError(f"{node.describe()} sent {len(paths)} of the {len(expected)} instances of series "
                            f"{series_uid}", expected="every instance of the series",
                            fix="retrieve it again; if instances keep failing, see the PACS's log")
        return _publish(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _get_series(node: Node, series_uid: str, staging: Path, study_uid, cancel, progress) -> tuple[list, list]:
    from pydicom.dataset import Dataset

    match = {"SeriesInstanceUID": series_uid} | ({"StudyInstanceUID": study_uid} if study_uid else {})
    found = _image_level(node, **match)
    if not found:
        raise PacsError(f"{node.describe()} knows no instance of series {series_uid}",
                        expected="a (0020,000E) Series Instance UID the PACS holds",
                        fix="check the UID; a PACS that cannot query by series alone needs --study too")
    studies = {str(f.get("StudyInstanceUID", "")) for f in found} - {""}
    if study_uid is None and len(studies) != 1:
        raise PacsError(f"{node.describe()} gave {len(studies)} studies for series {series_uid}",
                        expected="the series' one (0020,000D) Study Instance UID", fix="give --study too")
    ident = Dataset()
    ident.QueryRetrieveLevel = "SERIES"
    ident.StudyInstanceUID = study_uid or studies.pop()
    ident.SeriesInstanceUID = series_uid
    sink = _c_get(node, ident, _classes(found) or COMMON_CLASSES, staging, cancel, progress)
    if sink.failed:
        raise PacsError(f"{node.describe()} failed to send {sink.failed} instance(s) of series {series_uid}",
                        expected="every instance sent", fix="retrieve it again; see the PACS's log")
    return sink.paths, [str(f.SOPInstanceUID) for f in found if "SOPInstanceUID" in f]


def _publish(staging: Path, folder: Path) -> list[Path]:
    """Move the complete series from ``staging`` into ``folder``: by one rename when ``folder`` is
    new, else file by file (each rename atomic; an instance already there is replaced by itself)."""
    if not folder.exists():
        os.rename(staging, folder)
        fsync_dir(folder.parent)
        return sorted(folder.glob("*.dcm"))
    if not folder.is_dir():
        raise ConfigurationError(f"{folder} is a file", expected="a folder (new or existing) for the series",
                                 fix="choose another -o")
    out = []
    for path in sorted(staging.glob("*.dcm")):
        os.replace(path, folder / path.name)
        out.append(folder / path.name)
    fsync_dir(folder)
    return out


def _dataset(item):
    import pydicom

    if isinstance(item, (str, Path)):
        return pydicom.dcmread(item)
    return item


def send(node: Node, items, *, cancel: threading.Event | None = None, progress=None) -> list[str]:
    """Send datasets or DICOM files to ``node``; the SOP Instance UIDs it took.

    Each object goes in its own transfer syntax when the node takes it, else decompressed.
    """
    datasets = [_dataset(i) for i in items]
    if node.is_web:
        from . import dicomweb

        return dicomweb.send(node, datasets)
    contexts = []
    for ds in datasets:
        sop, ts = str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)
        contexts += [(sop, [ts])] + ([(sop, UNCOMPRESSED)] if ts not in UNCOMPRESSED else [])
    contexts = list(dict.fromkeys((s, tuple(t)) for s, t in contexts))
    assoc = associate(node, [(s, list(t)) for s, t in contexts])
    sent = []
    try:
        accepted = {(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
        for i, ds in enumerate(datasets):
            if cancel is not None and cancel.is_set():
                break
            if (str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) not in accepted:
                ds = _uncompressed(ds, node, accepted)
            _ok(assoc.send_c_store(ds), f"C-STORE of {ds.SOPInstanceUID}", node)
            sent.append(str(ds.SOPInstanceUID))
            if progress is not None:
                progress(i + 1, len(datasets))
    finally:
        if assoc.is_established:
            assoc.release()
    return sent


def _uncompressed(ds, node: Node, accepted: set):
    sop = str(ds.SOPClassUID)
    if not any((sop, ts) in accepted for ts in UNCOMPRESSED):
        raise PacsError(f"{node.describe()} does not take SOP class {sop}",
                        expected="a PACS that stores this kind of object", fix="ask the PACS admin to allow it")
    import pydicom

    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    buf.seek(0)
    copy = pydicom.dcmread(buf)  # never change the caller's dataset
    copy.decompress()
    return copy
