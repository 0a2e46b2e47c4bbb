"""A model served by ``medexport serve`` (Triton), used like a local one.

``open_bundle("triton://host:8000/pneumonia-cxr")`` returns a :class:`RemoteModel` whose
``predict`` sends the study (file bytes, or an array) and rebuilds the engine's own result
class from the server's answer: the same fields, scores as the server's runtime computed them,
and provenance naming the server. Every call has a connection and a response timeout; a server
that is down, stops, is too slow or lacks the model raises a :class:`MedError`, never hangs.
Needs ``tritonclient[http]`` (the ``server`` extra).
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from .errors import BackendUnavailableError, BundleError, ConfigurationError, InvalidInputError
from .limits import MAX_FILE_BYTES
from .manifest import Manifest
from .results import Provenance
from .serve import wire
from .tasks import task_for

SCHEME = "triton"
DEFAULT_PORT = 8000
CONNECT_TIMEOUT_S = 5.0
TIMEOUT_S = 60.0  # one study, queueing included


def is_remote(path) -> bool:
    return isinstance(path, str) and path.startswith(f"{SCHEME}://")


@dataclasses.dataclass(frozen=True)
class RemoteProvenance(Provenance):
    """The server's provenance plus the server it came from (also named in ``device``)."""

    server: str = ""


def parse_url(url: str) -> tuple[str, int, str]:
    """(host, port, model name) of ``triton://host[:port]/model``."""
    parts = urlsplit(url)
    name = parts.path.strip("/")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        port = None
    if parts.scheme != SCHEME or not parts.hostname or not name or "/" in name or port is None \
            or parts.query or parts.fragment:
        raise ConfigurationError(f"model address {url!r}", expected="triton://HOST[:PORT]/MODEL, "
                                 "e.g. triton://127.0.0.1:8000/pneumonia-cxr",
                                 fix="give the server's HTTP address and the model's name")
    return parts.hostname, port, name


class RemoteModel:
    """The client side of one served model: a Runner (engine/runner.py) like :class:`Model`, plus
    ``infer`` and ``scores``; the server reads, batches and screens."""

    batches_locally = False  # one request per study; Triton's dynamic batcher groups them

    def prepare(self, source, **options):
        raise ConfigurationError("a served model reads its studies on the server", expected="predict()",
                                 fix="call predict(); engine.pipeline.run() chooses the right path")

    complete_many = prepare

    def __init__(self, url: str, *, timeout: float = TIMEOUT_S, connect_timeout: float = CONNECT_TIMEOUT_S,
                 strict: bool | None = None):
        try:
            import tritonclient.http  # noqa: F401
        except ImportError:
            raise BackendUnavailableError("tritonclient is not installed", expected="the 'server' extra",
                                          fix="pip install 'medexport[server]' to use triton:// models") from None
        self.host, self.port, self.name = parse_url(url)
        self.url = f"{SCHEME}://{self.host}:{self.port}/{self.name}"
        self.timeout, self.connect_timeout = float(timeout), float(connect_timeout)
        from .screening import strict_default

        self.strict = strict_default() if strict is None else bool(strict)
        self._local = threading.local()
        self._statement = None  # describe(), asked once
        self._check_ready()
        info = self._call({"kind": "info"}, b"-")["info"]  # pytriton cannot pass an empty bytes item
        prov = info["provenance"]
        self.info = info
        self.labels = tuple(info["labels"])
        self.task_name, self.study_kind = info["task"], info["study_kind"]
        self.provenance = RemoteProvenance(**{f.name: getattr(prov, f.name) for f in dataclasses.fields(prov)}
                                           | {"device": f"{prov.device} via {self.url}"}, server=self.url)

    backend = property(lambda self: self.provenance.backend)
    precision = property(lambda self: self.provenance.precision)
    sha256 = property(lambda self: self.provenance.bundle_sha256)  # the served bundle's, as Model.sha256
    manifest = property(lambda self: self.describe()["manifest"])
    artifact = property(lambda self: self.describe()["artifact"])
    task = property(lambda self: self.describe()["task"])

    def describe(self) -> dict:
        """What the server states about the bundle it serves (asked once): ``manifest`` (checked
        against the bundle SHA-256 the server names), ``artifact`` and ``task`` it runs, ``signature``
        (the server's check), ``reports`` and ``sizes`` (bytes) per artifact, ``card`` (text), ``strict``."""
        if self._statement is None:
            found = self._call({"kind": "describe"}, b"-")["describe"]
            raw = found["manifest"].encode("utf-8")
            if hashlib.sha256(raw).hexdigest() != self.provenance.bundle_sha256:
                raise BundleError(f"the manifest the server at {self.host}:{self.port} sends for {self.name!r} is not "
                                  f"the bundle it names ({self.provenance.bundle_sha256[:12]}...)",
                                  expected="the manifest of the served bundle",
                                  fix="restart the server (medexport serve); check that nothing between you and it "
                                      "changes its answers")
            manifest = Manifest.from_json(raw)
            artifact = next((a for a in manifest.artifacts if a.key == found["artifact"]), None)
            if artifact is None:
                raise BundleError(f"the server runs artifact {found['artifact']!r}, which the manifest of "
                                  f"{self.name!r} does not list", expected=", ".join(a.key for a in manifest.artifacts),
                                  fix="use the same medexport version on the server and the client")
            self._statement = found | {"manifest": manifest, "artifact": artifact,
                                       "task": task_for(manifest, artifact)}
        return self._statement

    def golden(self, reference=None) -> dict:
        """The bundle's golden inputs and stored answers (``golden.npz``), checked against the
        manifest's SHA-256: from the server, or from ``reference``, a local copy of the served
        bundle (refused unless it is the same bundle: the same SHA-256)."""
        manifest = self.manifest
        if not manifest.golden:
            raise BundleError(f"bundle {manifest.model_id} carries no golden inputs", fix="rebuild the bundle")
        if reference is not None:
            from .bundle_read import read_manifest

            local, sha, root = read_manifest(reference)
            if sha != self.provenance.bundle_sha256:
                raise BundleError(f"{reference} is bundle {local.model_id} {local.model_version} ({sha[:12]}...); "
                                  f"{self.url} serves {self.provenance.model_version} "
                                  f"({self.provenance.bundle_sha256[:12]}...)",
                                  expected="a local copy of the bundle the server serves (the same SHA-256)",
                                  fix="give the copy the server was started with, or leave the local bundle out "
                                      "to take the golden inputs from the server")
            data = (root / manifest.golden).read_bytes()
        else:
            data = self._call({"kind": "golden"}, b"-")["golden"]["npz"].tobytes()
        if hashlib.sha256(data).hexdigest() != manifest.files[manifest.golden]:
            raise BundleError(f"the golden inputs of {self.name!r} do not match the served bundle's manifest",
                              expected="golden.npz as listed in manifest.json",
                              fix="copy the bundle again (local) or restart the server")
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}

    def self_test(self, threads: int = 4, reference=None):
        """The golden inputs replayed through the server against the source model's stored scores
        at the artifact's tolerance (see :mod:`medexport.engine.selftest`); ``reference``: a local
        copy of the served bundle to take them from."""
        from .selftest import run_self_test

        return dataclasses.replace(run_self_test(self, threads, golden=self.golden(reference)), server=self.url)

    def predict(self, source, **options):
        """One study on the server; the same result class as ``Model.predict``."""
        t0 = time.perf_counter()
        if isinstance(source, np.ndarray):
            header, payload, shown = {"kind": "array"}, wire.npy_bytes(source), None
        elif self.study_kind == "volume" and (isinstance(source, (list, tuple))
                                              or isinstance(source, (str, os.PathLike)) and os.path.isdir(source)):
            header, payload, sent = _series(source)  # the whole volume: the server windows it (serve/series.py)
            shown = str(source) if not isinstance(source, (list, tuple)) else None
        elif isinstance(source, (str, os.PathLike)):
            path = Path(source)
            header, payload, shown = {"kind": "file", "name": path.name}, _read(path), str(source)
        else:
            raise InvalidInputError(f"the study is a {type(source).__name__}", expected="a file path or an array")
        reply = self._call(header | {"options": options}, payload)
        result = reply["result"]
        if header["kind"] == "series" and shown is None:  # a list: its first slice's file, as a local result says
            shown = sent.get(Path(result.source).name, result.source)
        refuse_outside_intended_use(result, self.strict)
        timings = dict(result.timings_ms) | {"round_trip": (time.perf_counter() - t0) * 1e3}
        return dataclasses.replace(result, provenance=self.provenance, timings_ms=timings,
                                   source=shown if shown is not None else result.source)

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Raw outputs for an already-preprocessed (N, ...) float32 batch, run on the server."""
        return self._call({"kind": "tensor"}, wire.npy_bytes(np.ascontiguousarray(batch, np.float32)))["outputs"]

    def scores(self, batch: np.ndarray) -> np.ndarray:
        return self._call({"kind": "tensor"}, wire.npy_bytes(np.ascontiguousarray(batch, np.float32)))["scores"]

    # -- transport ---------------------------------------------------------------------
    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:  # tritonclient's clients are not thread-safe: one per thread
            import tritonclient.http as http

            client = http.InferenceServerClient(f"{self.host}:{self.port}", connection_timeout=self.connect_timeout,
                                                network_timeout=self.timeout)
            self._local.client = client
        return client

    def _check_ready(self) -> None:
        client = self._client()
        try:
            live = client.is_server_live()
            ready = live and client.is_model_ready(self.name)  # (pytriton restricts the repository index)
        except _transport_errors() as exc:
            raise self._unavailable(exc) from None
        if not live:
            raise BackendUnavailableError(f"the Triton server at {self.host}:{self.port} is not live",
                                          fix="start it (medexport serve BUNDLE...) or check its log")
        if not ready:
            raise BundleError(f"the server at {self.host}:{self.port} has no ready model {self.name!r}",
                              expected="the model id of a served bundle (medexport serve prints them)",
                              fix="use a served model's name, or serve that bundle")

    def _call(self, header: dict, payload: bytes) -> dict:
        import tritonclient.http as http

        inputs = [http.InferInput("study", [1, 1], "BYTES"), http.InferInput("request", [1, 1], "BYTES")]
        inputs[0].set_data_from_numpy(np.array([[payload]], dtype=object), binary_data=True)
        inputs[1].set_data_from_numpy(np.array([[wire.dumps(header | {"protocol": wire.PROTOCOL})]], dtype=object),
                                      binary_data=True)
        outputs = [http.InferRequestedOutput("result", binary_data=True)]
        try:
            response = self._client().infer(self.name, inputs, outputs=outputs)
        except _transport_errors() as exc:
            self._local.client = None  # a broken connection is not reused
            raise self._unavailable(exc) from None
        reply = wire.decode(wire.json_loads(response.as_numpy("result").reshape(-1)[0]))
        if "error" in reply:
            wire.raise_error(reply["error"], f"server {self.host}:{self.port}, model {self.name}")
        return reply

    def _unavailable(self, exc: Exception) -> BackendUnavailableError | BundleError:
        text = f"{type(exc).__name__}: {exc}".strip()
        where = f"the Triton server at {self.host}:{self.port}"
        if "unknown model" in text or "not found" in text.lower():
            return BundleError(f"{where} has no model {self.name!r} ({text})",
                               fix="use a served model's name, or serve that bundle")
        if "timeout" in text.lower() or "timed out" in text.lower():
            return BackendUnavailableError(f"{where} did not answer within {self.timeout:g} s ({text})",
                                           fix="check the server's load and log, or raise the timeout")
        status = getattr(exc, "status", lambda: None)()
        if status:
            return BackendUnavailableError(f"{where} failed on the request (status {status}: {exc.message()})",
                                           fix="see the server's log; restart it if it keeps failing")
        return BackendUnavailableError(f"{where} cannot be reached ({text})",
                                       fix="start it (medexport serve BUNDLE...), check the address and the "
                                           "network, or use local bundles")

    def close(self) -> None:
        client = getattr(self._local, "client", None)
        if client is not None:
            client.close()
            self._local.client = None

    def __enter__(self) -> "RemoteModel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _transport_errors() -> tuple:
    """What tritonclient's HTTP client raises when the server refuses, fails, stops or is slow."""
    from geventhttpclient.response import HTTPParseError
    from gevent import Timeout
    from tritonclient.utils import InferenceServerException

    return InferenceServerException, OSError, HTTPParseError, Timeout  # OSError: refused, reset, timed out


def _series(source) -> tuple[dict, bytes, dict]:
    """A volume's files as one request: the header's file table, their bytes concatenated, and the
    name each was sent as -> its path here."""
    from .io.volume import source_files
    from .serve.series import names_for

    paths = source_files(source)
    names = names_for(paths)
    data = [_read(Path(p)) for p in paths]
    return ({"kind": "series", "files": [[n, len(d)] for n, d in zip(names, data)]}, b"".join(data),
            dict(zip(names, map(str, paths))))


def _read(path: Path) -> bytes:
    if path.suffix.lower() in (".hea", ".dat", ".atr"):
        raise InvalidInputError(f"{path} is part of a WFDB record (several files)",
                                expected="one file (DICOM, PNG, JPEG, aECG XML, CSV) or an array",
                                fix="read it locally with medexport.engine.io.ecg.read_ecg and send the "
                                    "array with fs=")
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise InvalidInputError(f"{path} is {size} bytes", expected=f"at most {MAX_FILE_BYTES} bytes")
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"{path} cannot be read ({exc.strerror})", fix="check the path") from None


def open_remote(url: str, backend: str = "auto", precision: str = "auto", **options) -> RemoteModel:
    """``open_bundle``'s path for ``triton://`` addresses; the server chose backend and precision."""
    if backend != "auto" or precision != "auto":
        raise ConfigurationError(f"backend={backend!r}, precision={precision!r} for a served model",
                                 expected="'auto': the server chose when it opened the bundle",
                                 fix="choose them when starting the server (medexport serve --backend ...)")
    if options.pop("trust", None) is not None:  # trust=None: the default trust policy, which is the server's here
        raise ConfigurationError("a trust store for a served model", expected="none: the server checked the bundle's "
                                 "signature against its own trust store when it opened it",
                                 fix="give the trust store to the server ($MEDEXPORT_TRUST where medexport serve runs)")
    allowed = {"timeout", "connect_timeout", "strict"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigurationError(f"option(s) {', '.join(unknown)} for a served model",
                                 expected="only timeout=, connect_timeout= and strict=",
                                 fix="signature and trust checks happen on the server")
    return RemoteModel(url, **options)


def refuse_outside_intended_use(result, strict: bool) -> None:
    """Strict mode for a served model: the server answers with its intended-use warning, and the
    client refuses the study (the server has run the model once; the answer is never shown)."""
    from .intended_use import OutsideIntendedUseError

    flagged = [w.message for w in result.warnings if w.code == "outside_intended_use"]
    if strict and flagged:
        raise OutsideIntendedUseError("; ".join(flagged), expected="a study the model is for",
                                      fix="open a study this model is for, or run without strict mode "
                                          "(the answer will carry a warning)")
