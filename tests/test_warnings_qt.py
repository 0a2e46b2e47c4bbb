"""Warnings in the viewer: a banner above the answer, and in the PDF report; strict mode refuses."""
import pytest

pytest.importorskip("PySide6")

from medexport.desktop.qt_main import MainWindow  # noqa: E402
from medexport.desktop.state import AppState  # noqa: E402
from medexport.models.data import pydicom_data  # noqa: E402


@pytest.fixture
def window(qtbot, pneumonia_bundle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./bundles of an older build beside the fixture's
    w = MainWindow(AppState(bundle_folders=[str(pneumonia_bundle.parent)]))
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    return w


def _run(qtbot, window):
    window.run_current()
    qtbot.waitUntil(lambda: not window.worker.isRunning(), timeout=60000)
    qtbot.wait(50)


def test_a_leg_radiograph_gets_a_banner_and_the_pdf_says_so(qtbot, window, tmp_path):
    from pypdf import PdfReader

    window.open_paths([str(pydicom_data() / "RG3_UNCR.dcm")])
    _run(qtbot, window)
    banner = window.result_panel.banner
    assert not banner.isHidden() and "EXTREMITY" in banner.text() and "outside_intended_use" in banner.toolTip()
    window.grab().save(str(tmp_path / "banner.png"))
    text = PdfReader(str(window.save_pdf(str(tmp_path / "r.pdf")))).pages[0].extract_text()
    assert "EXTREMITY" in text and "outside_intended_use" in text


def test_the_banner_hides_when_a_result_has_no_warning(qtbot, window):
    window.result_panel.show_result(None)
    assert window.result_panel.banner.isHidden()


def test_clinic_strict_setting_refuses_the_leg(qtbot, pneumonia_bundle, monkeypatch):
    from medexport.desktop.paths import data_dir

    data_dir().mkdir(parents=True, exist_ok=True)
    ini = data_dir() / "viewer.ini"
    before = ini.read_text() if ini.exists() else None
    ini.write_text("[General]\nallow_unsigned_bundles=true\nrefuse_outside_intended_use=true\n")
    try:
        from medexport.desktop.trust import model_options

        assert model_options()["strict"] is True
    finally:
        if before is None:
            ini.unlink()
        else:
            ini.write_text(before)
