"""Models registered by name (in the spirit of timm's registry).

A family registers a builder ``f(depth, num_classes, **options) -> nn.Module`` plus what the CLI and
the error messages need to know about it: which depths are valid. The families register when
``cnnbench.models`` is imported (which importing this module does first, as its parent package); this
module imports no family. The papers' parameter counts are in ``cnnbench/core/reference.yaml``
(``cnnbench.models.paper``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

from torch import nn

from cnnbench.errors import CnnbenchError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., nn.Module]
    is_valid_depth: Callable[[int], bool]
    depth_rule: str  # human-readable, e.g. "6n+2"
    example_depths: tuple[int, ...]
    description: str = ""
    # For families whose valid depths depend on an option (ResNet's ``block``): the options -> the rule
    # (is_valid, depth_rule, example_depths) for those options, or None for the union rule above.
    depth_rule_for: Callable[[Mapping[str, object]], tuple | None] | None = None

    def narrowed(self, options: Mapping[str, object] | None) -> ModelSpec:
        """This spec with the depth rule of ``options`` (e.g. block=basic: 6n+2 only)."""
        rule = self.depth_rule_for(options or {}) if self.depth_rule_for else None
        if rule is None:
            return self
        is_valid, depth_rule, examples = rule
        return replace(self, is_valid_depth=is_valid, depth_rule=depth_rule, example_depths=tuple(examples))


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    *,
    is_valid_depth: Callable[[int], bool],
    depth_rule: str,
    example_depths: Iterable[int],
    description: str = "",
    depth_rule_for: Callable[[Mapping[str, object]], tuple | None] | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register ``builder`` under ``name``."""

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelSpec(
            name=name,
            builder=builder,
            is_valid_depth=is_valid_depth,
            depth_rule=depth_rule,
            example_depths=tuple(example_depths),
            description=description or (inspect.getdoc(builder) or "").split("\n")[0],
            depth_rule_for=depth_rule_for,
        )
        return builder

    return decorator


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_model_spec(name: str) -> ModelSpec:
    if name not in _REGISTRY:
        from cnnbench.core.overrides import did_you_mean

        raise CnnbenchError(
            f"Unknown model {name!r}.{did_you_mean(str(name), _REGISTRY)} "
            f"Available models: {', '.join(sorted(_REGISTRY))}. "
            f"Pick one with model=<name>, e.g. `cnnbench train model=resnet depth=20`."
        )
    return _REGISTRY[name]


def nearest_valid_depths(spec: ModelSpec, depth: int, count: int = 2, search: int = 400) -> list[int]:
    """Up to ``count`` valid depths below and above ``depth`` (for error messages)."""
    below = [d for d in range(depth - 1, max(depth - search, 0), -1) if spec.is_valid_depth(d)][:count]
    above = [d for d in range(depth + 1, depth + search) if spec.is_valid_depth(d)][:count]
    return sorted(below) + above


def check_depth(spec: ModelSpec, depth: object, options: Mapping[str, object] | None = None) -> None:
    """``depth`` fits the family (with ``options``, e.g. block=basic); else one CnnbenchError with the
    valid depths near it."""
    spec = spec.narrowed(options)
    if not isinstance(depth, int) or isinstance(depth, bool):
        raise CnnbenchError(
            f"depth={depth!r} must be a whole number; for model {spec.name!r} it is {spec.depth_rule}. "
            f"The usual depths: {', '.join(map(str, spec.example_depths))}. Set e.g. "
            f"depth={spec.example_depths[0]}."
        )
    if not spec.is_valid_depth(depth):
        near = nearest_valid_depths(spec, depth)  # none within reach of a far-off depth
        closest = min(near or spec.example_depths, key=lambda d: (abs(d - depth), d))
        nearby = f"Valid depths near it: {', '.join(map(str, near))}; " if near else ""
        raise CnnbenchError(
            f"depth={depth} is not valid for model {spec.name!r}: its depth must be {spec.depth_rule}. "
            f"{nearby}the usual ones: {', '.join(map(str, spec.example_depths))}. Set e.g. depth={closest}."
        )


def build_model(name: str, depth: int, num_classes: int = 10, **options: object) -> nn.Module:
    """Build a registered model, e.g. ``build_model("resnet", depth=56, num_classes=10)``.

    Unknown names, invalid depths and options the family does not take raise ``CnnbenchError``
    with the valid choices.
    """
    spec = get_model_spec(name)
    check_depth(spec, depth, options)
    accepted = inspect.signature(spec.builder).parameters
    unknown = sorted(k for k in options if k not in accepted)
    if unknown:
        valid = [p for p in accepted if p not in ("depth", "num_classes")]
        raise CnnbenchError(
            f"Model {name!r} has no option {', '.join(unknown)}. Its options are: "
            f"{', '.join(valid) or '(none)'}. Remove the option or choose a model that has it."
        )
    return spec.builder(depth=depth, num_classes=num_classes, **options)
