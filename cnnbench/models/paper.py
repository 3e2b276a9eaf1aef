"""Parameter counts the papers print (CIFAR-10, millions), looked up for any model configuration.

Each family's figures are keyed by the options that change the count at the printed precision (block
type, WRN width, DenseNet growth rate / bottleneck / compression). Options that do not (shortcut A or
B, dropout, stochastic depth) are not keys: e.g. ResNet-20 with option B has 272,474 parameters against
269,722 with option A, both 0.27M. Configurations no paper reports return None; so do the CIFAR
variants of VGG, GoogLeNet, AlexNet and LeNet-5, whose papers count ImageNet (or 1-channel 32x32) nets.

Only this module imports nothing from the families, so the families can use ``paper_table`` at import.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import NamedTuple

_HE_2016A = "He et al. 2016, Deep Residual Learning, Table 6"
_HE_2016B = "He et al. 2016, Identity Mappings in Deep Residual Networks, CIFAR-10 results"
_WRN = "Zagoruyko & Komodakis 2016, Wide Residual Networks, Table 4"
_DENSENET = "Huang et al. 2017, Densely Connected Convolutional Networks, Table 2"

# model -> [(options the figures are for, {depth: millions}, source)]
_FIGURES: dict[str, list[tuple[dict[str, object], dict[int, float], str]]] = {
    "resnet": [
        ({"block": "basic"}, {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7, 1202: 19.4}, _HE_2016A),
        # Original (post-activation) bottleneck units, the baselines of the pre-activation paper.
        ({"block": "bottleneck"}, {164: 1.7, 1001: 10.2}, _HE_2016B),
    ],
    "preact_resnet": [
        ({"block": "bottleneck"}, {164: 1.7, 1001: 10.2}, _HE_2016B),
    ],
    "wide_resnet": [
        ({"width": 1}, {40: 0.6}, _WRN),
        ({"width": 2}, {40: 2.2}, _WRN),
        ({"width": 4}, {40: 8.9}, _WRN),
        ({"width": 8}, {16: 11.0, 22: 17.2, 40: 35.7}, _WRN),
        ({"width": 10}, {16: 17.1, 22: 26.8, 28: 36.5}, _WRN),
        ({"width": 12}, {28: 52.5}, _WRN),
    ],
    "densenet": [
        ({"growth_rate": 12, "bottleneck": False, "compression": 1.0}, {40: 1.0, 100: 7.0}, _DENSENET),
        ({"growth_rate": 24, "bottleneck": False, "compression": 1.0}, {100: 27.2}, _DENSENET),
        ({"growth_rate": 12, "bottleneck": True, "compression": 0.5}, {100: 0.8}, _DENSENET),
        ({"growth_rate": 24, "bottleneck": True, "compression": 0.5}, {250: 15.3}, _DENSENET),
        ({"growth_rate": 40, "bottleneck": True, "compression": 0.5}, {190: 25.6}, _DENSENET),
    ],
}


class PaperFigure(NamedTuple):
    millions: float
    source: str


def paper_table(name: str, **options: object) -> dict[int, float]:
    """The ``{depth: millions}`` table printed for exactly these options (for ``register_model``)."""
    for conditions, table, _ in _FIGURES.get(name, []):
        if conditions == options:
            return dict(table)
    return {}


def _resolved_options(name: str, options: Mapping[str, object]) -> dict[str, object]:
    """The builder's defaults overlaid with ``options``, as the model would be built."""
    from cnnbench.models.registry import get_model_spec

    params = inspect.signature(get_model_spec(name).builder).parameters
    resolved: dict[str, object] = {
        k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty
    }
    resolved.update({k: v for k, v in options.items() if k != "name"})
    if name == "densenet":
        from cnnbench.models.densenet import effective_compression

        resolved["compression"] = effective_compression(resolved["bottleneck"], resolved["compression"])
    return resolved


def paper_figure(
    name: str, depth: int, options: Mapping[str, object] | None = None, num_classes: int = 10
) -> PaperFigure | None:
    """The printed parameter count and its source for this configuration, or None if no paper prints one.

    ``options`` are the ``model.*`` config keys (``name`` is ignored, missing keys take the builder's
    defaults). Figures are for CIFAR-10, so any other ``num_classes`` gives None. An unknown ``name``
    raises CnnbenchError listing the models.
    """
    resolved = _resolved_options(name, options or {})
    if num_classes != 10:
        return None
    for conditions, table, source in _FIGURES.get(name, []):
        if depth in table and all(resolved.get(k) == v for k, v in conditions.items()):
            return PaperFigure(table[depth], source)
    return None


def paper_param_count(
    name: str, depth: int, options: Mapping[str, object] | None = None, num_classes: int = 10
) -> float | None:
    """The paper's parameter count in millions for this configuration, or None (see ``paper_figure``)."""
    figure = paper_figure(name, depth, options, num_classes)
    return None if figure is None else figure.millions
