"""The viewer's state without Qt: studies, models, results, and the actions on them.

Widgets observe it through plain callbacks (napari's wall between model and ``_qt``), so
everything here is tested without a display.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from medexport.engine import MedError, open_bundle, read_manifest
from medexport.engine.studies import Study, batch_row, open_paths

from . import audit
from .catalog import BundleEntry, default_folders, find_bundles, is_served, served_entries
from .paths import installed_bundles_dir
from .trust import model_options, served_models


class Cancelled(Exception):
    """The user cancelled a run; nothing was recorded."""


@dataclass
class AppState:
    bundle_folders: list = field(default_factory=list)
    studies: list = field(default_factory=list)
    current: int = -1
    bundles: list = field(default_factory=list)
    bundle_problems: list = field(default_factory=list)
    chosen: dict = field(default_factory=dict)  # study kind -> BundleEntry
    results: dict = field(default_factory=dict)  # study path -> result
    pixel_sizes: dict = field(default_factory=dict)  # study path -> mm per pixel the user gave (pictures)
    label_maps: dict = field(default_factory=dict)  # volume study path -> (labels, names) the user opened
    _listeners: list = field(default_factory=list)
    _models: dict = field(default_factory=dict)  # bundle path -> open engine Model
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- observing ---------------------------------------------------------------------------
    def subscribe(self, callback: Callable[[str], None]) -> None:
        self._listeners.append(callback)

    def emit(self, event: str) -> None:
        for callback in list(self._listeners):
            callback(event)

    # -- models --------------------------------------------------------------------------------
    def discover(self) -> None:
        served = served_models()
        if served:  # the clinic's settings name a model server: its models instead of local bundles
            self.bundles, self.bundle_problems = served_entries(served)
        else:
            self.bundles, self.bundle_problems = find_bundles(default_folders(self.bundle_folders))
        for kind in ("image", "ecg", "volume"):
            if kind not in self.chosen:
                fitting = sorted(self.models_for(kind), key=lambda b: b.preference)
                if fitting:
                    self.chosen[kind] = fitting[0]  # validated, trusted first; the user picks others
        self.emit("bundles")

    def models_for(self, kind: str) -> list[BundleEntry]:
        return [b for b in self.bundles if b.fits(kind)]

    def choose(self, entry: BundleEntry) -> None:
        self.chosen[entry.study_kind] = entry
        self.emit("model")

    def choose_by_id(self, model_id: str) -> BundleEntry:
        for b in self.bundles:
            if b.model_id == model_id or b.path.name == model_id:
                self.choose(b)
                return b
        raise MedError(f"no installed model {model_id!r}", expected=f"one of {[b.model_id for b in self.bundles]}")

    def model_for(self, study: Study) -> BundleEntry:
        entry = self.chosen.get(study.kind)
        if entry is None:  # the bundles not offered say why (a checksum, a signature, no commissioning report)
            skipped = "".join(f"; not offered: {p}" for p in self.bundle_problems[:3])
            raise MedError(f"no installed model fits this {study.kind}{skipped}",
                           fix=f"File > Install bundle... (bundles go to {installed_bundles_dir()})"
                               + (", or Help > Commissioning report..." if "commissioning" in skipped else ""))
        return entry

    def engine(self, entry: BundleEntry):
        """The open engine model for a bundle (opened once: checksums, backend choice)."""
        with self._lock:
            if entry.path not in self._models:
                options = {} if is_served(entry) else model_options()  # a server checks its own bundles
                self._models[entry.path] = open_bundle(entry.path, **options)
            return self._models[entry.path]

    def runtime_of(self, entry: BundleEntry) -> str:
        """'openvino int8' etc.: what a run will use, decided from the manifest without loading
        anything (a first TensorRT engine build happens in the run, in the background)."""
        from medexport.engine.backends import choose_artifact

        if is_served(entry):
            return f"{entry.artifacts[0]} on the model server {entry.path}"
        if entry.path in self._models:
            model = self._models[entry.path]
            return f"{model.backend} {model.precision}"
        manifest, _, _ = read_manifest(entry.path, verify=False)
        cls, artifact = choose_artifact(manifest)
        note = " (engine built for this GPU on the first run, then cached)" if cls.name == "tensorrt" else ""
        return f"{cls.name} {artifact.precision}{note}"

    @staticmethod
    def takes_pixel_size(entry: BundleEntry | None) -> bool:
        """Whether the bundle's task measures lengths from a given pixel size (``pixel_size_mm``)."""
        from dataclasses import fields

        from medexport.engine.tasks import task_class

        return entry is not None and "pixel_size_mm" in {f.name for f in fields(task_class(entry.task).options_type)}

    def set_pixel_size(self, study: Study, mm: float | None) -> None:
        """The pixel size of a picture (PNG/JPEG state none), in mm; None forgets it. Checked as
        the engine checks it (a ConfigurationError names the accepted range)."""
        from medexport.engine.tasks.base import MeasureOptions

        if mm is None:
            self.pixel_sizes.pop(study.path, None)
        else:
            MeasureOptions(pixel_size_mm=mm)
            self.pixel_sizes[study.path] = float(mm)
        self.emit("model")

    def options_for(self, study: Study, entry: BundleEntry) -> dict:
        """The study's predict options, with the pixel size the user gave where the model measures."""
        size = self.pixel_sizes.get(study.path)
        return study.predict_options | ({"pixel_size_mm": size} if size and self.takes_pixel_size(entry) else {})

    # -- studies -------------------------------------------------------------------------------
    def open(self, paths) -> list[str]:
        studies, problems = open_paths(paths)
        if studies:
            self.studies += studies
            self.current = len(self.studies) - len(studies)
            self.emit("studies")
            self.emit("current")
        return problems

    def open_label_map(self, study: Study, path) -> None:
        """A label map (NIfTI, or a DICOM series) on the volume study's voxel grid, to show in its
        views; the file is only read. Refused (InvalidInputError) on another grid or non-label values."""
        from medexport.engine import read_volume

        from .volume_view import check_same_grid, labels_from

        if study.kind != "volume":
            raise MedError(f"{study.title} is a {study.kind}", expected="a volume (a CT / MR series or NIfTI file)",
                           fix="open the volume first, then its label map")
        labels = read_volume(path)
        check_same_grid(study.load(), labels, str(path))
        self.label_maps[study.path] = (labels_from(labels.voxels, str(path)), {})
        self.emit("labels")

    def select(self, index: int) -> None:
        if 0 <= index < len(self.studies) and index != self.current:
            self.current = index
            self.emit("current")

    @property
    def study(self) -> Study | None:
        return self.studies[self.current] if 0 <= self.current < len(self.studies) else None

    def result_of(self, study: Study | None):
        return self.results.get(study.path) if study else None

    # -- running -------------------------------------------------------------------------------
    def run(self, study: Study, cancel: threading.Event | None = None):
        """Run the chosen model on one study (blocking; call from a worker thread)."""
        entry = self.model_for(study)
        model = self.engine(entry)
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        result = model.predict(study.path, **self.options_for(study, entry))
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        audit.record(result)
        self.results[study.path] = result
        return result

    def run_all(self, cancel: threading.Event | None = None, progress: Callable[[int, int], None] | None = None):
        """Run every open study that a chosen model fits; errors become rows, not crashes.
        The next studies decode on worker threads while the model runs (engine/pipeline.py): when
        one local model takes them all, the studies already read go through it together
        (``predicted``); results are recorded here, in order."""
        from medexport.engine.pipeline import run

        rows = []
        targets = [s for s in self.studies if s.kind in self.chosen]

        def predict(study: Study):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            entry = self.model_for(study)
            return self.engine(entry).predict(study.path, **self.options_for(study, entry))

        def prepare(study: Study):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            entry = self.model_for(study)
            return self.engine(entry).prepare(study.path, **self.options_for(study, entry))

        kinds, only = {s.kind for s in targets}, None
        if len(kinds) == 1:
            try:
                only = self.engine(self.chosen[kinds.pop()])
            except MedError:
                only = None  # each study gets the bundle's error as its row, as below
        stream = run(only, targets, prepare, predict, cancel=cancel)  # batched as the runner runs best
        try:
            for i, (study, result, error) in enumerate(stream):
                if cancel is not None and cancel.is_set():
                    break
                if result is not None:
                    audit.record(result)
                    self.results[study.path] = result
                rows.append(batch_row(study, result, error))
                if progress:
                    progress(i + 1, len(targets))
        except Cancelled:
            pass
        return rows

    def close(self) -> None:
        for model in self._models.values():
            model.close()
        self._models.clear()


RECENT_MAX = 10


def recent_paths(stored, add: str | None = None) -> list[str]:
    """The recent-files list as settings hold it, with ``add`` first.

    QSettings (INI) gives back a one-entry list as a plain string, no entry as None: a string
    is one path, never a sequence of characters.
    """
    if stored is None:
        paths = []
    elif isinstance(stored, str):
        paths = [stored] if stored else []
    else:
        paths = [str(p) for p in stored if p]
    if add is not None:
        paths = [add, *(p for p in paths if p != add)]
    return list(dict.fromkeys(paths))[:RECENT_MAX]
