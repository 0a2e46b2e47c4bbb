"""The volume model in the viewer (issue 29, part 4): hippocampus-mr runs on a NIfTI and on a DICOM
series from the viewer's worker thread; its labels show in all three views with per-label colours
and a legend, its volumes in the result panel equal the engine's, and the PDF report holds the
three planes and the table. CT presets for a NIfTI CT, which states no modality."""
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6")

from medexport.desktop.qt_main import MainWindow  # noqa: E402
from medexport.desktop.state import AppState  # noqa: E402

SHOTS = Path("/tmp/medexport-h6-shots")  # screenshots looked at while writing the viewer (not asserted)


@pytest.fixture(scope="module")
def volumes():
    from medexport.models.data import shared_data

    root = Path(shared_data()) / "volumes"
    return {"ct": root / "chest-ct" / "ct.nii.gz",
            "hippo": root / "hippocampus-mr" / "images" / "hippocampus_001.nii.gz",
            "crop": root / "hippocampus-mr" / "dicom" / "Study2" / "14_HCropVolume"}


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch, hippo_bundle):
    monkeypatch.chdir(tmp_path)
    w = MainWindow(AppState(bundle_folders=[str(hippo_bundle.parent)]))
    w.scripted = True
    qtbot.addWidget(w)
    w.resize(1400, 900)
    w.show()
    qtbot.waitExposed(w)
    return w


def _shot(widget, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    widget.grab().save(str(SHOTS / name))


def _colours(widget) -> set:
    image = widget.grab().toImage()
    return {image.pixelColor(x, y).getRgb()[:3] for y in range(0, image.height(), 2) for x in range(0, image.width(), 2)}


@pytest.mark.parametrize("which", ["hippo", "crop"])
def test_the_volume_model_runs_shows_its_labels_and_volumes_and_saves_a_report(qtbot, window, volumes, hippo_bundle,
                                                                               which, tmp_path):
    from pypdf import PdfReader

    from medexport.desktop.volume_view import label_colour, plane
    from medexport.engine import open_bundle

    window.open_paths([str(volumes[which])])
    _shot(window, f"volume-open-{which}.png")
    assert window.state.study.kind == "volume" and window.state.chosen["volume"].model_id == "hippocampus-mr"
    window.run_current()
    qtbot.waitUntil(lambda: not window.worker.isRunning(), timeout=120000)
    qtbot.wait(50)
    result = window.state.result_of(window.state.study)
    assert result is not None and result.mask.shape == window.state.study.load().shape
    with open_bundle(hippo_bundle) as model:  # the engine on its own gives the same answer
        alone = model.predict(str(volumes[which]))
    assert alone.measurements == result.measurements and np.array_equal(alone.mask, result.mask)

    panel = window.result_panel
    rows = [tuple(panel.table.item(i, j).text() for j in range(3)) for i in range(panel.table.rowCount())]
    assert rows == [("Anterior volume", f"{result.measurements['anterior_volume_ml']:.2f}", "mL"),
                    ("Posterior volume", f"{result.measurements['posterior_volume_ml']:.2f}", "mL"),
                    ("Total volume", f"{result.measurements['total_volume_ml']:.2f}", "mL")]
    assert panel.legend_entries == [("anterior", label_colour(1)), ("posterior", label_colour(2))]

    view = window.volume
    assert view.labels is not None and view.names == {1: "anterior", 2: "posterior"}
    table = {view.table.item(i, 0).text(): float(view.table.item(i, 2).text()) for i in range(view.table.rowCount())}
    assert table == pytest.approx({"anterior": result.measurements["anterior_volume_ml"],
                                   "posterior": result.measurements["posterior_volume_ml"],
                                   "total": result.measurements["total_volume_ml"]}, abs=0.006)
    # the crosshair through the labels: every view shows both labels' colours
    view.cursor.point = [int(np.median(a)) for a in np.nonzero(view.labels)]
    view.set_overlay(opacity=1.0)
    for name, widget in view.views.items():
        shown = set(np.unique(plane(view.labels, name, view.index(name)))) - {0}
        assert shown, name
        assert {label_colour(int(k)) for k in shown} <= _colours(widget), name
    _shot(window, f"volume-model-{which}.png")
    window.result_panel.overlay.setChecked(False)
    assert all(w.overlay is None for w in view.views.values())
    window.result_panel.overlay.setChecked(True)

    pdf = window.save_pdf(str(tmp_path / "report.pdf"))  # the engine's volume report (engine/volume_report.py)
    reader = PdfReader(str(pdf))
    text = " ".join(" ".join(page.extract_text() for page in reader.pages).split())
    assert "by the medexport viewer" in text and len(reader.pages[0].images) >= 3  # three orthogonal planes
    for key in ("anterior", "posterior", "total"):
        assert f"{result.measurements[key + '_volume_ml']:.2f}" in text
    written = window.save_mask(str(tmp_path))  # DICOM SEG for a series, a label NIfTI for a NIfTI
    if which == "crop":
        import pydicom

        seg = pydicom.dcmread(written)
        assert seg.Modality == "SEG" and [s.SegmentLabel.split()[0] for s in seg.SegmentSequence] == ["anterior", "posterior"]
    else:
        import nibabel

        assert np.array_equal(np.asarray(nibabel.load(written).dataobj), result.mask)


def test_ct_presets_for_a_nifti_ct_by_its_hounsfield_values(qtbot, window, volumes):
    window.open_paths([str(volumes["ct"])])  # NIfTI: no (0008,0060) Modality, air at -1000 HU
    names = [a.text() for a in window.presets_menu.actions()]
    assert [n.split(":")[0] for n in names] == ["Default (from the file)", "Lung (CT?)", "Mediastinum (CT?)",
                                                "Bone (CT?)", "Brain (CT?)"]
    next(a for a in window.presets_menu.actions() if a.text().startswith("Lung")).trigger()
    view = window.volume
    assert (view.level, view.width_) == (-600.0, 1500.0)
    axial = view.plane_values("axial")
    lung = view.views["axial"].base  # lung tissue (-850 HU) is grey in a lung window, where air is black
    assert view.views["axial"].text.endswith("W 1500 L -600")
    grey = lambda hu: int(np.clip((hu - (-600 - 750)) * 255 / 1500, 0, 255))  # noqa: E731
    r, c = np.unravel_index(np.argmin(np.abs(axial + 850)), axial.shape)
    assert abs(lung.pixelColor(int(c), int(r)).red() - grey(float(axial[r, c]))) <= 1
    _shot(window.volume, "chest-ct-lung-window.png")
    next(a for a in window.presets_menu.actions() if a.text().startswith("Mediastinum")).trigger()
    assert (view.level, view.width_) == (40.0, 400.0)
    _shot(window.volume, "chest-ct-mediastinum-window.png")
    window.open_paths([str(volumes["hippo"])])  # an MR NIfTI: its values are never air in HU
    offer = "Offer the CT presets (this file states no modality)"
    assert [a.text() for a in window.presets_menu.actions() if a.text()] == ["Default (from the file)", offer]
    next(a for a in window.presets_menu.actions() if a.text() == offer).trigger()  # the user knows better
    names = [a.text().split(":")[0] for a in window.presets_menu.actions()]
    assert names[1:] == ["Lung (CT?)", "Mediastinum (CT?)", "Bone (CT?)", "Brain (CT?)"]


def test_the_frozen_apps_selftest_saves_a_volume_bundles_seg_sr_and_report(hippo_bundle):
    from medexport.desktop import save_check
    from medexport.desktop.catalog import find_bundles
    from medexport.desktop.trust import open_options

    bundles, _ = find_bundles([hippo_bundle.parent])
    assert save_check.save_paths_work(bundles, open_options()) == ["PASS save hippocampus-mr DICOM SEG, SR and PDF report"]
