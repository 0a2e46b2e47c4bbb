"""The main window: studies on the left, the image or ECG in the middle, model and result on the right."""
from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import QEventLoop, QSize, Qt, QTimer
from PySide6.QtGui import QAction, QIcon, QKeySequence, QPixmap
from PySide6.QtWidgets import (QApplication, QDialog, QDockWidget, QFileDialog, QHBoxLayout, QInputDialog, QLabel,
                               QListWidget, QListWidgetItem, QMainWindow, QPushButton, QSlider, QStackedWidget,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from medexport.engine import MedError
from medexport.engine.studies import write_batch_csv

from . import qt_dialogs
from .imaging import CT_GUESSED, dicom_date, display_values, person_name, window_presets, window_to_uint8
from .paths import reports_dir
from .qt_ecg import EcgView
from .qt_image import ImageView, to_qimage
from .qt_panels import ModelPanel, ResultPanel
from .qt_volume import VolumeView
from .qt_worker import RunWorker
from .state import AppState, recent_paths


class MainWindow(QMainWindow):
    def __init__(self, state: AppState):
        super().__init__()
        self.state = state
        self.worker = None
        self.scripted = False  # set for --screenshot / --quit runs: errors go to stderr, not dialogs
        self.batch_rows = []
        self.setWindowTitle("medexport viewer - offline")
        self.resize(1400, 860)
        self.setAcceptDrops(True)
        self._build()
        state.subscribe(self._on_state)
        state.discover()
        for problem in state.bundle_problems:
            self.statusBar().showMessage(f"Skipped a bundle: {problem}", 10000)

    # -- layout ----------------------------------------------------------------------------------
    def _build(self) -> None:
        self.image = ImageView()
        self.ecg = EcgView()
        self.stack = QStackedWidget()
        self.stack.addWidget(self.image)
        self.stack.addWidget(self.ecg)
        self.volume = VolumeView()
        self.stack.addWidget(self.volume)
        self.frame_slider = QSlider(Qt.Orientation.Horizontal)
        self.frame_slider.valueChanged.connect(self._frame_changed)
        self.play = QPushButton("Play")
        self.play.setCheckable(True)
        self.play.toggled.connect(lambda on: self.cine.start(100) if on else self.cine.stop())
        self.cine = QTimer(self)
        self.cine.timeout.connect(lambda: self.frame_slider.setValue((self.frame_slider.value() + 1)
                                                                     % (self.frame_slider.maximum() + 1)))
        self.frame_bar = QWidget()
        row = QHBoxLayout(self.frame_bar)
        row.setContentsMargins(4, 0, 4, 0)
        row.addWidget(QLabel("frame"))
        row.addWidget(self.frame_slider)
        row.addWidget(self.play)
        self.frame_bar.hide()
        center = QWidget()
        col = QVBoxLayout(center)
        col.setContentsMargins(0, 0, 0, 0)
        col.addWidget(self.stack)
        col.addWidget(self.frame_bar)
        self.setCentralWidget(center)

        self.studies = QListWidget()
        self.studies.setIconSize(QSize(96, 96))
        self.studies.currentRowChanged.connect(self.state.select)
        self._dock("Studies", self.studies, Qt.DockWidgetArea.LeftDockWidgetArea)

        self.model_panel = ModelPanel()
        self.model_panel.modelChosen.connect(self.state.choose)
        self.model_panel.runClicked.connect(self.run_current)
        self.model_panel.cancelClicked.connect(self.cancel)
        self.model_panel.cardClicked.connect(self.show_card)
        self.model_panel.leadChosen.connect(self._lead_chosen)
        self.model_panel.pixelSizeChosen.connect(lambda mm: self.set_pixel_size(mm or None))
        self.model_panel.measureClicked.connect(self.measure_line)
        self.image.lineMeasured.connect(self._line_measured)
        self.result_panel = ResultPanel()
        for view in (self.image, self.volume):
            self.result_panel.overlayToggled.connect(lambda on, v=view: v.set_overlay(visible=on))
            self.result_panel.opacityChanged.connect(lambda o, v=view: v.set_overlay(opacity=o))
        side = QWidget()
        side_col = QVBoxLayout(side)
        side_col.addWidget(self.model_panel)
        side_col.addWidget(self.result_panel)
        side_col.addStretch(1)
        dock = self._dock("Model and result", side, Qt.DockWidgetArea.RightDockWidgetArea)
        dock.setMinimumWidth(340)

        self.batch = QTableWidget(0, 0)
        self.batch_dock = self._dock("Batch results", self.batch, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.batch_dock.hide()
        self._menus()
        from .qt_pacs import install  # the PACS panel: a dock and File > PACS...

        install(self)

    def _dock(self, title: str, widget, area) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(title)
        dock.setWidget(widget)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable)
        self.addDockWidget(area, dock)
        return dock

    def _action(self, menu, text: str, slot, shortcut=None) -> QAction:
        act = QAction(text, self)
        if shortcut:
            act.setShortcut(QKeySequence(shortcut))
        act.triggered.connect(slot)
        menu.addAction(act)
        return act

    def _menus(self) -> None:
        bar = self.menuBar()
        f = bar.addMenu("&File")
        self._action(f, "Open files...", self.open_files, QKeySequence.StandardKey.Open)
        self._action(f, "Open folder...", self.open_folder, "Ctrl+Shift+O")
        self.recent_menu = f.addMenu("Recent")
        self._fill_recent()
        f.addSeparator()
        self._action(f, "Open label map for this volume...", self.open_label_map)
        self._action(f, "Install bundle...", self.install_bundle)
        self._action(f, "Save PDF report...", self.save_pdf, "Ctrl+P")
        self._action(f, "Save DICOM SR...", self.save_sr, "Ctrl+Shift+S")
        self._action(f, "Save mask (PNG, or DICOM SEG for DICOM)...", self.save_mask, "Ctrl+Shift+M")
        self._action(f, "Export batch results (CSV)...", self.export_batch, "Ctrl+E")
        f.addSeparator()
        self._action(f, "Quit", self.close, QKeySequence.StandardKey.Quit)
        v = bar.addMenu("&View")
        self._action(v, "Fit", self.image.fit, "F")
        self._action(v, "Reset window/zoom", self.image.reset, "R")
        self._action(v, "Invert", self.image.toggle_invert, "I")
        self._action(v, "Toggle overlay", lambda: self.result_panel.overlay.toggle(), "H")
        self.presets_menu = v.addMenu("Window presets")  # filled for each study: presets that fit it
        self._action(v, "ECG: 25 / 50 mm/s", self.toggle_speed, "S")
        self._action(v, "ECG: zoom in time", lambda: self.ecg.paper.set_zoom(self.ecg.paper.px_per_mm * 1.25), "Ctrl++")
        self._action(v, "ECG: zoom out in time", lambda: self.ecg.paper.set_zoom(self.ecg.paper.px_per_mm / 1.25), "Ctrl+-")
        self._action(v, "DICOM tags...", self.show_tags, "Ctrl+T")
        m = bar.addMenu("&Model")
        self._action(m, "Run on this study", self.run_current, "Ctrl+R")
        self._action(m, "Run on all open studies", self.run_all, "Ctrl+Shift+R")
        self._action(m, "Cancel", self.cancel, "Esc")
        self._action(m, "Model card...", self.show_card, "Ctrl+M")
        self._action(m, "Calibrate for this site...", self.calibrate_site)
        self._action(m, "Compare with...", self.compare_with)
        h = bar.addMenu("&Help")
        self._action(h, "About / offline guarantee...", self.show_about, "F1")
        self._action(h, "Commissioning report...", self.commissioning_report)

    # -- state events ------------------------------------------------------------------------------
    def _on_state(self, event: str) -> None:
        if event == "studies":
            self._fill_studies()
        elif event == "current":
            self._show_current()
        elif event in ("bundles", "model"):
            self._refresh_model()
        elif event == "labels":
            self._show_result(self.state.result_of(self.state.study))

    def _fill_studies(self) -> None:
        self.studies.blockSignals(True)
        self.studies.clear()
        for s in self.state.studies:
            label = s.title + (f"\n{s.series}" if s.series else "") + ("\nECG" if s.kind == "ecg" else "")
            item = QListWidgetItem(self._thumbnail(s), label)
            item.setToolTip(s.path)
            self.studies.addItem(item)
        self.studies.setCurrentRow(self.state.current)
        self.studies.blockSignals(False)

    def _thumbnail(self, study) -> QIcon:
        if study.kind != "image":
            return QIcon()
        try:
            pixels = display_values(study)[0] if not study.header else study.load().pixels  # pictures in colour
        except MedError:
            return QIcon()
        step = max(1, max(pixels.shape[:2]) // 96)
        return QIcon(QPixmap.fromImage(to_qimage(window_to_uint8(pixels[::step, ::step], 0.5, 1.0))))

    def _show_current(self) -> None:
        study = self.state.study
        if study is None:
            return
        self.studies.blockSignals(True)
        self.studies.setCurrentRow(self.state.current)
        self.studies.blockSignals(False)
        try:
            if study.kind == "ecg":
                self.ecg.set_study(study)
                self.stack.setCurrentWidget(self.ecg)
                self.frame_bar.hide()
            elif study.kind == "volume":
                self.volume.set_study(study)
                self._fill_presets(study)
                self.stack.setCurrentWidget(self.volume)
                self.frame_bar.hide()
            else:
                self.image.set_study(study)
                self.image.corners = self._corner_text(study)
                self._fill_presets(study)
                self.stack.setCurrentWidget(self.image)
                self.frame_bar.setVisible(study.frames > 1)
                self.frame_slider.blockSignals(True)
                self.frame_slider.setRange(0, study.frames - 1)
                self.frame_slider.setValue(study.frame)
                self.frame_slider.blockSignals(False)
        except MedError as exc:
            qt_dialogs.show_error(self, "Cannot show this study", str(exc))
        self._refresh_model()
        self._show_result(self.state.result_of(study))

    def _fill_presets(self, study) -> None:
        """Default (key 0), then the study's own windows and, for CT only, the CT presets (keys 1-9)."""
        for act in self.presets_menu.actions():
            self.removeAction(act)
        self.presets_menu.clear()
        view = self.volume if study.kind == "volume" else self.image
        self._action(self.presets_menu, "Default (from the file)", lambda: view.set_window(*view.default_window), "0")
        presets = view.presets if study.kind == "volume" else window_presets(study.header)
        for i, (name, level, width) in enumerate(presets[:9], start=1):
            self._action(self.presets_menu, f"{name}: W {width:g} L {level:g}",
                         lambda _=False, lv=level, wd=width: view.set_window(lv, wd), str(i))
        if study.kind == "volume" and not study.header.get("Modality") and not any(
                name.endswith(f"({CT_GUESSED})") for name, _, _ in presets):  # a NIfTI states no modality
            self.presets_menu.addSeparator()
            self._action(self.presets_menu, "Offer the CT presets (this file states no modality)",
                         lambda: self._offer_ct_presets(study))

    def _offer_ct_presets(self, study) -> None:
        """The CT presets for a volume whose file states no modality and whose values did not look
        like Hounsfield units (the user knows it is a CT)."""
        self.volume.presets = window_presets(study.header, looks_like_ct=True)
        self._fill_presets(study)

    def _corner_text(self, study) -> dict:
        h = study.header
        image = study.data
        top_left = "\n".join(filter(None, [person_name(h.get("PatientName", "")), h.get("PatientID", ""),
                                            dicom_date(h.get("StudyDate", ""))]))
        top_right = "\n".join(filter(None, [h.get("Modality", "") or (image.kind.upper() if image else ""),
                                            h.get("SeriesDescription", "")]))
        shape = image.pixels.shape[:2] if image else ("?", "?")
        bottom_right = f"{shape[1]} x {shape[0]}" + (f"\nframe {study.frame + 1}/{study.frames}" if study.frames > 1 else "")
        return {"top_left": top_left, "top_right": top_right, "bottom_right": bottom_right}

    def _frame_changed(self, value: int) -> None:
        study = self.state.study
        if study is not None and study.kind == "image":
            study.frame = value
            level, width = self.image.level, self.image.width_
            self.image.set_study(study)
            self.image.set_window(level, width)
            self.image.corners = self._corner_text(study)
            self._show_result(self.state.result_of(study))

    def _lead_chosen(self, text: str) -> None:
        study = self.state.study
        if study is not None and study.kind == "ecg":
            study.lead = text or None  # "": automatic, the leads with the best signal quality decide
            self.statusBar().showMessage(f"Lead {study.lead or 'automatic (best signal quality)'}: run again to analyse it",
                                         6000)

    def _refresh_model(self) -> None:
        study = self.state.study
        leads = list(study.data.leads) if study is not None and study.kind == "ecg" and study.data is not None else []
        self.model_panel.set_leads(leads, study.lead if study is not None else None, self.state.result_of(study))
        kind = study.kind if study else "image"
        entries = self.state.models_for(kind)
        chosen = self.state.chosen.get(kind)
        self.model_panel.set_entries(entries, chosen)
        picture = study is not None and study.kind == "image" and not study.header  # PNG/JPEG: no stated spacing
        self.model_panel.set_pixel_size(picture and self.state.takes_pixel_size(chosen),
                                        self.state.pixel_sizes.get(study.path) if study is not None else None)
        if chosen is not None:
            try:
                runtime = self.state.runtime_of(chosen)
                self.model_panel.set_runtime(f"Runs on: {runtime}\n{chosen.signed_by}\n{chosen.intended_use}",
                                             chosen.disclaimer)
            except MedError as exc:
                self.model_panel.set_runtime(f"Cannot run here: {exc}", chosen.disclaimer)

    def _show_labels(self, study, result) -> None:
        """A volume result's labels, else a label map the user opened for this volume, else none."""
        overlay = result.overlay() if result is not None else None
        if overlay is not None:
            self.volume.set_result_overlay(overlay)
        else:
            self.volume.set_labels(*self.state.label_maps.get(study.path, (None, None)))

    def open_label_map(self, path: str | None = None) -> None:
        """Show a label map (NIfTI or DICOM series, on this volume's grid) in the three views."""
        study = self.state.study
        if study is None or study.kind != "volume":
            qt_dialogs.show_error(self, "No volume open", "Open a CT or MR series (a folder) or a NIfTI file first.")
            return
        if not path:
            path, _ = QFileDialog.getOpenFileName(self, "Label map for this volume", str(Path(study.path).parent),
                                                  "Label maps (*.nii *.nii.gz *.dcm);;All files (*)")
        if not path:
            return
        try:
            self.state.open_label_map(study, path)
        except MedError as exc:
            qt_dialogs.show_error(self, "Cannot show this label map", str(exc))

    def set_pixel_size(self, mm: float | None) -> None:
        """The open picture's pixel size (mm, None: not given); a measuring result is run again in mm."""
        study = self.state.study
        if study is None:
            return
        try:
            self.state.set_pixel_size(study, mm)
        except MedError as exc:
            qt_dialogs.show_error(self, "Pixel size not accepted", str(exc))
            return
        if self.state.result_of(study) is not None and self.state.takes_pixel_size(self.state.chosen.get(study.kind)):
            self.run_current()

    def measure_line(self) -> None:
        """Draw a line of known length (a ruler, a calliper mark) to set the pixel size."""
        self.image.start_measuring()
        self.statusBar().showMessage("Drag along something of known length (e.g. the ruler); then give its length", 10000)

    def _line_measured(self, pixels: float) -> None:
        mm, ok = QInputDialog.getDouble(self, "Length of the line", f"The line is {pixels:.1f} pixels long.\n"
                                        "Its real length in mm:", 10.0, 0.001, 100000.0, 3)
        if ok:
            self.set_pixel_size(mm / pixels)

    def _show_result(self, result) -> None:
        self.result_panel.show_result(result)
        study = self.state.study
        if study is not None and study.kind == "ecg" and study.data is not None:
            self.model_panel.set_leads(list(study.data.leads), study.lead, result)
        if self.stack.currentWidget() is self.image:
            self.image.set_result_overlay(result.overlay() if result is not None else None)
        elif self.stack.currentWidget() is self.volume:
            self._show_labels(study, result)
        else:
            self.ecg.paper.set_result(result)

    # -- actions ------------------------------------------------------------------------------------
    def open_paths(self, paths) -> None:
        problems = self.state.open(paths)
        for p in paths:
            self._remember(str(p))
        if problems:
            qt_dialogs.show_error(self, "Some files could not be opened", "\n\n".join(problems[:10]))

    def open_files(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Open studies", "",
                                                "Studies (*.dcm *.png *.jpg *.jpeg *.hea *.xml *.csv);;All files (*)")
        if paths:
            self.open_paths(paths)

    def open_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a folder of studies")
        if folder:
            self.open_paths([folder])

    def _remember(self, path: str) -> None:
        """Add ``path`` to the recent files, only where the user turned that on (off by default:
        file names are often patient names, and viewer.ini is a plain text file)."""
        settings = app_settings()
        if settings.value("remember_recent", False, type=bool):
            settings.setValue("recent", recent_paths(settings.value("recent"), add=path))
            self._fill_recent()

    def set_remember_recent(self, on: bool) -> None:
        settings = app_settings()
        settings.setValue("remember_recent", bool(on))
        if not on:
            settings.remove("recent")  # turning it off forgets the list too
        self._fill_recent()

    def _fill_recent(self) -> None:
        settings = app_settings()
        remember = settings.value("remember_recent", False, type=bool)
        self.recent_menu.clear()
        for p in recent_paths(settings.value("recent")) if remember else []:
            self._action(self.recent_menu, p, lambda _=False, q=p: self.open_paths([q]))
        self.recent_menu.addSeparator()
        toggle = self._action(self.recent_menu, "Remember recent files on this computer", self.set_remember_recent)
        toggle.setCheckable(True)
        toggle.setChecked(remember)

    def dragEnterEvent(self, e) -> None:
        if e.mimeData().hasUrls():
            e.acceptProposedAction()

    def dropEvent(self, e) -> None:
        self.open_paths([u.toLocalFile() for u in e.mimeData().urls() if u.isLocalFile()])

    def _start(self, job, on_done) -> None:
        if self.worker is not None and self.worker.isRunning():
            return
        self.worker = RunWorker(job, self)
        self.worker.done.connect(on_done)
        self.worker.failed.connect(lambda msg: (self._idle(), qt_dialogs.show_error(self, "The model could not run", msg)))
        self.worker.cancelled.connect(lambda: (self._idle(), self.statusBar().showMessage("Cancelled", 5000)))
        self.worker.progress.connect(lambda i, n: self.statusBar().showMessage(f"Running {i}/{n}..."))
        self.model_panel.busy(True)
        self.statusBar().showMessage("Running the model on this computer...")
        self.worker.start()

    def _idle(self) -> None:
        self.model_panel.busy(False)

    def run_current(self) -> None:
        study = self.state.study
        if study is None:
            return
        self._start(lambda cancel, progress: self.state.run(study, cancel), self._done_one)

    def _done_one(self, result) -> None:
        self._idle()
        self.statusBar().showMessage(f"Done in {result.timings_ms['total']:.0f} ms on {result.backend} "
                                     f"{result.precision}", 8000)
        if self.state.study is not None and self.state.study.path == result.source:
            self._show_result(result)

    def run_all(self) -> None:
        self._start(lambda cancel, progress: self.state.run_all(cancel, progress), self._done_batch)

    def _done_batch(self, rows) -> None:
        self._idle()
        self.batch_rows = rows
        keys = ["file", "model", "runtime", "decision", "error"]
        self.batch.setColumnCount(len(keys))
        self.batch.setHorizontalHeaderLabels(keys)
        self.batch.setRowCount(len(rows))
        for i, r in enumerate(rows):
            for j, k in enumerate(keys):
                self.batch.setItem(i, j, QTableWidgetItem(str(r.get(k, ""))))
        self.batch.resizeColumnsToContents()
        self.batch_dock.show()
        self._show_result(self.state.result_of(self.state.study))
        self.statusBar().showMessage(f"Batch done: {len(rows)} studies", 8000)

    def cancel(self) -> None:
        if self.worker is not None and self.worker.isRunning():
            self.worker.cancel()

    def toggle_speed(self) -> None:
        self.ecg.paper.set_speed(50.0 if self.ecg.paper.speed == 25.0 else 25.0)

    def _need_result(self):
        study, result = self.state.study, self.state.result_of(self.state.study)
        if result is None:
            qt_dialogs.show_error(self, "Nothing to save", "Run the model on this study first (Ctrl+R).")
        return study, result

    def shown_window(self) -> tuple | None:
        """(level, width, invert) the user looks at an image with, for the report; None for an ECG."""
        if self.stack.currentWidget() is not self.image or self.image.values is None:
            return None
        return self.image.level, self.image.width_, self.image.invert

    def save_pdf(self, path: str | None = None) -> Path | None:
        study, result = self._need_result()
        if result is None:
            return None
        if not path:
            default = str(reports_dir() / f"{Path(study.path).stem}.{result.model_id}.pdf")
            path, _ = QFileDialog.getSaveFileName(self, "Save PDF report", default, "PDF (*.pdf)")
        if not path:
            return None
        entry = self.state.model_for(study)
        if study.kind == "volume":  # the engine's volume report, as the CLI and the listener write it
            from medexport.engine.atomic import write_new
            from medexport.engine.volume_outputs import report_for_source

            try:
                written = write_new(Path(path), report_for_source(result, study.path, entry.intended_use,
                                                                  by="viewer"))
            except (MedError, OSError) as exc:
                qt_dialogs.show_error(self, "Cannot write the PDF report", str(exc))
                return None
        else:
            from .qt_report import save_pdf

            written = save_pdf(Path(path), study, result, entry.intended_use, window=self.shown_window())
        self.statusBar().showMessage(f"Saved {written}", 8000)
        return written

    def _save_into_folder(self, what: str, write, folder: str | None) -> Path | None:
        """Ask for a folder (default: the reports folder), call ``write(study, result, folder)``, report."""
        study, result = self._need_result()
        if result is None:
            return None
        folder = folder or QFileDialog.getExistingDirectory(self, f"Folder for the {what}", str(reports_dir()))
        if not folder:
            return None
        try:
            written = write(study, result, Path(folder))
        except (MedError, OSError) as exc:  # OSError: folder not writable, disk full
            qt_dialogs.show_error(self, f"Cannot write the {what}", str(exc))
            return None
        self.statusBar().showMessage(f"Saved {written}", 8000)
        return written

    def install_bundle(self, source: str | None = None) -> Path | None:
        """Check a bundle as the viewer opens them, copy it into the models folder, offer it."""
        from .catalog import install_bundle
        from .paths import installed_bundles_dir

        source = source or QFileDialog.getExistingDirectory(self, "Bundle folder to install")
        if not source:
            return None
        try:
            path = install_bundle(Path(source), installed_bundles_dir())
        except MedError as exc:
            qt_dialogs.show_error(self, "Cannot install this bundle", str(exc))
            return None
        self.state.discover()
        self.statusBar().showMessage(f"Installed {path.name} into {path.parent}", 8000)
        return path

    def save_sr(self, folder: str | None = None) -> Path | None:
        from medexport.engine.sr import save_sr

        return self._save_into_folder("DICOM SR", lambda s, r, f: save_sr(r, s.path, f), folder)

    def save_mask(self, folder: str | None = None) -> Path | None:
        from medexport.engine import outputs
        from medexport.engine.errors import InvalidInputError

        def write(study, result, target):
            if "mask" not in result.saves:
                raise InvalidInputError("this model gives scores, not a mask")
            return result.save_outputs(target, study.path)["mask_file"]

        return self._save_into_folder("mask", write, folder)

    def export_batch(self, path: str | None = None) -> Path | None:
        if not self.batch_rows:
            qt_dialogs.show_error(self, "Nothing to export", "Run the model on all studies first (Ctrl+Shift+R).")
            return None
        if not path:
            path, _ = QFileDialog.getSaveFileName(self, "Export batch results", str(reports_dir() / "batch.csv"),
                                                  "CSV (*.csv)")
        return write_batch_csv(self.batch_rows, Path(path)) if path else None

    def calibrate_site(self):
        """Fit the chosen image model to this site's labelled studies (desktop/qt_calibrate.py)."""
        from .qt_calibrate import CalibrateDialog

        entry = self.state.chosen.get("image")
        if entry is None:
            qt_dialogs.show_error(self, "No image model", "Install an image classification bundle first.")
            return None
        dialog = CalibrateDialog(entry, self, on_installed=lambda _path: self.state.discover())
        dialog.open()
        return dialog

    def compare_with(self, candidate: str | None = None):
        """Model > Compare with...: a candidate bundle beside the current model on the open studies
        (desktop/qt_compare.py); returns the dialog (shown, not modal)."""
        from .qt_compare import CompareDialog

        study = self.state.study
        kind = study.kind if study is not None else "image"
        if self.state.chosen.get(kind) is None:
            qt_dialogs.show_error(self, "No current model", f"No installed model reads the open {kind} studies.")
            return None
        dialog = CompareDialog(self.state, kind, self)
        if candidate:
            dialog.set_candidate(candidate)
        dialog.open()
        return dialog

    def commissioning_report(self):
        """Help > Commissioning report...: each bundle's standing, commissioning on this machine
        (desktop/qt_commission.py); a bundle commissioned now is offered at once."""
        from .qt_commission import CommissionDialog

        dialog = CommissionDialog(self.state, self, on_written=lambda _path: self.state.discover())
        dialog.open()
        return dialog

    def show_card(self) -> None:
        study = self.state.study
        entry = self.state.chosen.get(study.kind if study else "image")
        if entry is None or entry.card is None:
            return
        qt_dialogs.TextDialog(f"Model card: {entry.title}", entry.card.read_text(), self).exec()

    def show_tags(self) -> None:
        study = self.state.study
        if study is None or not study.path.lower().endswith((".dcm", ".dicom")) and study.header == {}:
            qt_dialogs.show_error(self, "No DICOM tags", "This study is not a DICOM file.")
            return
        qt_dialogs.TagDialog(study.path, self).exec()

    def show_about(self) -> None:
        qt_dialogs.TextDialog("About medexport viewer", qt_dialogs.about_text(self.state), self).exec()

    def closeEvent(self, e) -> None:
        workers = [self.worker] + [getattr(d, "worker", None) for d in self.findChildren(QDialog)]  # compare, commission
        for worker in workers:
            if worker is not None and worker.isRunning():
                worker.cancel()
                worker.wait(15000)
        self.state.close()
        super().closeEvent(e)

    def wait_idle(self, timeout_ms: int = 60000) -> None:
        """For scripted use: let a running inference finish."""
        if self.worker is not None and self.worker.isRunning():
            loop = QEventLoop()
            self.worker.finished.connect(loop.quit)
            QTimer.singleShot(timeout_ms, loop.quit)
            loop.exec()
        QApplication.processEvents()


def app_settings():
    """Settings (recent files) as an INI file in the user data folder: the app writes nowhere else."""
    from PySide6.QtCore import QSettings

    from .paths import data_dir

    return QSettings(str(data_dir() / "viewer.ini"), QSettings.Format.IniFormat)


def report_unexpected_errors(window) -> None:
    """An error nothing else handled reaches the user in a dialog and the app's log file, never
    only stderr (an app started from a desktop icon has no terminal)."""
    import logging
    import threading
    import traceback

    from .paths import log_path

    log = logging.getLogger("medexport.viewer")
    if not log.handlers:
        handler = logging.FileHandler(log_path(), encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)

    def hook(kind, exc, tb) -> None:
        log.error("unexpected error\n%s", "".join(traceback.format_exception(kind, exc, tb)))
        qt_dialogs.show_error(window, "Something went wrong",
                              f"{kind.__name__}: {exc}\n\nNothing was saved by this action. The details are in "
                              f"{log_path()}; please send that file to your IT contact.")

    sys.excepthook = hook
    threading.excepthook = lambda a: QTimer.singleShot(0, lambda: hook(a.exc_type, a.exc_value, a.exc_traceback))


def run_app(args) -> int:
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("medexport viewer")
    state = AppState(bundle_folders=[args.bundles] if args.bundles else [])
    window = MainWindow(state)
    window.scripted = bool(args.quit or args.screenshot)
    report_unexpected_errors(window)
    window.show()
    if args.files:
        window.open_paths(args.files)
    if args.model:
        try:
            state.choose_by_id(args.model)
        except MedError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if args.run:
        window.run_current()
        window.wait_idle()
    if args.screenshot:
        app.processEvents()
        window.grab().save(args.screenshot)
    if args.quit or args.screenshot and args.quit:
        window.close()
        return 0
    return app.exec()
