"""Model families, registered by name. ``build_model("resnet", depth=56, num_classes=10)``."""

from cnnbench.models import resnet  # noqa: F401  (registers plain and resnet)
from cnnbench.models.registry import ModelSpec, build_model, get_model_spec, list_models, register_model

__all__ = ["ModelSpec", "build_model", "get_model_spec", "list_models", "register_model"]
