"""Step: a torch module -> ONNX (opset 17, dynamic batch); CAM models get a second output."""
from __future__ import annotations

import warnings
from pathlib import Path

from medexport.engine.errors import ExportError

OPSET = 17


def _with_cam(model):
    """The model as a module whose forward returns (logits, cam), for the exported graph."""
    import torch

    class WithCAM(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner.forward_with_cam(x)

    return WithCAM(model).eval()


def torch_to_onnx(model, input_shape: tuple, path: Path, *, with_cam: bool, input_name: str = "image") -> list[str]:
    """Export with a batch-2 example (a batch-1 example can freeze the batch dim); return output names."""
    import torch

    outputs = ["logits", "cam"] if with_cam else ["logits"]
    module = _with_cam(model) if with_cam else model.eval()
    example = torch.zeros(2, *input_shape)
    dynamic = {name: {0: "batch"} for name in [input_name, *outputs]}
    try:
        # dynamo=False: the TorchScript exporter takes ~1 s where dynamo takes ~30 s for the same graph
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            # fixed-length beat windows and zero initial states: any batch size is exact (tests check it)
            warnings.filterwarnings("ignore", message="Exporting a model to ONNX with a batch_size other than 1")
            torch.onnx.export(module, (example,), str(path), input_names=[input_name], output_names=outputs,
                              dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)
    except Exception as exc:
        raise ExportError(f"torch.onnx.export failed: {exc}",
                          fix="check the model traces with a batch-2 example of shape (2, *input_shape)") from exc
    return outputs
