"""Where a build starts: a registered model (torch) or a user's ONNX file, plus its reference runner."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medexport.engine.checksums import sha256_file
from medexport.engine.errors import ConfigurationError, ExportError
from medexport.engine.manifest import PREPROCESS_KINDS, ImagePreprocess, IntendedUse, Postprocess, TensorSpec


@dataclass
class Source:
    """A model ready to compile: its ONNX graph, metadata, and a runner for reference outputs."""

    model_id: str
    version: str
    task: str
    labels: tuple
    onnx_path: Path
    input: TensorSpec
    outputs: tuple
    preprocess: object  # ImagePreprocess | EcgPreprocess
    postprocess: Postprocess
    intended_use: str
    kind: str  # registered | onnx
    source_sha256: str
    card_text: str = ""
    training: dict = field(default_factory=dict)
    torch_model: object = None
    default_golden: tuple = ()  # dataset specs for golden inputs when none are given
    intended_for: IntendedUse = field(default_factory=IntendedUse)  # header values the engine checks
    clinical: bool = True  # False for random-weight speed models: int8 needs no clinical validation
    int8_float_ops: tuple = ()  # op types this model keeps in float when quantized (see models/zoo.py)
    int8_float_layers: tuple = ()  # ONNX node names this model keeps in float when quantized (mixed precision)
    backend_preference: tuple = ()

    def reference(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs of the source model itself (torch eager, or ONNX Runtime on the given ONNX)."""
        if self.torch_model is not None:
            import torch

            with torch.no_grad():
                    outs = self.torch_model.forward_with_cam(torch.from_numpy(batch)) \
                    if "cam" in [o.name for o in self.outputs] else (self.torch_model(torch.from_numpy(batch)),)
            return {o.name: t.numpy() for o, t in zip(self.outputs, outs)}
        if not hasattr(self, "_ort"):
            import onnxruntime as ort

            self._ort = ort.InferenceSession(str(self.onnx_path), providers=["CPUExecutionProvider"])
        names = [o.name for o in self.outputs]
        return dict(zip(names, self._ort.run(names, {self.input.name: batch})))


def from_registry(name: str, workdir: Path) -> Source:
    from medexport.models.data import default_data
    from medexport.models.registry import create_model, get_config

    from .steps.to_onnx import torch_to_onnx

    config = get_config(name)
    model = create_model(name, pretrained=True)
    with_cam = hasattr(model, "forward_with_cam")
    onnx_path = workdir / "source.onnx"
    torch_to_onnx(model, config.input_shape, onnx_path, with_cam=with_cam, input_name=config.input_name)
    n = len(config.labels)
    out_specs = [TensorSpec("logits", (-1, n))]
    if with_cam:  # images: (N, classes, h, w); ECG: (N, beats, classes)
        cam_shape = (-1, n, -1, -1) if len(config.input_shape) == 3 else (-1, config.input_shape[0], n)
        out_specs.append(TensorSpec("cam", cam_shape))
    preprocess = dict(config.preprocess)
    kind = preprocess.get("kind", "image")
    weights_sha = sha256_file(config.weights_path) if config.trained else "random-init"
    try:
        golden = tuple(default_data(config, "golden") or _default_golden(kind))
    except ConfigurationError:
        golden = ()
    return Source(
        model_id=name, version=config.version, task=config.task, labels=config.labels, onnx_path=onnx_path,
        input=TensorSpec(config.input_name, (-1, *config.input_shape)), outputs=tuple(out_specs),
        preprocess=PREPROCESS_KINDS[kind](**preprocess),
        postprocess=Postprocess(config.activation, config.thresholds(), "logits", "cam" if with_cam else None),
        intended_use=config.intended_use, intended_for=IntendedUse(**config.intended_for), kind="registered",
        source_sha256=weights_sha,
        card_text=config.card_path.read_text() if config.card_path.is_file() else _untrained_card(config),
        training=config.training_record(), torch_model=model, default_golden=golden, clinical=config.trained,
        int8_float_ops=tuple(config.extra.get("int8_float_ops", ())),
        int8_float_layers=tuple(config.extra.get("int8_float_layers", ())), backend_preference=config.backend_preference)


def _default_golden(kind: str) -> list[str]:
    """Real studies from the shared data (and pydicom) for on-target self-checks."""
    from medexport.models.data import shared_data

    root = shared_data()
    if kind == "tiles":
        return [str(root / "segmentation" / "isbi2012-em" / "image" / f"{i}.png") for i in (24, 29)]
    if kind == "ecg":
        from pydicom.data import get_testdata_file

        ecg = root / "ecg"
        return [str(ecg / "cinc2017-af" / f"{r}.hea") for r in ("A00001", "A00004", "A00005", "A00008", "A00009")] + \
            [str(ecg / "mitdb" / "100.hea"), str(ecg / "hl7-aecg" / "example_12lead.xml"),
             get_testdata_file("waveform_ecg.dcm")]
    return [str(p) for p in sorted((root / "images" / "cxr-nih").glob("*.png"))] + \
        [f"{root / 'images' / 'pneumoniamnist_trainval.npz'}:val:14"]


def _untrained_card(config) -> str:
    return (f"# Model card: {config.name} {config.version}\n\n**Random weights: for speed work only. "
            f"Its scores mean nothing. Not a medical device.**\n\n{config.intended_use}\n")


def from_onnx(path: Path, *, task: str | None, labels: list[str] | None, input_size: int | None,
              mean: tuple = (0.0,), std: tuple = (1.0,), activation: str | None = None,
              threshold: float = 0.5, model_id: str | None = None, version: str | None = None,
              intended_use: str | None = None, intended_for: dict | None = None,
              workdir: Path | None = None) -> Source:
    """A user's ONNX classifier. What the file tells (input size, labels in its metadata, external
    weight files) is read from it; the rest must be given explicitly."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ConfigurationError(f"{path} does not exist", fix="give a registered model name or an .onnx path")
    try:
        model = onnx.load(str(path))  # external weight files (model.onnx.data) are read from beside it
        onnx.checker.check_model(model)
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path} or its external weight file could not be read ({exc})",
                          fix="keep the .onnx and its .data file together in one folder") from None
    except Exception as exc:  # onnx raises its own checker/protobuf errors
        raise ExportError(f"{path} is not a valid ONNX model ({exc})", fix="re-export it from its framework") from None
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != 1:
        raise ConfigurationError(f"{path} has {len(inputs)} inputs", expected="one image input (N, C, H, W)")
    dims = [d.dim_value if d.dim_value > 0 else -1 for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise ConfigurationError(f"{path} input {inputs[0].name!r} has rank {len(dims)}", expected="rank 4 (N, C, H, W)")
    if input_size is None and dims[2] > 0 and dims[2] == dims[3]:
        input_size = dims[2]  # the model's own fixed square input
    labels = labels or _metadata_labels(model)
    from medexport.engine.tasks import TASKS

    onnx_tasks = [name for name, cls in TASKS.items() if cls.from_onnx]
    task = task or (onnx_tasks[0] if len(onnx_tasks) == 1 else None)
    missing = [flag for flag, v in (("--task", task), ("--labels", labels), ("--input-size", input_size)) if not v]
    if missing:
        raise ConfigurationError(f"building from {path.name} needs {', '.join(missing)} (the file does not say)",
                                 fix="e.g. --task classification --labels normal,abnormal --input-size 224")
    if task not in onnx_tasks:
        raise ConfigurationError(f"task {task!r} is not supported for ONNX files yet", expected=" or ".join(onnx_tasks))
    channels = dims[1] if dims[1] > 0 else 1
    if dims[2] > 0 and dims[2] != input_size or dims[3] > 0 and dims[3] != input_size:
        raise ConfigurationError(f"--input-size {input_size} conflicts with the model's input {dims[2]}x{dims[3]}",
                                 fix=f"use --input-size {dims[2]}")
    out = model.graph.output[0]
    out_dims = [d.dim_value for d in out.type.tensor_type.shape.dim]
    if out_dims and out_dims[-1] > 0 and out_dims[-1] != len(labels):
        raise ConfigurationError(f"{len(labels)} labels given but the model's output {out.name!r} has {out_dims[-1]} values",
                                 fix="give one label per output value")
    if any(t.HasField("data_location") and t.data_location == onnx.TensorProto.EXTERNAL
           for t in _initializers_as_loaded(path)):
        path = _single_file(model, path, workdir)  # the bundle's artifacts are one file each
    activation = activation or ("softmax" if len(labels) > 1 else "sigmoid")
    positive = labels[1:] if activation == "softmax" and len(labels) == 2 else labels
    name = model_id or path.stem
    return Source(
        model_id=name, version=version or "0.0.0", task=task, labels=tuple(labels), onnx_path=path,
        input=TensorSpec(inputs[0].name, (dims[0], channels, input_size, input_size)),
        outputs=(TensorSpec(out.name, (-1, len(labels))),),
        preprocess=ImagePreprocess(size=(input_size, input_size), channels=channels, mean=tuple(mean), std=tuple(std)),
        postprocess=Postprocess(activation, {lab: threshold for lab in positive}, out.name, None),
        intended_use=intended_use or "User-supplied model; intended use not stated.", kind="onnx",
        intended_for=IntendedUse(**(intended_for or {})),
        source_sha256=sha256_file(path),
        card_text=f"# {name} {version or '0.0.0'}\n\n{intended_use or 'Intended use not stated.'}\n\n"
                  f"Built from `{path.name}`; no model card was supplied.\n")


def _metadata_labels(model) -> list[str] | None:
    """Labels from the ONNX metadata (key ``labels``: comma-separated or a JSON list), if present."""
    import json

    for prop in model.metadata_props:
        if prop.key.lower() in ("labels", "classes", "class_names"):
            text = prop.value.strip()
            try:
                values = json.loads(text) if text.startswith("[") else text.split(",")
            except json.JSONDecodeError:
                values = text.split(",")
            values = [str(v).strip() for v in values if str(v).strip()]
            return values or None
    return None


def _initializers_as_loaded(path: Path):
    import onnx

    return onnx.load(str(path), load_external_data=False).graph.initializer


def _single_file(model, path: Path, workdir: Path | None) -> Path:
    """The model with its external weights folded into one .onnx in the build's work folder."""
    import onnx

    if workdir is None:
        raise ExportError(f"{path} keeps its weights in an external file", fix="build it through 'medexport build'")
    if model.ByteSize() > 2_000_000_000:
        raise ExportError(f"{path} is larger than 2 GB with its weights", expected="a model under 2 GB",
                          fix="this deployment path supports models under 2 GB")
    out = workdir / path.name
    onnx.save_model(model, str(out), save_as_external_data=False)
    return out
