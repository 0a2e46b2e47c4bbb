"""The viewer's widgets, offscreen with pytest-qt: open, run, see, save."""
import numpy as np
import pytest

pytest.importorskip("PySide6")

from medexport.desktop.qt_main import MainWindow  # noqa: E402
from medexport.desktop.state import AppState  # noqa: E402


@pytest.fixture
def window(qtbot, pneumonia_bundle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./bundles of an older build beside the fixture's
    w = MainWindow(AppState(bundle_folders=[str(pneumonia_bundle.parent)]))
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    return w


def run_and_wait(qtbot, window):
    window.run_current()
    qtbot.waitUntil(lambda: not window.worker.isRunning(), timeout=60000)
    qtbot.wait(50)


def test_open_run_heatmap_and_pdf(qtbot, window, cxr, tmp_path):
    window.open_paths([cxr[0]])
    assert window.stack.currentWidget() is window.image and window.image.values.shape == (512, 512)
    run_and_wait(qtbot, window)
    assert window.result_panel.table.rowCount() == 2
    spec = window.image.overlay_spec
    assert spec is not None and spec.kind == "heatmap" and spec.data.shape == (512, 512)
    shot = window.grab().toImage()
    assert shot.width() > 1000
    pdf = window.save_pdf(str(tmp_path / "r.pdf"))
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF") and len(data) > 20000
    assert window.save_pdf(str(tmp_path / "r.pdf")).name == "r (2).pdf"
    from pypdf import PdfReader

    from dataclasses import replace

    from medexport.desktop.qt_report import save_pdf

    result = window.state.result_of(window.state.study)
    fake = replace(result, provenance=replace(result.provenance, bundle_sha256="00ff" * 16))  # 'ff': a ligature
    pdf = save_pdf(tmp_path / "ligatures.pdf", window.state.study, fake, "test")
    text = PdfReader(str(pdf)).pages[0].extract_text().replace("\n", " ")
    assert "00ff" * 16 in text and result.input_sha256 in text  # copied hashes are the hashes


def test_presets_fit_the_modality_and_names_read_as_clinicians_read_them(qtbot, window, dcm, pydicom_file):
    from medexport.desktop.imaging import dicom_date, person_name, window_presets

    assert person_name("CompressedSamples^RG1") == "COMPRESSEDSAMPLES, RG1"
    assert person_name("Doe^Jane^Q^Dr^PhD") == "Dr DOE, Jane Q PhD" and person_name("Anonymous") == "Anonymous"
    assert dicom_date("20040826") == "26 Aug 2004" and dicom_date("2004") == "2004"
    window.open_paths([dcm("RG1_UNCI.dcm")])  # a CR: no lung window that turns it white
    names = [a.text() for a in window.presets_menu.actions()]
    assert names[0].startswith("Default") and not any("(CT)" in n for n in names)
    assert "26 Aug 2004" in window.image.corners["top_left"] or "20040826" not in window.image.corners["top_left"]
    window.open_paths([pydicom_file("CT_small.dcm")])
    assert any("Lung (CT)" in a.text() for a in window.presets_menu.actions())
    assert window_presets({"Modality": "CR", "WindowCenter": "2048\\1800", "WindowWidth": "4096\\1000",
                           "WindowCenterWidthExplanation": "NORMAL\\HARDER"}) == [("NORMAL", 2048.0, 4096.0),
                                                                                 ("HARDER", 1800.0, 1000.0)]


def test_window_level_drag_changes_pixels(qtbot, window, dcm):
    from PySide6.QtCore import QPoint, Qt

    window.open_paths([dcm("RG1_UNCI.dcm")])
    view = window.image
    before = (view.level, view.width_)
    img_before = view._base.copy()
    qtbot.mousePress(view, Qt.MouseButton.LeftButton, pos=QPoint(200, 200))
    qtbot.mouseMove(view, QPoint(260, 150))
    qtbot.mouseRelease(view, Qt.MouseButton.LeftButton, pos=QPoint(260, 150))
    assert (view.level, view.width_) != before and view._base != img_before
    view.reset()
    assert (view.level, view.width_) == view.default_window
    view.toggle_invert()
    assert view.invert


def test_multiframe_slider(qtbot, window, dcm):
    window.open_paths([dcm("emri_small.dcm")])
    assert window.frame_bar.isVisibleTo(window) and window.frame_slider.maximum() == 9
    first = window.image.values.copy()
    window.frame_slider.setValue(5)
    assert window.state.study.frame == 5 and not np.array_equal(first, window.image.values)


def test_bad_file_shows_a_dialog_not_a_crash(qtbot, window, monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr("medexport.desktop.qt_dialogs.show_error", lambda parent, title, msg: seen.append(msg))
    bad = tmp_path / "x.txt"
    bad.write_text("no")
    window.open_paths([str(bad)])
    assert seen and "not an image or ECG" in seen[0]


def test_ecg_paper_renders_record(qtbot, window, pydicom_file):
    window.open_paths([pydicom_file("waveform_ecg.dcm")])
    assert window.stack.currentWidget() is window.ecg
    paper = window.ecg.paper
    assert paper.twelve_lead() and paper.width() == int(10 * 25 * paper.px_per_mm + 40)
    assert paper.width() <= window.ecg.viewport().width()  # V4-V6 without scrolling
    window.resize(1500, 800)
    qtbot.wait(50)
    assert window.ecg.viewport().width() - 60 < paper.width() <= window.ecg.viewport().width()  # grows with it
    window.resize(700, 700)
    qtbot.wait(50)
    assert paper.width() <= window.ecg.viewport().width() or paper.px_per_mm == 1.0  # 1 px/mm floor
    image = paper.grab().toImage()
    dark = sum(1 for x in range(0, image.width(), 3) for y in range(0, image.height(), 3)
               if image.pixelColor(x, y).lightness() < 80)
    assert dark > 100  # traces were drawn on the grid


def test_ecg_lead_choice_reaches_the_model(qtbot, window, pydicom_file, ecg_bundle):
    window.state.bundle_folders.append(str(ecg_bundle.parent))
    window.state.discover()
    window.open_paths([pydicom_file("waveform_ecg.dcm")])
    assert window.model_panel.lead.isVisibleTo(window) and window.model_panel.lead.count() == 13
    window.model_panel.lead.textActivated.emit("V2")
    assert window.state.study.predict_options == {"lead": "V2"}
    run_and_wait(qtbot, window)
    result = window.state.result_of(window.state.study)
    assert result.lead == "V2" and "ecg-rhythm" in result.model_id


def test_qt_calls_keep_none_alive(qtbot):
    """PySide6 6.12.0 releases a reference to None on every void call; on Python 3.11 the app
    then aborts mid-paint ("deallocating None"). pyproject keeps PySide6 below 6.12."""
    import sys

    from PySide6.QtGui import QColor, QImage, QPainter

    image = QImage(8, 8, QImage.Format.Format_ARGB32)
    painter = QPainter(image)
    before = sys.getrefcount(None)
    for _ in range(2000):
        painter.setPen(QColor(1, 2, 3))
        painter.drawLine(0, 0, 1, 1)
    painter.end()
    assert sys.getrefcount(None) >= before - 100


def test_half_hour_ecg_with_every_beat_marked(qtbot, window, shared, ecg_bundle):
    """MIT-BIH 100 (30 min, ~2270 beats): run, then paint the exposed part of metres of paper."""
    window.state.bundle_folders.append(str(ecg_bundle.parent))
    window.state.discover()
    window.open_paths([str(shared / "ecg" / "mitdb" / "100.hea")])
    run_and_wait(qtbot, window)
    result = window.state.result_of(window.state.study)
    assert result is not None and len(result.beats) > 2000
    paper = window.ecg.paper
    assert paper.rows > 100 and paper.height() >= paper.rows * 2 * 30 * paper.px_per_mm  # 1805 s, wrapped into rows
    window.ecg.verticalScrollBar().setValue(paper.height() // 2)
    image = window.ecg.viewport().grab().toImage()
    blue = sum(1 for x in range(0, image.width(), 3) for y in range(0, image.height(), 3)
               if image.pixelColor(x, y).blue() > 150 and image.pixelColor(x, y).red() < 60)
    assert blue > 5  # beat marks drawn mid-record


def test_recent_files_are_off_by_default_and_one_entry_stays_whole(qtbot, window, cxr):
    from medexport.desktop.qt_main import app_settings

    settings = app_settings()
    settings.remove("recent")
    settings.remove("remember_recent")
    window.open_paths([cxr[0]])
    assert app_settings().value("recent") is None  # not remembered unless the user asks
    window.set_remember_recent(True)
    window.open_paths([cxr[0]])
    assert app_settings().value("recent") in (cxr[0], [cxr[0]])
    settings = app_settings()
    settings.setValue("recent", cxr[0])  # what the next start reads back from viewer.ini for one entry: a str
    window._fill_recent()
    paths = [a.text() for a in window.recent_menu.actions() if not a.isSeparator() and not a.isCheckable()]
    assert paths == [cxr[0]]
    window.set_remember_recent(False)
    assert app_settings().value("recent") is None


def test_an_unexpected_error_reaches_a_dialog_and_the_log(qtbot, window, monkeypatch):
    import sys

    from medexport.desktop import qt_dialogs
    from medexport.desktop.paths import log_path
    from medexport.desktop.qt_main import report_unexpected_errors

    shown = []
    monkeypatch.setattr(qt_dialogs, "show_error", lambda parent, title, message: shown.append(message))
    import threading

    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    report_unexpected_errors(window)
    try:
        raise ModuleNotFoundError("No module named 'sqlite3'")
    except ModuleNotFoundError:
        sys.excepthook(*sys.exc_info())
    assert shown and "sqlite3" in shown[0] and str(log_path()) in shown[0]
    assert "No module named 'sqlite3'" in log_path().read_text()


def test_every_lead_of_a_two_lead_record_is_shown(qtbot, window, shared):
    window.open_paths([str(shared / "ecg" / "mitdb" / "100.hea")])  # MLII and V5
    paper = window.ecg.paper
    assert not paper.twelve_lead() and paper.leads_shown() == list(paper.record.leads) and len(paper.leads_shown()) == 2
    assert paper.height() >= 2 * 30 * paper.px_per_mm  # one 30-mm row per lead


def test_ecg_printout_is_at_the_scale_it_states(qtbot, window, pydicom_file, ecg_bundle, tmp_path):
    """Measured in the PDF's own coordinates: 1 s of paper is 25 mm, 1 mV is 10 mm (1 pt = 25.4/72 mm)."""
    from pypdf import PdfReader

    window.state.bundle_folders.append(str(ecg_bundle.parent))
    window.state.discover()
    window.open_paths([pydicom_file("waveform_ecg.dcm")])
    run_and_wait(qtbot, window)
    pdf = window.save_pdf(str(tmp_path / "ecg.pdf"))
    reader = PdfReader(str(pdf))
    assert len(reader.pages) == 2
    page = reader.pages[1]
    width_mm, height_mm = (float(v) * 25.4 / 72 for v in (page.mediabox.width, page.mediabox.height))
    assert abs(width_mm - 297) < 1 and abs(height_mm - 210) < 1  # A4 landscape
    where = {}

    def visit(text, cm, tm, font, size):
        if text.strip():  # the text origin in page coordinates (points): tm, then the current matrix
            x = tm[4] * cm[0] + tm[5] * cm[2] + cm[4]
            y = tm[4] * cm[1] + tm[5] * cm[3] + cm[5]
            where.setdefault(text.strip(), (x, y))

    page.extract_text(visitor_text=visit)
    mm = 25.4 / 72
    seconds = [where[f"{s}s"][0] for s in range(11)]
    steps = np.diff(seconds) * mm
    assert np.allclose(steps, 25.0, atol=0.2), steps  # 25 mm/s
    # the calibration labels sit 2.2 mm below the baseline and 0.6 mm above the 1 mV top: 10 mm/mV
    assert abs(abs(where["1mV"][1] - where["0mV"][1]) * mm - (10.0 + 2.2 + 0.6)) < 0.3


def test_a_leg_radiograph_gets_a_banner_and_the_pdf_says_so(qtbot, window, dcm, pneumonia_bundle, tmp_path):
    from pypdf import PdfReader

    window.open_paths([dcm("RG3_UNCR.dcm")])
    window.state.choose(next(b for b in window.state.bundles if b.path == pneumonia_bundle))
    run_and_wait(qtbot, window)
    banner = window.result_panel.banner
    assert not banner.isHidden() and "EXTREMITY" in banner.text() and "outside_intended_use" in banner.toolTip()
    window.grab().save(str(tmp_path / "banner.png"))
    text = PdfReader(str(window.save_pdf(str(tmp_path / "r.pdf")))).pages[0].extract_text()
    assert "EXTREMITY" in text and "outside_intended_use" in text


def test_the_banner_hides_when_a_result_has_no_warning(qtbot, window):
    window.result_panel.show_result(None)
    assert window.result_panel.banner.isHidden()


def test_clinic_strict_setting_refuses_the_leg(pneumonia_bundle, dcm):
    from medexport.desktop.paths import data_dir
    from medexport.desktop.trust import model_options
    from medexport.engine import open_bundle
    from medexport.engine.intended_use import OutsideIntendedUseError

    data_dir().mkdir(parents=True, exist_ok=True)
    ini = data_dir() / "viewer.ini"
    before = ini.read_text() if ini.exists() else None
    ini.write_text("[General]\nallow_unsigned_bundles=true\nrefuse_outside_intended_use=true\n")
    try:
        with open_bundle(pneumonia_bundle, **model_options()) as model:
            with pytest.raises(OutsideIntendedUseError, match="EXTREMITY"):
                model.predict(dcm("RG3_UNCR.dcm"))
    finally:
        if before is None:
            ini.unlink()
        else:
            ini.write_text(before)
