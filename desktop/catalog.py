"""The models the app can offer: bundles found in its models folders, and what each fits."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from medexport.engine import MedError, read_manifest
from medexport.engine.commissioning import check_commissioned
from medexport.engine.results import SHIPPED_SOURCE, disclaimer_for
from medexport.engine.signing import Signature, check_signature
from medexport.engine.tasks import task_class

from .paths import data_dir
from .trust import commissioning_folder, open_options

@dataclass(frozen=True)
class BundleEntry:
    path: Path
    model_id: str
    version: str
    task: str
    sha256: str
    artifacts: tuple  # "openvino-int8", ...
    intended_use: str
    medical_device: bool
    card: Path | None
    signature: Signature = Signature(False)
    study_kind: str = "image"  # what the bundle's task reads: "image" | "ecg"
    rank: int = 0  # lower first when the viewer picks a default model for a study kind
    validated: bool = False  # its build measured the model on labelled validation data
    source: str = SHIPPED_SOURCE  # the manifest's provenance.source: a shipped demo model, or the publisher's own

    @property
    def disclaimer(self) -> str:
        """The stamp its results carry (engine/results.py ``disclaimer_for``)."""
        return disclaimer_for(self.medical_device, self.source)

    @property
    def preference(self) -> tuple:
        """How the viewer picks a default among bundles that read the same studies: validation
        evidence first, a trusted signature next, then the task's rank, then the name."""
        return (not self.validated, not self.signature.trusted, self.rank, self.model_id)

    @property
    def signed_by(self) -> str:
        """'Signed by X (key ...)' for the model panel."""
        s = self.signature
        if s.trusted:
            return f"Signed by {s.signer} (key {s.fingerprint[:16]})"
        if s.signed:
            return f"Signed by an untrusted key {s.fingerprint[:16]} (allowed by this clinic's settings)"
        return "Unsigned (allowed by this clinic's settings)"

    @property
    def title(self) -> str:
        return f"{self.model_id} {self.version}"

    def fits(self, kind: str) -> bool:
        return self.study_kind == kind


def _validated(root: Path, manifest) -> bool:
    """Whether any artifact's build report holds a validation on labelled data."""
    import json

    for a in manifest.artifacts:
        try:
            if a.report and json.loads((root / a.report).read_text()).get("validation"):
                return True
        except (OSError, ValueError):
            continue
    return False


def install_bundle(source: Path, folder: Path, trust: dict | None = None) -> Path:
    """Copy a bundle folder or .zip into ``folder`` after checking it as the viewer would open it
    (checksums, manifest, signature); an installed bundle of the same name is never replaced."""
    import shutil

    manifest, _, root = read_manifest(source)
    check_signature(root, **(open_options() if trust is None else trust))
    task_class(manifest.task)
    target = folder / f"{manifest.model_id}-{manifest.model_version}"
    if target.exists():
        raise MedError(f"{target} is already installed", fix="remove the old one first, or keep it")
    staging = folder / f".{target.name}.installing"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        shutil.copytree(root, staging)
        read_manifest(staging)  # the copy verifies too
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def default_folders(extra: list | None = None) -> list[Path]:
    """Explicit folders first, then $MEDEXPORT_BUNDLES, the app's own, ./bundles, the user's."""
    folders = [Path(p) for p in (extra or [])]
    folders += [Path(p) for p in os.environ.get("MEDEXPORT_BUNDLES", "").split(os.pathsep) if p]
    if getattr(sys, "frozen", False):  # PyInstaller: bundles shipped beside the executable
        folders.append(Path(getattr(sys, "_MEIPASS", Path(sys.executable).parent)) / "bundles")
    folders += [Path.cwd() / "bundles", data_dir() / "bundles"]
    return folders


def served_entries(urls: list[str]) -> tuple[list[BundleEntry], list[str]]:
    """Models served by ``medexport serve`` (``triton://host:port/model``), asked for what they are;
    a server that is down is a problem line, not a crash. Their ``path`` is the URL."""
    from medexport.engine import open_bundle

    found, problems = [], []
    for url in urls:
        try:
            with open_bundle(url) as remote:
                p = remote.provenance
                found.append(BundleEntry(url, p.model_id, p.model_version, remote.task_name, p.bundle_sha256,
                                         (f"served: {p.backend}-{p.precision}",), f"served by {url}", p.medical_device,
                                         None, Signature(False), remote.study_kind, task_class(remote.task_name).viewer_rank,
                                         validated=True, source=p.source))
        except MedError as exc:
            problems.append(f"{url}: {exc}")
    return found, problems


def is_served(entry: BundleEntry) -> bool:
    return str(entry.path).startswith("triton://")


def bundle_paths(folders: list[Path]) -> list[Path]:
    """Every folder directly inside ``folders`` that holds a manifest, each once, unchecked (also
    those the viewer does not offer: Help > Commissioning report... lists them)."""
    out, seen = [], set()
    for folder in folders:
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            if (path / "manifest.json").is_file() and path.resolve() not in seen:
                seen.add(path.resolve())
                out.append(path)
    return out


def find_bundles(folders: list[Path], trust: dict | None = None) -> tuple[list[BundleEntry], list[str]]:
    """Every valid, trusted bundle directly inside ``folders``; problems are returned, not raised.

    ``trust``: ``check_signature`` options (default: the viewer's policy, desktop/trust.py).
    """
    try:
        trust = open_options() if trust is None else trust
    except MedError as exc:
        return [], [str(exc)]
    found, problems = [], []
    reports = commissioning_folder()
    for path in bundle_paths(folders):
        try:
            m, sha, root = read_manifest(path)
            signature = check_signature(root, **trust)
            task = task_class(m.task)
            if reports is not None:  # require_commissioning=true: not offered, and the problem says why
                check_commissioned(reports, sha, m.model_id)
        except MedError as exc:
            problems.append(f"{path.name}: {exc}")
            continue
        found.append(BundleEntry(root, m.model_id, m.model_version, m.task, sha,
                                 tuple(a.key for a in m.artifacts), m.intended_use, m.medical_device,
                                 root / m.card if m.card else None, signature, task.study_kind, task.viewer_rank,
                                 _validated(root, m), str(m.provenance.get("source", ""))))
    return found, problems
