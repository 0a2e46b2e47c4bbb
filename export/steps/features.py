"""Step: expose the model's own features as one more graph output, for the out-of-distribution
reference (engine/ood.py). Works on any ONNX graph, registered or a user's:

- a classifier whose scores come from a Gemm / MatMul over a (N, C) vector: that vector (the
  penultimate layer);
- otherwise (segmentation, detection, a classifier ending in a convolution): the deepest feature
  map (the smallest spatial size; a U-Net's bottleneck), averaged over its pixels (voxels for a
  volume model: each window gives one row, and the engine averages a study's windows).

Every backend then computes the features in the same inference as the scores.
"""
from __future__ import annotations

import math
from pathlib import Path

FEATURES = "features"
_PASS_THROUGH = ("Add", "Identity", "Flatten", "Reshape", "Squeeze", "Transpose", "Sigmoid", "Softmax", "Relu")


def add_feature_output(onnx_path: Path, score_output: str, input_shape: tuple) -> int | None:
    """Rewrite ``onnx_path`` with a ``features`` (N, C) output; its width C, or None where the
    graph offers no feature tensor (then the bundle has no OOD reference)."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(onnx_path))
    graph = model.graph
    if FEATURES in [o.name for o in graph.output]:
        return None
    shapes = _tensor_shapes(model, input_shape)
    producers = {out: node for node in graph.node for out in node.output}
    initializers = {t.name for t in graph.initializer}
    vector = _penultimate_vector(producers, initializers, score_output, shapes)
    if vector is not None:
        graph.node.append(helper.make_node("Identity", [vector], [FEATURES], name="medexport_features"))
        width = shapes[vector][1]
    else:
        rank = len(input_shape) + 1  # (N, C, H, W), or (N, C, D, H, W) for a volume model
        deepest = _deepest_map(graph, shapes, rank)
        if deepest is None:
            return None
        graph.node.append(helper.make_node("ReduceMean", [deepest], [FEATURES], axes=list(range(2, rank)), keepdims=0,
                                           name="medexport_features"))
        width = shapes[deepest][1]
    graph.output.append(helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT, ["batch", width]))
    onnx.save(model, str(onnx_path))
    return int(width)


def _tensor_shapes(model, input_shape: tuple) -> dict[str, tuple]:
    """Static shapes of every tensor for one input of ``input_shape`` (batch 2)."""
    import onnx

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    dims = fixed.graph.input[0].type.tensor_type.shape.dim
    for d, v in zip(dims, (2, *input_shape)):
        d.ClearField("dim_param")
        d.dim_value = int(v)
    inferred = onnx.shape_inference.infer_shapes(fixed)
    out = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim)
        out[vi.name] = shape
    return out


def _penultimate_vector(producers: dict, initializers: set, score_output: str, shapes: dict) -> str | None:
    node = producers.get(score_output)
    while node is not None and node.op_type in _PASS_THROUGH:
        upstream = [i for i in node.input if i in producers and i not in initializers]
        node = producers.get(upstream[0]) if upstream else None
    if node is None or node.op_type not in ("Gemm", "MatMul"):
        return None
    name = node.input[0]
    shape = shapes.get(name, ())
    return name if len(shape) == 2 and shape[1] > 0 else None


def _deepest_map(graph, shapes: dict, rank: int = 4) -> str | None:
    """The (N, C, H, W) activation (``rank`` 5: (N, C, D, H, W)) with the fewest pixels (ties: the
    most channels, then the latest)."""
    best, key = None, None
    for order, node in enumerate(graph.node):
        if node.op_type not in ("Relu", "LeakyRelu", "Clip", "Sigmoid", "Mul", "Add", "Conv", "BatchNormalization",
                                "MaxPool", "Concat"):
            continue
        for name in node.output:
            shape = shapes.get(name, ())
            if len(shape) != rank or min(shape) <= 0:
                continue
            k = (-math.prod(shape[2:]), shape[1], order)
            if key is None or k > key:
                best, key = name, k
    return best
