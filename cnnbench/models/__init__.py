"""Model families, registered by name. ``build_model("resnet", depth=56, num_classes=10)``.

Importing this package registers every family; ``registry`` itself imports none of them.
"""

# Importing a family's module registers it.
from cnnbench.models import (  # noqa: F401
    classic,  # lenet5, alexnet
    densenet,
    inception,
    preact_resnet,
    resnet,  # plain, resnet
    vgg,
    wide_resnet,
)
from cnnbench.models.paper import paper_param_count
from cnnbench.models.registry import ModelSpec, build_model, get_model_spec, list_models, register_model

__all__ = ["ModelSpec", "build_model", "get_model_spec", "list_models", "paper_param_count", "register_model"]
