"""``medexport export-triton``: a bundle's artifact as a standard Triton model repository.

For a hospital's own Triton (its ``onnxruntime`` or ``openvino`` backend)::

    OUT/MODEL_ID/config.pbtxt          name, backend, max_batch_size, inputs, outputs,
                                       dynamic_batching, instance_group (KIND_CPU or KIND_GPU)
    OUT/MODEL_ID/1/model.onnx          (openvino: model.xml + model.bin)
    OUT/MODEL_ID/medexport/manifest.json   the bundle's manifest (+ model card): how a client
                                       preprocesses and reads the outputs, exactly as the bundle says

Triton runs only the network: clients preprocess and postprocess with the engine (see
docs/triton.md). The artifact is copied after its checksum is verified against the manifest.
Nothing here ran on a stock Triton in this project's environment (only pytriton did).
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from medexport.engine.bundle_read import read_manifest
from medexport.engine.errors import ConfigurationError, ExportError

BACKENDS = {"onnxruntime": ("onnxruntime", {"model": "model.onnx", "data": "model.onnx.data"}),
            "openvino": ("openvino", {"model": "model.xml", "weights": "model.bin"})}
DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64", "int32": "TYPE_INT32",
          "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL"}
VERSION = "1"


def pick_artifact(manifest, target: str | None, precision: str | None):
    usable = [a for a in manifest.artifacts if a.target in BACKENDS and (target in (None, a.target))
              and (precision in (None, a.precision))]
    if not usable:
        have = ", ".join(f"{a.target}/{a.precision}" for a in manifest.artifacts) or "none"
        raise ConfigurationError(f"{manifest.model_id} has no artifact for target {target or 'any'}, precision "
                                 f"{precision or 'any'} that Triton's onnxruntime/openvino backends run",
                                 expected=f"one of the bundle's artifacts: {have}",
                                 fix="choose --target/--precision from those, or rebuild the bundle for onnxruntime")
    return sorted(usable, key=lambda a: (a.target != "onnxruntime", a.precision != "fp32"))[0]


def artifact_dims(path: Path, backend: str) -> dict[str, list[int]]:
    """Each tensor's dims as the artifact itself declares them (-1 where free)."""
    if backend == "onnxruntime":
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        return {v.name: [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]
                for v in [*graph.input, *graph.output]}
    import openvino as ov

    model = ov.Core().read_model(str(path))
    return {name: [d.get_length() if d.is_static else -1 for d in port.get_partial_shape()]
            for port in [*model.inputs, *model.outputs] for name in port.get_names()}


def config_pbtxt(manifest, backend: str, max_batch_size: int, instances: int, kind: str,
                 queue_delay_us: int, found: dict | None = None) -> str:
    """Triton's model configuration (protobuf text format, model_config.proto). ``found``: the
    artifact's own dims (``artifact_dims``), used where the manifest states fewer axes (a map-shaped
    output such as a volume's logits, (N, classes, D, H, W), is stated as (N, labels)); Triton
    refuses a configuration whose rank differs from the model's."""
    batch_free = manifest.input.shape[0] == -1
    mbs = max_batch_size if batch_free else 0

    def tensor(spec, skip_batch: bool) -> str:
        shape = (found or {}).get(spec.name)
        shape = list(spec.shape) if shape is None or len(shape) == len(spec.shape) else shape
        dims = shape[1:] if skip_batch else shape
        dtype = DTYPES.get(spec.dtype)
        if dtype is None:
            raise ExportError(f"tensor {spec.name!r} has dtype {spec.dtype}", expected=f"one of {', '.join(DTYPES)}")
        return (f'  {{\n    name: "{spec.name}"\n    data_type: {dtype}\n'
                f'    dims: [ {", ".join(str(d) for d in dims)} ]\n  }}')

    lines = [f'name: "{manifest.model_id}"', f'backend: "{backend}"', f"max_batch_size: {mbs}",
             "input [\n" + tensor(manifest.input, mbs > 0) + "\n]",
             "output [\n" + ",\n".join(tensor(o, mbs > 0) for o in manifest.outputs) + "\n]"]
    if mbs > 1:
        preferred = sorted({b for b in (2, 4, 8, mbs) if b <= mbs})
        lines.append(f"dynamic_batching {{\n  preferred_batch_size: [ {', '.join(map(str, preferred))} ]\n"
                     f"  max_queue_delay_microseconds: {queue_delay_us}\n}}")
    lines.append(f"instance_group [\n  {{\n    count: {instances}\n    kind: {kind}\n  }}\n]")
    lines.append(f'version_policy: {{ specific: {{ versions: [ {VERSION} ] }} }}')
    return "\n".join(lines) + "\n"


def export_triton(bundle, out, *, target: str | None = None, precision: str | None = None,
                  max_batch_size: int = 8, instances: int = 2, kind: str = "KIND_CPU",
                  queue_delay_us: int = 5000, overwrite: bool = False) -> Path:
    """Write ``out/MODEL_ID`` (a model folder of a Triton repository); returns its path."""
    if max_batch_size < 0 or instances < 1 or kind not in ("KIND_CPU", "KIND_GPU"):
        raise ConfigurationError(f"max_batch_size {max_batch_size}, instances {instances}, kind {kind}",
                                 expected="max_batch_size >= 0, instances >= 1, kind KIND_CPU or KIND_GPU")
    manifest, _, root = read_manifest(bundle)  # every checksum verified before anything is copied
    artifact = pick_artifact(manifest, target, precision)
    backend, names = BACKENDS[artifact.target]
    out = Path(out)
    final = out / manifest.model_id
    if final.exists() and not overwrite:
        raise ConfigurationError(f"{final} exists", expected="a new model folder", fix="pass --overwrite or another -o")
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{manifest.model_id}.", dir=out))
    try:
        (stage / VERSION).mkdir()
        for role, rel in artifact.files.items():
            if role not in names:
                raise ExportError(f"artifact file role {role!r} ({rel})", expected=f"one of {', '.join(names)}",
                                  fix="rebuild the bundle with this medexport version")
            shutil.copyfile(root / rel, stage / VERSION / names[role])
        (stage / "medexport").mkdir()
        shutil.copyfile(root / "manifest.json", stage / "medexport" / "manifest.json")
        if manifest.card:
            shutil.copyfile(root / manifest.card, stage / "medexport" / Path(manifest.card).name)
        found = artifact_dims(stage / VERSION / names["model"], artifact.target)
        (stage / "config.pbtxt").write_text(config_pbtxt(manifest, backend, max_batch_size, instances, kind,
                                                         queue_delay_us, found))
        if final.exists():
            shutil.rmtree(final)
        stage.rename(final)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return final
