"""DenseNets of Huang et al. 2017 for CIFAR: three dense blocks joined by transition layers.

A dense layer is BN-ReLU-3x3 conv producing ``growth_rate`` (k) maps, concatenated to its input; with
``bottleneck`` (the "B" in DenseNet-BC) a BN-ReLU-1x1 conv to 4k maps comes first. A transition is
BN-ReLU-1x1 conv to floor(theta * m) maps and 2x2 average pooling, theta being ``compression`` (the
"C"). The stem is a 3x3 conv with 16 maps, or 2k with bottleneck; the head BN-ReLU, pooling, linear.

Depth L counts the stem, the layers' convs, the two transitions and the classifier:
L = 3n + 4 without bottleneck and L = 6n + 4 with it, for n layers per block.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cnnbench.models.common import (
    check_bool,
    check_depth_for_option,
    check_fraction,
    check_int,
    init_he,
)
from cnnbench.models.registry import register_model


class DenseLayer(nn.Module):
    def __init__(self, in_planes: int, growth_rate: int, bottleneck: bool) -> None:
        super().__init__()
        if bottleneck:
            inner = 4 * growth_rate
            self.bottleneck: nn.Module = nn.Sequential(
                nn.BatchNorm2d(in_planes), nn.ReLU(inplace=True), nn.Conv2d(in_planes, inner, 1, bias=False)
            )
        else:
            inner = in_planes
            self.bottleneck = nn.Identity()
        self.bn = nn.BatchNorm2d(inner)
        self.conv = nn.Conv2d(inner, growth_rate, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = self.conv(F.relu(self.bn(self.bottleneck(x))))
        return torch.cat([x, new], 1)


class Transition(nn.Sequential):
    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__(
            nn.BatchNorm2d(in_planes),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_planes, out_planes, 1, bias=False),
            nn.AvgPool2d(2),
        )


class DenseNet(nn.Module):
    def __init__(
        self,
        layers_per_block: int,
        growth_rate: int,
        bottleneck: bool,
        compression: float,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        planes = 2 * growth_rate if bottleneck else 16
        self.conv1 = nn.Conv2d(3, planes, 3, padding=1, bias=False)
        stages: list[nn.Module] = []
        for i in range(3):
            stages.append(self._make_block(planes, layers_per_block, growth_rate, bottleneck))
            planes += layers_per_block * growth_rate
            if i < 2:
                out_planes = math.floor(compression * planes)
                stages.append(Transition(planes, out_planes))
                planes = out_planes
        self.features = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(planes)
        self.fc = nn.Linear(planes, num_classes)
        init_he(self)

    @staticmethod
    def _make_block(in_planes: int, layers: int, growth_rate: int, bottleneck: bool) -> nn.Sequential:
        return nn.Sequential(
            *(DenseLayer(in_planes + i * growth_rate, growth_rate, bottleneck) for i in range(layers))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.conv1(x))
        x = F.relu(self.bn(x))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


def effective_compression(bottleneck: object, compression: object) -> object:
    """``compression: null`` means the paper's pairing: 0.5 with bottleneck (DenseNet-BC), else 1.0."""
    if compression is None:
        return 0.5 if bottleneck else 1.0
    return compression


def _is_3n_plus_4(depth: int) -> bool:
    return depth >= 7 and (depth - 4) % 3 == 0


def _is_6n_plus_4(depth: int) -> bool:
    return depth >= 10 and (depth - 4) % 6 == 0


@register_model(
    "densenet",
    is_valid_depth=_is_3n_plus_4,
    depth_rule="6n+4 with bottleneck=true (the default) or 3n+4 with bottleneck=false (n layers per block)",
    example_depths=(40, 100, 190, 250),
    description="DenseNet / DenseNet-BC (Huang et al. 2017), growth rate k, bottleneck, compression",
)
def densenet(
    depth: int,
    num_classes: int = 10,
    growth_rate: int = 12,
    bottleneck: bool = True,
    compression: float | None = None,
) -> nn.Module:
    """DenseNet / DenseNet-BC (Huang et al. 2017), growth rate k, bottleneck, compression."""
    k = check_int("densenet", "growth_rate", growth_rate, 1, hint=" (the paper uses 12, 24 or 40)")
    bottleneck = check_bool("densenet", "bottleneck", bottleneck)
    theta = check_fraction(
        "densenet",
        "compression",
        effective_compression(bottleneck, compression),
        low_open=True,
        hint=" (theta; 0.5 for DenseNet-BC, 1.0 for DenseNet; null picks by bottleneck)",
    )
    if bottleneck:
        rule = (_is_6n_plus_4, "6n+4 with bottleneck=true (n layers per dense block)", (40, 100, 190, 250))
    else:
        rule = (_is_3n_plus_4, "3n+4 with bottleneck=false (n layers per dense block)", (40, 100))
    check_depth_for_option("densenet", depth, *rule)
    layers = (depth - 4) // (6 if bottleneck else 3)
    return DenseNet(layers, k, bottleneck, theta, num_classes)
