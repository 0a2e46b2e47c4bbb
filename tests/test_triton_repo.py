"""`medexport export-triton`: the repository's layout and config.pbtxt checked against Triton's
documented model configuration (model_config.proto / docs/user_guide/model_configuration.md).
No stock tritonserver runs here: this checks structure and values, not loading."""
from __future__ import annotations

import json
import re

import pytest

from medexport.engine.bundle_read import read_manifest
from medexport.engine.errors import ConfigurationError
from medexport.export.cli import main
from medexport.export.triton_repo import export_triton

pytestmark = pytest.mark.slow
TYPES = {"TYPE_BOOL", "TYPE_UINT8", "TYPE_INT32", "TYPE_INT64", "TYPE_FP16", "TYPE_FP32", "TYPE_FP64", "TYPE_STRING"}
NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def parse_pbtxt(text: str):
    """A small protobuf text-format reader: {field: [values]}; messages become dicts."""
    tokens = re.findall(r'"[^"]*"|[{}\[\]:,]|[^\s{}\[\]:,"]+', re.sub(r"#.*", "", text))
    pos = 0

    def value():
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        if tok == "{":
            return message("}")
        if tok == "[":
            items = []
            while tokens[pos] != "]":
                items.append(value())
                if tokens[pos] == ",":
                    pos += 1
            pos += 1
            return items
        if tok.startswith('"'):
            return tok[1:-1]
        return int(tok) if re.fullmatch(r"-?\d+", tok) else tok

    def message(end):
        nonlocal pos
        out = {}
        while pos < len(tokens) and tokens[pos] != end:
            key = tokens[pos]
            pos += 1
            if tokens[pos] == ":":
                pos += 1
            v = value()
            out.setdefault(key, []).extend(v if isinstance(v, list) and key in ("input", "output", "instance_group") else [v])
        pos += 1
        return out

    return message(None)


def check_config(cfg: dict, manifest, folder) -> None:
    """Triton's rules: name = folder, a known backend, max_batch_size >= 0, dims without the batch
    dimension when batching, dynamic_batching only with max_batch_size > 0, preferred sizes <= max."""
    assert cfg["name"] == [folder.name] and NAME.match(folder.name)
    assert cfg["backend"][0] in ("onnxruntime", "openvino")
    mbs = cfg["max_batch_size"][0]
    assert isinstance(mbs, int) and mbs >= 0
    (inp,) = cfg["input"]
    shape = list(manifest.input.shape)
    assert inp["name"] == [manifest.input.name] and inp["data_type"][0] in TYPES
    assert inp["dims"][0] == (shape[1:] if mbs > 0 else shape)
    assert [o["name"][0] for o in cfg["output"]] == [o.name for o in manifest.outputs]
    for out, spec in zip(cfg["output"], manifest.outputs):
        assert out["dims"][0] == (list(spec.shape[1:]) if mbs > 0 else list(spec.shape))
        assert out["data_type"][0] in TYPES
    if "dynamic_batching" in cfg:
        assert mbs > 0
        db = cfg["dynamic_batching"][0]
        assert all(0 < b <= mbs for b in db["preferred_batch_size"][0])
        assert db["max_queue_delay_microseconds"][0] >= 0
    for group in cfg["instance_group"]:
        assert group["count"][0] >= 1 and group["kind"][0] in ("KIND_CPU", "KIND_GPU")


@pytest.mark.parametrize("target", ["onnxruntime", "openvino"])
def test_export_triton_layout_and_config(pneumonia_bundle, tmp_path, target):
    manifest, _, root = read_manifest(pneumonia_bundle)
    folder = export_triton(pneumonia_bundle, tmp_path / "repo", target=target, precision="fp32")
    assert folder == tmp_path / "repo" / manifest.model_id
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    version = {"onnxruntime": {"1/model.onnx"}, "openvino": {"1/model.xml", "1/model.bin"}}[target]
    assert version <= files and "config.pbtxt" in files and "medexport/manifest.json" in files
    assert not [f for f in files if f.startswith("1/") and f not in version | {"1/model.onnx.data"}]
    assert json.loads((folder / "medexport" / "manifest.json").read_text())["model_id"] == manifest.model_id
    cfg = parse_pbtxt((folder / "config.pbtxt").read_text())
    check_config(cfg, manifest, folder)
    assert cfg["backend"] == [target] and cfg["max_batch_size"] == [8]
    assert "dynamic_batching" in cfg and cfg["instance_group"][0]["count"] == [2]
    artifact = next(a for a in manifest.artifacts if a.target == target and a.precision == "fp32")
    assert all((folder / f).stat().st_size > 0 for f in version) and artifact.files


def test_export_triton_cli_refuses_overwrite_and_missing_artifacts(pneumonia_bundle, tmp_path, capsys):
    out = tmp_path / "repo"
    assert main(["export-triton", str(pneumonia_bundle), "-o", str(out), "--max-batch-size", "1", "--gpu"]) == 0
    cfg = parse_pbtxt((out / "pneumonia-cxr" / "config.pbtxt").read_text())
    assert cfg["max_batch_size"] == [1] and "dynamic_batching" not in cfg
    assert cfg["instance_group"][0]["kind"] == ["KIND_GPU"]
    assert main(["export-triton", str(pneumonia_bundle), "-o", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    with pytest.raises(ConfigurationError, match="int8"):
        export_triton(pneumonia_bundle, tmp_path / "other", precision="int8")
