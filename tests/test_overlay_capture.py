"""The overlay a result draws, burnt into a DICOM Secondary Capture beside the source, so any PACS
viewer shows it: valid, in the source's study, referencing the source, the overlay's colour in its
pixels; optional per PACS node (``send_overlay``, default on); sent to a real Orthanc and read back."""
from __future__ import annotations

import io
import json

import numpy as np
import pydicom
import pytest
from pacs_fixtures import orthanc  # noqa: F401 (session fixture)

from medexport.engine import ConfigurationError, open_bundle
from medexport.engine.overlay_paint import BOX_COLOURS, ELLIPSE_COLOUR
from medexport.engine.pacs import scu
from medexport.engine.pacs.nodes import Node, load_nodes, save_nodes
from medexport.engine.pacs.objects import encode, result_objects

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


@pytest.fixture(scope="module")
def fetal(fetal_bundle, tmp_path_factory):
    from study_factory import ultrasound

    path = str(tmp_path_factory.mktemp("us") / "us.dcm")
    ultrasound(1, "P1", "Test^Fetal", "19900101").save_as(path, enforce_file_format=True)
    with open_bundle(fetal_bundle) as model:
        return model.predict(path), path


def _check_capture(sc, source_path: str):
    back = pydicom.dcmread(io.BytesIO(encode(sc)))
    src = pydicom.dcmread(source_path, stop_before_pixels=True)
    assert back.SOPClassUID == SECONDARY_CAPTURE and back.PhotometricInterpretation == "RGB"
    assert back.StudyInstanceUID == src.StudyInstanceUID and back.SeriesInstanceUID != src.SeriesInstanceUID
    assert back.PatientID == src.PatientID
    ref = back.SourceImageSequence[0]
    assert (ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID) == (src.SOPClassUID, src.SOPInstanceUID)
    assert back.pixel_array.shape == (src.Rows, src.Columns, 3)
    return back


def test_the_fitted_ellipse_is_burnt_into_a_capture_of_the_ultrasound(fetal, tmp_path):
    r, path = fetal
    assert r.ellipse is not None
    sr, seg, sc = result_objects(r, path, overlay=True)
    back = _check_capture(sc, path)
    x, y = np.rint(r.ellipse.points(720)).astype(int).T
    on_ellipse = back.pixel_array[y.clip(0, back.Rows - 1), x.clip(0, back.Columns - 1)]
    assert (np.abs(on_ellipse.astype(int) - ELLIPSE_COLOUR).max(1) <= 1).mean() > 0.9  # drawn opaque
    grey = back.pixel_array[: back.Rows // 8, : back.Columns // 8]  # a corner away from the head: the source
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    assert r.headline() in back.ImageComments
    assert len(result_objects(r, path)) == 2  # without overlay: SR and SEG only
    again = result_objects(r, path, overlay=True)[2]
    assert again.SOPInstanceUID == sc.SOPInstanceUID  # same source, same bundle: one copy on the PACS
    from PIL import Image

    Image.fromarray(back.pixel_array).save(tmp_path / "fetal_capture.png")


def test_boxes_are_burnt_in_their_label_colour(det_bundle, tmp_path):
    from study_factory import smear

    path = str(tmp_path / "smear.dcm")
    smear(1, "P2", "Test^Smear", "19900101").save_as(path, enforce_file_format=True)
    with open_bundle(det_bundle) as model:
        r = model.predict(path)
    assert r.detections
    sc = [ds for ds in result_objects(r, path, overlay=True) if ds.SOPClassUID == SECONDARY_CAPTURE][0]
    back = _check_capture(sc, path)
    d = r.detections[0]
    x0, y0, x1, y1 = (int(round(v)) for v in d.box)
    edge = back.pixel_array[y0, max(x0, 0):x1]  # the box's top line
    colour = BOX_COLOURS[r.labels.index(d.label) % len(BOX_COLOURS)]
    assert (np.abs(edge.astype(int) - colour).max(1) <= 1).mean() > 0.5


def test_send_overlay_is_a_node_setting_on_by_default(tmp_path):
    node = Node.from_address("PACS@10.0.0.5:104", name="a")
    assert node.send_overlay is True
    path = save_nodes({"a": node, "b": Node("b", ae_title="B", host="h", port=1, send_overlay=False)}, tmp_path / "n.json")
    loaded = load_nodes(path)
    assert (loaded["a"].send_overlay, loaded["b"].send_overlay) == (True, False)  # False kept, not dropped
    path.write_text(json.dumps({"nodes": {"c": {"ae_title": "C", "host": "h", "port": 1, "send_overlay": "no"}}}))
    with pytest.raises(ConfigurationError, match="send_overlay"):
        load_nodes(path)


def test_sr_and_capture_reach_orthanc_and_read_back(orthanc, fetal):  # noqa: F811
    r, path = fetal
    node = orthanc.node()
    objects = result_objects(r, path, overlay=node.send_overlay)
    assert scu.send(node, objects) == [ds.SOPInstanceUID for ds in objects]

    def read_back(uid):
        [found] = orthanc.find(SOPInstanceUID=uid)
        return pydicom.dcmread(io.BytesIO(orthanc.rest(f"/instances/{found['ID']}/file")))

    sr, _, sc = objects
    back = read_back(sc.SOPInstanceUID)
    assert back.SOPClassUID == SECONDARY_CAPTURE and np.array_equal(back.pixel_array, sc.pixel_array)
    import highdicom as hd

    report = hd.sr.srread(io.BytesIO(orthanc.rest(f"/instances/{orthanc.find(SOPInstanceUID=sr.SOPInstanceUID)[0]['ID']}/file")))
    measured = {m.name.value: m.value for m in report.content.get_image_measurement_groups()[0].get_measurements()}
    assert float(measured["11984-2"]) == pytest.approx(r.measurements["head_circumference_mm"], abs=1e-3)
    assert back.StudyInstanceUID == read_back(sr.SOPInstanceUID).StudyInstanceUID
