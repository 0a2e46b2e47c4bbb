"""medexport.models: architectures, the registry and the training recipes (uses torch)."""
from .registry import ModelConfig, create_model, get_config, list_models, register_model

__all__ = ["ModelConfig", "create_model", "get_config", "list_models", "register_model"]
