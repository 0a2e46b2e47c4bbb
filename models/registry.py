"""timm-style model registry: names -> factories + configs that carry preprocessing and provenance."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from medexport.engine.errors import ConfigurationError, ExportError, suggest

WEIGHTS_DIR = Path(__file__).parent / "weights"
CARDS_DIR = Path(__file__).parent / "cards"


@dataclass(frozen=True)
class ModelConfig:
    """Everything a bundle needs to know about a registered model besides its weights."""

    name: str
    version: str
    task: str
    labels: tuple
    input_shape: tuple  # one item's shape: (C, H, W) for images, (beats, features) for ECG
    preprocess: dict
    activation: str  # softmax | sigmoid
    positive_labels: tuple  # labels that carry an operating threshold
    intended_use: str
    recipe: str | None = None  # module that trains it, e.g. "medexport.models.recipes.pneumonia_cxr"
    intended_for: dict = field(default_factory=dict)  # engine.manifest.IntendedUse fields: the header check
    trained: bool = True  # False: random weights, for speed work only
    default_threshold: float = 0.5
    input_name: str = "image"
    backend_preference: tuple = ()  # CPU runtimes fastest first, as measured for this model
    extra: dict = field(default_factory=dict)

    @property
    def weights_path(self) -> Path:
        return WEIGHTS_DIR / f"{self.name}.pt"

    @property
    def metrics_path(self) -> Path:
        return WEIGHTS_DIR / f"{self.name}.json"

    @property
    def card_path(self) -> Path:
        return CARDS_DIR / f"{self.name}.md"

    def training_record(self) -> dict:
        """Metrics, threshold and data provenance written by the recipe (empty if untrained)."""
        return json.loads(self.metrics_path.read_text()) if self.metrics_path.is_file() else {}

    def thresholds(self) -> dict:
        chosen = self.training_record().get("thresholds", {})
        return {label: float(chosen.get(label, self.default_threshold)) for label in self.positive_labels}


_REGISTRY: dict[str, tuple] = {}


def register_model(config: ModelConfig):
    """Decorator: register ``factory(**kwargs) -> torch.nn.Module`` under ``config.name``."""
    def wrap(factory):
        if config.name in _REGISTRY:
            raise ConfigurationError(f"model {config.name!r} is registered twice")
        _REGISTRY[config.name] = (factory, config)
        return factory
    return wrap


def list_models() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get_config(name: str) -> ModelConfig:
    _load_builtin()
    if name not in _REGISTRY:
        raise ConfigurationError(f"no registered model named {name!r}.{suggest(name, _REGISTRY)}",
                                 expected=f"one of {', '.join(sorted(_REGISTRY))}, or a path to an .onnx file")
    return _REGISTRY[name][1]


def create_model(name: str, pretrained: bool = True, **kwargs):
    """Build a registered model in eval mode; with ``pretrained`` load its shipped weights."""
    import torch

    config = get_config(name)
    model = _REGISTRY[name][0](**kwargs)
    if pretrained and config.trained:
        if not config.weights_path.is_file():
            raise ExportError(f"model {name!r} has no shipped weights at {config.weights_path}",
                              fix=f"train them with 'python -m {config.recipe}'")
        model.load_state_dict(torch.load(config.weights_path, map_location="cpu", weights_only=True))
    return model.eval()


def _load_builtin() -> None:
    from . import zoo  # noqa: F401  (registers the built-in models)
