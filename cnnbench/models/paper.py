"""Parameter counts the papers print (CIFAR-10, millions), looked up for any model configuration.

The figures and the rule that matches a configuration to them are in ``cnnbench/core/reference.yaml``, read
by ``cnnbench.core.reference`` (the same entries ``cnnbench report`` takes its test errors from). This module
fills in what a configuration leaves out the way ``build_model`` would build the net: the builder's
defaults, and densenet's ``compression: null`` (0.5 with bottleneck, 1.0 without). Options that do not
change the count at the printed precision (e.g. shortcut A or B: ResNet-20 has 272,474 parameters with
option B against 269,722 with option A, both 0.27M) are listed per family in the file. Configurations no
paper reports return None; so do the CIFAR variants of VGG, GoogLeNet, AlexNet and LeNet-5, whose papers
count ImageNet (or 1-channel 32x32) nets.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import NamedTuple

from cnnbench.core.reference import citation, entries, match
from cnnbench.models.densenet import effective_compression
from cnnbench.models.registry import get_model_spec

# Model-section keys of the config that are not builder options.
_NOT_OPTIONS = {"name", "default_depth"}


class PaperFigure(NamedTuple):
    millions: float
    source: str


def resolved_options(name: str, options: Mapping[str, object] | None = None) -> dict[str, object]:
    """The builder's defaults overlaid with ``options`` (``model.*`` config keys), as the model is built.

    An unknown ``name`` raises CnnbenchError listing the models.
    """
    params = inspect.signature(get_model_spec(name).builder).parameters
    resolved: dict[str, object] = {
        k: p.default
        for k, p in params.items()
        if p.default is not inspect.Parameter.empty and k not in ("depth", "num_classes")
    }
    resolved.update({k: v for k, v in (options or {}).items() if k not in _NOT_OPTIONS})
    if name == "densenet":
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
    resolved = resolved_options(name, options)
    if num_classes != 10:
        return None
    found = match(name, depth, resolved, params=True)
    if not found:
        return None
    return PaperFigure(float(found[0]["params_m"]), citation(found[0]["source"]))


def paper_param_count(
    name: str, depth: int, options: Mapping[str, object] | None = None, num_classes: int = 10
) -> float | None:
    """The paper's parameter count in millions for this configuration, or None (see ``paper_figure``)."""
    figure = paper_figure(name, depth, options, num_classes)
    return None if figure is None else figure.millions


def paper_params(name: str) -> dict[int, float]:
    """``{depth: millions}`` the papers print for the family's default options (``cnnbench models``)."""
    depths = sorted({e["depth"] for e in entries() if e["model"] == name and e.get("depth") is not None})
    figures = {depth: paper_param_count(name, depth) for depth in depths}
    return {depth: millions for depth, millions in figures.items() if millions is not None}
