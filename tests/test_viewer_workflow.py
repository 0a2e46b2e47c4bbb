"""The clinic's workflow in the viewer (issue 25): colour smears with a legend, measurement tables,
a pixel size for pictures, the ECG lead box and wrapped rows, the PDF as a document with the patient
header on every page, and a user's model not stamped "Demo model"."""
import math

import numpy as np
import pytest

pytest.importorskip("PySide6")

from medexport.desktop.qt_main import MainWindow  # noqa: E402
from medexport.desktop.state import AppState  # noqa: E402

SMEAR = "detection/bccd/JPEGImages/BloodImage_00000.jpg"
HEAD = "segmentation/hc18/images/002_HC.png"  # 0.062032563 mm per pixel (pixel_size_and_hc.csv)


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    made = []

    def make(*bundles):
        w = MainWindow(AppState(bundle_folders=[str(b.parent) for b in bundles]))
        qtbot.addWidget(w)
        w.resize(1400, 860)
        w.show()
        if bundles:
            w.state.choose(next(e for e in w.state.bundles if e.path == bundles[0]))
        made.append(w)
        return w

    return make


def run_and_wait(qtbot, w):
    w.run_current()
    qtbot.waitUntil(lambda: not w.worker.isRunning(), timeout=120000)
    qtbot.wait(50)


def pdf_pages(path) -> list[str]:
    from pypdf import PdfReader

    return [" ".join(page.extract_text().split()) for page in PdfReader(str(path)).pages]  # pypdf: tabs for spaces


def test_a_blood_smear_is_shown_in_colour_with_a_legend_per_label(qtbot, window, det_bundle, shared, tmp_path):
    w = window(det_bundle)
    w.open_paths([str(shared / SMEAR)])
    assert w.image.values.shape == (480, 640, 3)
    shot, r = w.image.grab().toImage(), w.image.image_rect()
    rgb = np.array([[shot.pixelColor(x, y).getRgb()[:3] for x in range(int(r.left()) + 2, int(r.right()) - 2, 7)]
                    for y in range(int(r.top()) + 2, int(r.bottom()) - 2, 7)], int)
    spread = rgb.max(-1) - rgb.min(-1)
    from PIL import Image

    source = np.asarray(Image.open(shared / SMEAR).convert("RGB"), int)
    expected = (source.max(-1) - source.min(-1)).mean()  # about 20 for this pale smear; 0 for grey
    assert expected > 10 and abs(spread.mean() - expected) < 0.25 * expected, "shown in its colours, not grey"
    run_and_wait(qtbot, w)
    panel = w.result_panel
    assert [label for label, _ in panel.legend_entries] == ["RBC", "WBC", "Platelets"]
    assert len({rgb for _, rgb in panel.legend_entries}) == 3 and not panel.legend.isHidden()
    assert [panel.table.horizontalHeaderItem(i).text() for i in range(3)] == ["label (count)", "mean box score",
                                                                              "box threshold"]
    w.grab().save(str(tmp_path / "smear.png"))
    # the PDF embeds the smear itself, in colour, at its own 640 x 480 pixels: no screen grab, no black bars
    from pypdf import PdfReader

    pdf = w.save_pdf(str(tmp_path / "smear.pdf"))
    images = PdfReader(str(pdf)).pages[0].images
    assert len(images) == 1 and images[0].image.size == (640, 480)
    embedded = np.asarray(images[0].image.convert("RGB"), int)
    assert embedded.mean(axis=(0, 1)).min() > 80 and (embedded[:, :, 0] - embedded[:, :, 2]).mean() > 5  # pink
    text = pdf_pages(pdf)[0]
    assert "label (count)" in text and "RBC" in text and "W 1 L 0.5" not in text


def test_fetal_head_measurements_under_measurement_headers_and_a_drawn_pixel_size(qtbot, window, fetal_bundle,
                                                                                  shared, monkeypatch, tmp_path):
    from PySide6.QtCore import QPoint, Qt

    w = window(fetal_bundle)
    w.open_paths([str(shared / HEAD)])
    assert not w.model_panel.pixel_row.isHidden()  # a PNG states no pixel size: the user gives it
    run_and_wait(qtbot, w)
    table = w.result_panel.table
    cells = lambda: [[table.item(r, c).text() for c in range(3)] for r in range(table.rowCount())]  # noqa: E731
    assert [table.horizontalHeaderItem(i).text() for i in range(3)] == ["measurement", "value", "unit"]
    assert cells()[0][0] == "Head circumference (HC)" and {row[2] for row in cells()} == {"pixels"}
    # a line of 100 image pixels said to be 6.2032563 mm long: 0.062032563 mm per pixel
    view = w.image
    monkeypatch.setattr("medexport.desktop.qt_main.QInputDialog.getDouble", lambda *a, **k: (6.2032563, True))
    w.measure_line()
    r = view.image_rect()
    a = QPoint(int(r.x() + 100 * view.zoom), int(r.y() + 200 * view.zoom))
    b = QPoint(int(r.x() + 200 * view.zoom), int(r.y() + 200 * view.zoom))
    qtbot.mousePress(view, Qt.MouseButton.LeftButton, pos=a)
    qtbot.mouseMove(view, b)
    qtbot.mouseRelease(view, Qt.MouseButton.LeftButton, pos=b)
    size = w.state.pixel_sizes[w.state.study.path]
    assert abs(size - 0.062032563) < 0.062032563 * 0.02  # within the widget's pixel rounding
    qtbot.waitUntil(lambda: not w.worker.isRunning(), timeout=120000)  # re-measured by itself
    qtbot.wait(50)
    result = w.state.result_of(w.state.study)
    assert result.in_mm and result.spacing_source.startswith("given")
    assert cells()[0][2] == "mm" and 40 < float(cells()[0][1]) < 90  # HC18 says 68.75 mm for this head
    text = pdf_pages(w.save_pdf(str(tmp_path / "head.pdf")))[0]
    assert "measurement" in text and "Head circumference (HC)" in text and "finding" not in text


def test_pixel_size_is_checked_and_offered_only_for_measuring_models(window, fetal_bundle, pneumonia_bundle, shared):
    from medexport.engine.errors import ConfigurationError

    w = window(fetal_bundle)
    w.open_paths([str(shared / HEAD)])
    with pytest.raises(ConfigurationError, match="pixel_size_mm"):
        w.state.set_pixel_size(w.state.study, 50.0)
    w.state.set_pixel_size(w.state.study, 0.1)
    pneumonia = next(e for e in w.state.bundles if e.path == pneumonia_bundle) if pneumonia_bundle.parent == \
        fetal_bundle.parent else None
    if pneumonia is not None:  # the classification task takes no pixel size: never passed to it
        assert "pixel_size_mm" not in w.state.options_for(w.state.study, pneumonia)
    assert w.state.options_for(w.state.study, w.state.chosen["image"]) == {"pixel_size_mm": 0.1}


def test_the_lead_box_says_which_leads_decide(qtbot, window, ecg_bundle, pydicom_file):
    w = window(ecg_bundle)
    w.open_paths([pydicom_file("waveform_ecg.dcm")])
    box = w.model_panel.lead
    assert box.itemText(0) == "automatic (best signal quality)" and box.count() == 13
    run_and_wait(qtbot, w)
    result = w.state.result_of(w.state.study)
    assert result.lead_choice == "signal quality" and len(result.leads) >= 1
    assert box.itemText(0) == f"automatic: {', '.join(result.leads)} decide{'s' if len(result.leads) == 1 else ''} " \
                              f"(signal quality)" and "II" not in box.itemText(0).split(":")[0]
    box.textActivated.emit("V2")
    assert w.state.study.lead == "V2"
    box.textActivated.emit(box.itemText(0))
    assert w.state.study.lead is None and w.state.study.predict_options == {}


def test_a_long_single_lead_record_wraps_into_rows(qtbot, window, shared):
    w = window()
    w.open_paths([str(shared / "ecg" / "cinc2017-af" / "A00001.hea")])  # one lead, 30 s
    paper, view = w.ecg.paper, w.ecg
    qtbot.wait(50)
    assert paper.row_seconds >= 5 and paper.rows == math.ceil(paper.record.duration / paper.row_seconds) >= 3
    assert paper.width() <= view.viewport().width() and view.horizontalScrollBar().maximum() == 0
    image = paper.grab().toImage()
    row_px = 30 * paper.px_per_mm
    last = int(8 * paper.px_per_mm + (paper.rows - 0.5) * row_px)  # the last row's baseline
    dark = sum(1 for x in range(0, image.width(), 2) for y in range(int(last - row_px / 2), int(last + row_px / 2), 2)
               if image.pixelColor(x, y).lightness() < 80)
    assert dark > 50, "the last row holds the end of the trace"
    w.open_paths([str(shared / "ecg" / "mitdb" / "100.hea")])  # two leads, 30 min
    assert paper.rows == math.ceil(paper.record.duration / paper.row_seconds) > 100
    assert paper.height() >= paper.rows * 2 * 30 * paper.px_per_mm and view.horizontalScrollBar().maximum() == 0


def test_every_pdf_page_carries_the_patient_header(qtbot, window, ecg_bundle, pydicom_file, shared, tmp_path):
    w = window(ecg_bundle)
    w.open_paths([pydicom_file("waveform_ecg.dcm")])  # 12-lead, 10 s: the summary and the tracing
    run_and_wait(qtbot, w)
    pages = pdf_pages(w.save_pdf(str(tmp_path / "ecg.pdf")))
    assert len(pages) == 2
    assert all("Anonymous" in t and "ID 642341" in t and "25 Jan 2013" in t and "waveform_ecg.dcm" in t for t in pages)
    w.open_paths([str(shared / "ecg" / "cinc2017-af" / "A00001.hea")])  # 30 s, one lead: 10 s + 20 s of strips
    run_and_wait(qtbot, w)
    pages = pdf_pages(w.save_pdf(str(tmp_path / "cinc.pdf")))
    assert len(pages) == 3 and all("A00001.hea" in t and f"page {i}" in t for i, t in enumerate(pages, 1))
    assert "lead ECG, 10-30 s" in pages[2]


def test_a_users_own_model_is_not_stamped_demo_in_the_viewer(window, user_bundle_unvalidated, pneumonia_bundle):
    from medexport.engine.results import DISCLAIMER, OWN_MODEL_DISCLAIMER

    w = window(user_bundle_unvalidated)
    entry = w.state.chosen["image"]
    assert entry.path == user_bundle_unvalidated and entry.disclaimer == OWN_MODEL_DISCLAIMER
    w._refresh_model()
    assert "Not validated by medexport" in w.model_panel.notice.text() and "Demo" not in w.model_panel.notice.text()
    w = window(pneumonia_bundle)
    assert w.state.chosen["image"].disclaimer == DISCLAIMER


def test_a_users_own_model_is_not_stamped_demo_in_results_and_the_cli(user_bundle_unvalidated, pneumonia_bundle, cxr):
    """Needs engine/model.py to pass the manifest's provenance source into Provenance."""
    import subprocess
    import sys

    from medexport.engine import open_bundle
    from medexport.engine.results import DISCLAIMER, OWN_MODEL_DISCLAIMER

    with open_bundle(user_bundle_unvalidated) as model:
        assert model.predict(cxr[0]).disclaimer == OWN_MODEL_DISCLAIMER
    with open_bundle(pneumonia_bundle) as model:
        assert model.predict(cxr[0]).disclaimer == DISCLAIMER
    from pathlib import Path

    out = subprocess.run([str(Path(sys.executable).parent / "medexport"), "predict", str(user_bundle_unvalidated), cxr[0]],
                         capture_output=True, text=True, timeout=120)
    assert "Not validated by medexport" in out.stdout and "Demo model" not in out.stdout, out.stdout + out.stderr
