"""The built-in models. Each entry: a factory plus the config that travels into bundles.

Factories import their architecture (and so torch) when called: listing models and reading
their configs (``medexport models``, ``inspect``) needs no torch.
"""
from __future__ import annotations

from .registry import WEIGHTS_DIR, ModelConfig, register_model

NIH_FINDINGS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")

PNEUMONIA_CXR = ModelConfig(
    intended_for={"modalities": ("CR", "DX"), "body_parts": ("CHEST",), "view_positions": ("AP",),
                  "age_years": (1, 5), "note": "paediatric AP chest radiographs, one hospital in Guangzhou (Kermany 2018)"},
    name="pneumonia-cxr", version="2.1.0", task="classification", labels=("normal", "pneumonia"),
    input_shape=(1, 224, 224),
    preprocess={"size": (224, 224), "channels": 1, "crop": "center_square", "resample": "bilinear",
                "mean": (0.5,), "std": (0.25,)},
    activation="softmax", positive_labels=("pneumonia",),
    intended_use=("Demonstration of the medexport pipeline: flags paediatric (ages 1-5) anteroposterior chest "
                  "X-rays that look like pneumonia, trained on films from one centre (Guangzhou). Adults and PA "
                  "films are outside its intended use. Not a medical device; not for diagnosis."),
    recipe="medexport.models.recipes.pneumonia_cxr",
    # the recipe writes both lists (rows relative to the shared data): 300 calibration films from the fit
    # part; validation = the patient-held-out part that set the threshold. Golden: four
    # held-out Kermany films, normal and pneumonia alternating, first: the 1 MB golden budget keeps only the first
    # few at 224 px (the build adds studies unlike the training data)
    extra={"calib": [str(WEIGHTS_DIR / "pneumonia-cxr.calib.csv")], "val": [str(WEIGHTS_DIR / "pneumonia-cxr.val.csv")],
           "golden": [f"images/kermany-cxr224/train/{f}.jpeg" for f in (
               "NORMAL/NORMAL2-IM-0402-0001", "PNEUMONIA/person889_bacteria_2813", "NORMAL/NORMAL2-IM-0490-0001",
               "PNEUMONIA/person620_virus_1192")] + ["images/cxr-nih"]},
)

DENSENET121_CXR = ModelConfig(
    intended_for={"modalities": ("CR", "DX"), "body_parts": ("CHEST",)},
    name="densenet121-cxr", version="0.0.0", task="classification", labels=NIH_FINDINGS,
    input_shape=(1, 224, 224),
    preprocess={"size": (224, 224), "channels": 1, "crop": "center_square", "resample": "bilinear",
                "mean": (0.5,), "std": (0.25,)},
    activation="sigmoid", positive_labels=NIH_FINDINGS, trained=False,
    # real chest X-rays for calibration: the NIH films and PneumoniaMNIST upsampled by the preprocessing
    extra={"calib": ["images/cxr-nih", "images/pneumoniamnist_trainval.npz:train:298"]},
    intended_use="Speed work only: a realistic chest X-ray architecture with random weights. Its scores mean nothing.",
)


@register_model(PNEUMONIA_CXR)
def pneumonia_cxr(**kwargs):
    from .archs.cxr_resnet import CXRResNet

    return CXRResNet(in_channels=1, num_classes=2, **kwargs)


@register_model(DENSENET121_CXR)
def densenet121_cxr(**kwargs):
    from .archs.densenet import DenseNet

    return DenseNet(in_channels=1, num_classes=len(NIH_FINDINGS), **kwargs)


ECG_RHYTHM = ModelConfig(
    intended_for={"modalities": ("ECG",), "note": "single-lead or 12-lead resting ECG, adults"},
    name="ecg-rhythm", version="1.2.0", task="ecg_rhythm", labels=("normal", "af", "other", "noisy"),
    input_shape=(32, 169), input_name="beats",
    # measured on a 2-core AVX2 CPU, 10-s record, batch 1: ONNX Runtime 0.27 ms, OpenVINO 0.36 ms
    # (from ONNX and from the torch module alike), torch eager 1.66 ms
    backend_preference=("onnxruntime", "openvino"),
    preprocess={"kind": "ecg", "fs": 250.0, "lead": "II", "band": (0.5, 40.0), "beat_window": (-0.24, 0.40),
                "beats": 32, "stride": 16},
    activation="softmax", positive_labels=(),
    intended_use=("Demonstration of the medexport pipeline: classifies the rhythm of one ECG lead as normal sinus "
                  "rhythm, atrial fibrillation, other rhythm or too noisy. Not a medical device; not for diagnosis."),
    recipe="medexport.models.recipes.ecg_rhythm",
    # INT8 keeps the Slices that cut out the RR features and their Concat with the beat embeddings
    # in float: RR irregularity lives in
    # values around 0.05-0.3 that one shared int8 scale with the embeddings wipes out
    extra={"calib": ["ecg/cinc2017-af"], "val": ["ecg/cinc2017-af"], "int8_float_ops": ["Concat", "Slice", "StridedSlice", "Add", "Multiply"]},
)


@register_model(ECG_RHYTHM)
def ecg_rhythm(**kwargs):
    from .archs.ecg_rnn import BeatCNNLSTM

    return BeatCNNLSTM(beat_samples=160, rr_features=8, num_classes=4, **kwargs)


EM_MEMBRANE_SEG = ModelConfig(
    intended_for={"modalities": ("SM", "OT", "XC"), "note": "serial-section electron microscopy"},
    name="em-membrane-seg", version="1.0.0", task="segmentation", labels=("membrane",),
    input_shape=(1, 256, 256),
    preprocess={"kind": "tiles", "tile": 256, "overlap": 32, "channels": 1, "mean": (0.5,), "std": (0.25,)},
    activation="sigmoid", positive_labels=("membrane",),
    intended_use=("Demonstration of the medexport segmentation pipeline: cell membranes in serial-section electron "
                  "microscopy (biomedical research, not clinical). Not a medical device."),
    recipe="medexport.models.recipes.em_membrane_seg",
    # calibration on every slice; validation on the six held-out slices (24-29)
    extra={"calib": ["segmentation/isbi2012-em"],
           "val": [f"segmentation/isbi2012-em/image/{i}.png" for i in range(24, 30)]},
)


@register_model(EM_MEMBRANE_SEG)
def em_membrane_seg(**kwargs):
    from .archs.unet import UNet

    return UNet(in_channels=1, num_classes=1, **kwargs)


BLOOD_CELL_DET = ModelConfig(
    intended_for={"modalities": ("SM", "OT", "XC", "GM"), "note": "stained peripheral blood smears, light microscopy"},
    name="blood-cell-det", version="1.1.0", task="detection", labels=("RBC", "WBC", "Platelets"),
    input_shape=(3, 256, 320),
    # 640 x 480 smears letterboxed at exactly 1/2 (8 rows of padding above and below)
    preprocess={"kind": "detect", "size": (256, 320), "letterbox": True,
                "mean": (0.735, 0.693, 0.701), "std": (0.08, 0.1, 0.08)},
    activation="sigmoid", positive_labels=("RBC", "WBC", "Platelets"),
    intended_use=("Demonstration of the medexport detection pipeline: finds and counts red cells, white cells and "
                  "platelets in Giemsa/Wright-stained peripheral blood smear photographs (BCCD microscope). "
                  "Not a medical device; not for diagnosis."),
    recipe="medexport.models.recipes.blood_cell_det",
    # calibration on training smears; validation (the guard's mAP) on the 87 val smears
    extra={"calib": ["detection/bccd:train"], "val": ["detection/bccd:val"], "golden": ["detection/bccd:val:8"],
           # INT8 mixed precision (export/steps/quantize.py): the two stride-4 stem convolutions stay in float;
           # quantized, rotated or gamma-shifted smears moved box scores by up to 0.148 (tolerance 0.1) on OpenVINO
           "int8_float_layers": ["/s4/s4.0/Conv", "/s4/s4.3/s4.3.0/Conv"]},
)


@register_model(BLOOD_CELL_DET)
def blood_cell_det(**kwargs):
    from .archs.centernet import CenterDetector

    return CenterDetector(num_classes=3, **kwargs)


FETAL_HEAD_US = ModelConfig(
    intended_for={"modalities": ("US",), "note": "2-D fetal ultrasound, standard transthalamic plane"},
    name="fetal-head-us", version="1.2.0", task="fetal_head", labels=("head",),
    input_shape=(1, 176, 256),
    # the whole 800 x 540 frame squashed to 256 x 176 (scale ~3.1 on both axes); the probability
    # is resized back onto the source grid before the mask, the ellipse and the measurements
    preprocess={"size": (176, 256), "channels": 1, "crop": "none", "resample": "box",
                "mean": (0.25,), "std": (0.2,)},
    activation="sigmoid", positive_labels=("head",),
    intended_use=("Demonstration of the medexport measurement pipeline: outlines the fetal skull in a standard "
                  "transthalamic ultrasound plane, fits an ellipse and reports head circumference, BPD, OFD and "
                  "gestational age (Hadlock 1984). Not a medical device; not for diagnosis or dating a pregnancy."),
    recipe="medexport.models.recipes.fetal_head_us",
    # the recipe's split by pregnancy (seeded): calibration on training images, validation held out
    extra={"calib": ["segmentation/hc18:train:64"], "val": ["segmentation/hc18:val"],
           "golden": ["segmentation/hc18:val:6"]},
)


@register_model(FETAL_HEAD_US)
def fetal_head_us(**kwargs):
    from .archs.unet import UNet

    return UNet(in_channels=1, num_classes=1, widths=(8, 16, 32, 64, 128), **kwargs)


HIPPOCAMPUS_MR = ModelConfig(
    intended_for={"modalities": ("MR",), "body_parts": ("HEAD", "BRAIN"),
                  "note": "T1 MR crops around one hippocampus (about 35 x 51 x 35 voxels at 1 mm), adults",
                  # the 201 training crops cover 31-41 x 40-59 x 24-47 mm in RAS axes at 1 mm voxels
                  # (recipes/hippocampus_mr.crop_extents); 25 % margin either side
                  "extent_mm": ((23, 51), (30, 74), (18, 59)), "spacing_mm": (0.8, 1.25)},
    name="hippocampus-mr", version="1.0.0", task="volume_segmentation", labels=("anterior", "posterior"),
    input_shape=(1, 40, 56, 40), input_name="volume",
    # predict on one NIfTI crop (35x51x35), 2 threads, 2-core EPYC with AVX-512 VNNI: OpenVINO INT8 8.4 ms
    # median, OpenVINO FP32 14.9 ms, ONNX Runtime FP32 26.3 ms (ORT INT8 was slower than its FP32)
    backend_preference=("openvino", "onnxruntime"),
    # every volume z-scored on its own, padded to at least the window, read in 40 x 56 x 40 windows
    # (half overlap, Gaussian blending); axes turned to RAS by the affine (the training NIfTIs are RAS)
    preprocess={"kind": "volume", "patch": (40, 56, 40), "overlap": 0.5, "sigma_scale": 0.125,
                "orientation": "RAS", "normalize": "zscore"},
    activation="softmax", positive_labels=(),
    intended_use=("Demonstration of the medexport volume pipeline: segments the anterior and posterior hippocampus "
                  "in a T1 MR crop around one hippocampus and reports their volumes in mL. Not a medical device; "
                  "not for diagnosis."),
    recipe="medexport.models.recipes.hippocampus_mr",
    # the recipe's seeded 80/20 split by subject (one volume each), written beside the weights
    extra={"calib": [str(WEIGHTS_DIR / "hippocampus-mr.calib.csv")], "val": [str(WEIGHTS_DIR / "hippocampus-mr.val.csv")],
           "golden": [str(WEIGHTS_DIR / "hippocampus-mr.golden.csv")]},
)


@register_model(HIPPOCAMPUS_MR)
def hippocampus_mr(**kwargs):
    from .archs.unet3d import UNet3D

    return UNet3D(in_channels=1, num_classes=3, widths=(8, 16, 32, 64), **kwargs)
