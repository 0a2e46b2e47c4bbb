"""em-membrane-seg end to end: tiles blended on the source grid, Dice on a held-out slice, outputs."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from medexport.engine import open_bundle
from medexport.engine.manifest import TilePreprocess
from medexport.engine.preprocess import blend_tiles, image_to_tiles

EM = "segmentation/isbi2012-em"


def test_tiles_cover_and_blend_back_exactly():
    spec = TilePreprocess(tile=64, overlap=8, mean=(0.0,), std=(1.0,))
    image = np.random.default_rng(0).random((150, 97)).astype(np.float32)
    tiles, origins = image_to_tiles(image, spec)
    back = blend_tiles(tiles[:, 0], origins, image.shape, spec.overlap)
    np.testing.assert_allclose(back, image, atol=1e-6)
    small = np.ones((40, 50), np.float32)
    tiles, origins = image_to_tiles(small, spec)
    assert tiles.shape == (1, 1, 64, 64) and blend_tiles(tiles[:, 0], origins, small.shape, 8).shape == (40, 50)


def test_held_out_slice_dice(seg_bundle, shared):
    truth = np.asarray(Image.open(shared / EM / "label" / "26.png")) == 0
    with open_bundle(seg_bundle) as model:
        r = model.predict(str(shared / EM / "image" / "26.png"))
        crop = model.predict(np.asarray(Image.open(shared / EM / "image" / "26.png"))[:300, :420])
    assert r.mask.shape == (512, 512) and r.tiles == 9
    assert r.dice(truth) > 0.75
    assert crop.mask.shape == (300, 420)


def test_backends_agree_on_the_mask(seg_bundle, shared):
    path = str(shared / EM / "image" / "27.png")
    with open_bundle(seg_bundle, backend="openvino") as ov, open_bundle(seg_bundle, backend="onnxruntime") as ort:
        a, b = ov.predict(path), ort.predict(path)
    assert np.abs(a.probability - b.probability).max() < 1e-3 and (a.mask != b.mask).mean() < 1e-4


def test_cli_writes_mask_and_reports_dice(seg_bundle, shared, tmp_path):
    exe = Path(sys.executable).with_name("medexport")
    image, label = shared / EM / "image" / "25.png", shared / EM / "label" / "25.png"
    # the ISBI labels mark membranes with 0: make a reference with membrane > 0
    ref = tmp_path / "ref.png"
    Image.fromarray(((np.asarray(Image.open(label)) == 0) * 255).astype(np.uint8)).save(ref)
    proc = subprocess.run([str(exe), "predict", str(seg_bundle), str(image), "--reference", str(ref),
                           "--out", str(tmp_path / "out"), "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)[0]
    assert out["dice_vs_reference"] > 0.75
    mask = np.asarray(Image.open(out["mask_file"])) > 0
    assert mask.shape == (512, 512) and abs(mask.mean() - out["mask_fraction"]) < 1e-4


def test_dicom_input_gives_a_dicom_seg(seg_bundle, dcm, tmp_path):
    import pydicom

    from medexport.engine.outputs import save_dicom_seg

    src = dcm("MR2_UNCR.dcm")
    with open_bundle(seg_bundle) as model:
        r = model.predict(src)
    path = save_dicom_seg(r, src, tmp_path)
    seg = pydicom.dcmread(path)
    source = pydicom.dcmread(src, stop_before_pixels=True)
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.SegmentSequence[0].SegmentLabel == "membrane"
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
