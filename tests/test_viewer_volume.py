"""Volumes in the viewer (issue 29, part 4): three linked orthogonal views, offscreen with pytest-qt,
on the real chest CT (NIfTI, with its organ label map) and the real brain T1 DICOM series."""
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6")

from medexport.desktop.qt_main import MainWindow  # noqa: E402
from medexport.desktop.state import AppState  # noqa: E402
from medexport.engine.errors import InvalidInputError  # noqa: E402
from medexport.engine.studies import open_paths  # noqa: E402


@pytest.fixture(scope="module")
def volumes():
    from medexport.models.data import shared_data

    root = Path(shared_data()) / "volumes"
    return {"ct": root / "chest-ct" / "ct.nii.gz", "ct_mask": root / "chest-ct" / "mask.nii.gz",
            "t1": root / "hippocampus-mr" / "dicom" / "Study1" / "12-T1post-05670",
            "study1": root / "hippocampus-mr" / "dicom" / "Study1",
            "crop": root / "hippocampus-mr" / "dicom" / "Study2" / "14_HCropVolume",
            "hippo": root / "hippocampus-mr" / "images" / "hippocampus_001.nii.gz",
            "hippo_labels": root / "hippocampus-mr" / "labels" / "hippocampus_001.nii.gz"}


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    w = MainWindow(AppState())
    w.scripted = True  # errors to stderr, not a dialog nobody closes
    qtbot.addWidget(w)
    w.resize(1400, 900)
    w.show()
    qtbot.waitExposed(w)
    return w


def _copy_series(src: Path, dst: Path, change=None, drop: int | None = None) -> Path:
    import pydicom

    dst.mkdir()
    for i, f in enumerate(sorted(src.iterdir())):
        if i == drop:
            continue
        if change is None:
            shutil.copy(f, dst / f.name)
        else:
            ds = pydicom.dcmread(f)
            change(ds)
            ds.save_as(dst / f.name)
    return dst


def test_a_series_folder_and_a_nifti_open_as_volumes(volumes, dcm, tmp_path):
    studies, problems = open_paths([volumes["study1"], volumes["ct"], dcm("RG1_UNCI.dcm")])
    assert not problems
    kinds = {Path(s.path).name: s.kind for s in studies}
    assert kinds == {"12-T1post-05670": "volume", "13_HCropVolume": "volume", "ct.nii.gz": "volume",
                     "RG1_UNCI.dcm": "image"}
    t1 = next(s for s in studies if s.path == str(volumes["t1"]))
    assert t1.series == "T1post (22 slices)" and t1.header["Modality"] == "MR"
    assert t1.load().shape == (22, 512, 512)
    gap = _copy_series(volumes["crop"], tmp_path / "gap", drop=10)  # a missing slice: not one volume
    studies, _ = open_paths([gap])
    assert len(studies) == 34 and {s.kind for s in studies} == {"image"}
    beside = _copy_series(volumes["crop"], tmp_path / "beside")
    (beside / "notes.txt").write_text("not a slice")  # read_volume would refuse the folder: its slices stay images
    assert {s.kind for s in open_paths([beside])[0]} == {"image"}
    (beside / "notes.txt").unlink()
    assert [s.kind for s in open_paths([beside])[0]] == ["volume"]


def test_three_views_keep_the_true_aspect_and_the_chest_ct_opens_fast_and_small(qtbot, window, volumes):
    import psutil

    before = psutil.Process().memory_info().rss  # the test process holds other tests' memory: count what opening adds
    wall, cpu = time.perf_counter(), time.process_time()
    window.open_paths([str(volumes["ct"])])
    qtbot.wait(1)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    view = window.volume
    assert window.stack.currentWidget() is view and window.state.study.kind == "volume"
    assert {v: view.shape_of(v) for v in view.views} == {"axial": (512, 512), "coronal": (133, 512),
                                                          "sagittal": (133, 512)}
    for name, (rows, cols, row_mm, col_mm) in {"axial": (512, 512, 0.703125, 0.703125),
                                                "coronal": (133, 512, 2.5, 0.703125),
                                                "sagittal": (133, 512, 2.5, 0.703125)}.items():
        widget = view.views[name]
        assert (widget.base.height(), widget.base.width()) == (rows, cols)
        r = widget.image_rect()
        assert r.height() / r.width() == pytest.approx(rows * row_mm / (cols * col_mm), rel=0.01)  # not squashed
    window.open_label_map(str(volumes["ct_mask"]))
    added = psutil.Process().memory_info().rss - before
    print(f"chest CT open: {wall:.2f} s wall, {cpu:.2f} s CPU; RSS added with its label map {added / 2**20:.0f} MiB")
    assert cpu <= 2.0 and wall <= 4.0  # goal 2 s wall: CPU time is what this process spent (the machine is shared)
    assert added < 800 * 2**20  # the viewer itself starts at ~200 MiB: under 1 GB in all


def test_orientation_is_the_patients(qtbot, window, volumes):
    """Planes as read in radiology, against nibabel's own reorientation (RAS+) of the chest CT."""
    import nibabel

    window.open_paths([str(volumes["ct"])])
    view = window.volume
    ras = np.asanyarray(nibabel.as_closest_canonical(nibabel.load(volumes["ct"])).dataobj)  # x to the right
    lps_zyx = ras.transpose(2, 1, 0)[:, ::-1, ::-1]  # z to the head, y to the back, x to the left
    z, y, x = view.cursor.point
    assert np.array_equal(view.plane_values("axial"), lps_zyx[z])
    assert np.array_equal(view.plane_values("coronal"), lps_zyx[::-1, y, :])
    assert np.array_equal(view.plane_values("sagittal"), lps_zyx[::-1, :, x])


def test_clicking_in_one_view_moves_the_other_two(qtbot, window, volumes):
    from PySide6.QtCore import QPoint, Qt

    window.open_paths([str(volumes["t1"])])
    view = window.volume
    voxels = window.state.study.load().voxels  # slices x rows x columns: axial, rows to the back
    axial = view.views["axial"]
    r = axial.image_rect()
    qtbot.mouseClick(axial, Qt.MouseButton.LeftButton, pos=QPoint(int(r.x() + r.width() * 0.3),
                                                                   int(r.y() + r.height() * 0.6)))
    row, col = view.cursor.in_plane("axial")
    assert abs(row - 0.6 * 512) <= 2 and abs(col - 0.3 * 512) <= 2
    assert view.index("coronal") == row and view.index("sagittal") == col and view.index("axial") == 11
    assert np.array_equal(view.plane_values("coronal"), voxels[::-1, row, :])
    assert np.array_equal(view.plane_values("sagittal"), voxels[::-1, :, col])
    assert view.views["coronal"].cross == (22 - 1 - 11, col)  # the crosshair drawn where the click was
    coronal = view.views["coronal"]
    r = coronal.image_rect()
    qtbot.mouseClick(coronal, Qt.MouseButton.LeftButton, pos=QPoint(int(r.center().x()), int(r.top() + 2)))
    assert view.index("axial") == 21 and view.index("coronal") == row  # the top row is the head end


def _wheel(widget, notches: int) -> None:
    from PySide6.QtCore import QPoint, QPointF, Qt
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication

    centre = QPointF(widget.width() / 2, widget.height() / 2)
    event = QWheelEvent(centre, widget.mapToGlobal(centre), QPoint(0, 0), QPoint(0, 120 * notches),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, event)


def test_the_wheel_steps_through_slices(qtbot, window, volumes):
    window.open_paths([str(volumes["t1"])])
    view = window.volume
    voxels = window.state.study.load().voxels
    _wheel(view.views["axial"], 1)
    assert view.index("axial") == 12 and np.array_equal(view.plane_values("axial"), voxels[12])
    _wheel(view.views["axial"], -3)
    assert view.index("axial") == 9
    _wheel(view.views["axial"], 40)
    assert view.index("axial") == 21  # stops at the last slice
    before = view.index("sagittal")
    _wheel(view.views["sagittal"], -2)
    assert view.index("sagittal") == before - 2 and view.index("axial") == 21
    assert view.views["axial"].cross[1] == before - 2  # the axial view's crosshair follows


def test_ct_window_presets_for_ct_only(qtbot, window, volumes, tmp_path):
    window.open_paths([str(volumes["t1"])])  # MR: its own window, no lung window
    names = [a.text() for a in window.presets_menu.actions()]
    assert not any("(CT)" in n for n in names) and any("W 9113 L 4556" in n for n in names)
    assert (window.volume.level, window.volume.width_) == (4556.0, 9113.0)  # the file's own window first

    def as_ct(ds):
        ds.Modality = "CT"
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"

    window.open_paths([str(_copy_series(volumes["crop"], tmp_path / "ct", change=as_ct))])
    assert window.state.study.kind == "volume"
    lung = next(a for a in window.presets_menu.actions() if a.text().startswith("Lung (CT)"))
    lung.trigger()
    assert (window.volume.level, window.volume.width_) == (-600.0, 1500.0)
    assert window.volume.views["axial"].text.endswith("W 1500 L -600")
    window.open_paths([str(volumes["hippo"])])  # NIfTI states no modality: no CT presets offered
    assert not any("(CT)" in a.text() for a in window.presets_menu.actions())


def test_label_colours_are_in_every_rendered_view_and_volumes_in_the_table(qtbot, window, volumes):
    import nibabel

    from medexport.desktop.volume_view import label_colour, plane

    window.open_paths([str(volumes["ct"])])
    window.open_label_map(str(volumes["ct_mask"]))
    view = window.volume
    view.set_overlay(opacity=1.0)
    for name, widget in view.views.items():
        shown = set(np.unique(plane(view.labels, name, view.index(name)))) - {0}
        assert len(shown) >= 3
        image = widget.grab().toImage()
        rgb = np.array([[image.pixelColor(x, y).getRgb()[:3] for x in range(0, image.width(), 2)]
                        for y in range(0, image.height(), 2)]).reshape(-1, 3)
        colours = {tuple(c) for c in rgb}
        found = [label for label in shown if label_colour(int(label)) in colours]
        assert len(found) >= 0.8 * len(shown), (name, shown, found)  # tiny structures may fall between samples
    mask = nibabel.load(volumes["ct_mask"])
    counts = np.bincount(np.asarray(mask.dataobj).ravel())
    ml = float(np.prod(mask.header.get_zooms())) / 1000
    table = {view.table.item(i, 0).text(): float(view.table.item(i, 2).text()) for i in range(view.table.rowCount())}
    assert table["label 5"] == pytest.approx(counts[5] * ml, abs=0.01)  # the liver, about 1 L
    assert table["total"] == pytest.approx(counts[1:].sum() * ml, abs=0.01)
    window.result_panel.overlay.setChecked(False)
    assert all(w.overlay is None for w in view.views.values())


def test_a_volume_result_shows_its_labels_by_name(qtbot, window, volumes):
    """The shape a hippocampus result will have: labels on the voxel grid, named, in an Overlay."""
    import nibabel

    from medexport.engine.results import Overlay

    window.open_paths([str(volumes["hippo"])])
    labels = np.asarray(nibabel.load(volumes["hippo_labels"]).dataobj).astype(np.uint8)
    window.volume.set_result_overlay(Overlay("labels", (labels, {1: "anterior", 2: "posterior"}), "hippocampus"))
    table = {window.volume.table.item(i, 0).text(): window.volume.table.item(i, 1).text()
             for i in range(window.volume.table.rowCount())}
    assert table == {"anterior": f"{(labels == 1).sum():,}", "posterior": f"{(labels == 2).sum():,}",
                     "total": f"{(labels > 0).sum():,}"}


def test_a_label_map_on_another_grid_or_not_labels_is_refused(qtbot, window, volumes):
    state = window.state
    state.open([str(volumes["hippo"])])
    with pytest.raises(InvalidInputError, match="grid"):
        state.open_label_map(state.study, str(volumes["ct_mask"]))
    state.open([str(volumes["ct"])])
    with pytest.raises(InvalidInputError, match="label map: whole numbers 0"):
        state.open_label_map(state.study, str(volumes["ct"]))  # an image (HU down to -1024) is not a label map
    assert not state.label_maps


def test_a_folder_with_a_damaged_frame_count_opens_the_rest_and_names_the_tag():
    """pydicom's own test files hold one whose (0028,0008) is '1A' (it crashed the folder's opening):
    given alone, it is refused naming the tag; in its folder, the others open."""
    from pathlib import Path

    import pydicom
    import pydicom.data

    from medexport.engine.studies import open_paths

    folder = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent
    damaged = [f for f in sorted(folder.glob("*.dcm"))
               if str(pydicom.dcmread(f, stop_before_pixels=True, force=True).get("NumberOfFrames", "1")) == "1A"]
    assert damaged
    studies, problems = open_paths([str(folder)])
    assert len(studies) > 50 and str(damaged[0]) not in {s.path for s in studies}
    studies, problems = open_paths([str(damaged[0])])
    assert not studies and "(0028,0008) Number of Frames" in problems[0]
