"""VGG-11/13/16/19 (Simonyan & Zisserman 2015, configurations A, B, D, E) with BatchNorm, for CIFAR.

The convolutional part is the paper's: 3x3 convs (each followed by BN and ReLU) in five groups, each
group ending in a 2x2 max-pool, which takes 32x32 to 1x1. The three 4096-wide fully connected layers,
sized for 224x224 ImageNet inputs, are replaced by ONE linear layer 512 -> classes, the usual CIFAR
variant. Depth names the configuration; with one classifier layer the net has depth - 2 weight layers.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnbench.models.common import init_he
from cnnbench.models.registry import register_model

# Output channels of each 3x3 conv; "M" is a 2x2 max-pool (Table 1 of the paper).
# fmt: off
CONFIGS: dict[int, list[int | str]] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
         512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
# fmt: on


class VGG(nn.Module):
    def __init__(self, config: list[int | str], num_classes: int = 10) -> None:
        super().__init__()
        self.features = self._make_layers(config)
        self.fc = nn.Linear(512, num_classes)
        init_he(self)

    @staticmethod
    def _make_layers(config: list[int | str]) -> nn.Sequential:
        layers: list[nn.Module] = []
        in_planes = 3
        for v in config:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                assert isinstance(v, int)
                # No conv bias: the BN right after it has its own.
                layers += [
                    nn.Conv2d(in_planes, v, 3, padding=1, bias=False),
                    nn.BatchNorm2d(v),
                    nn.ReLU(inplace=True),
                ]
                in_planes = v
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


@register_model(
    "vgg",
    is_valid_depth=lambda depth: depth in CONFIGS,
    depth_rule="one of 11, 13, 16, 19 (VGG configurations A, B, D, E)",
    example_depths=tuple(CONFIGS),
    description="VGG-11/13/16/19 with BatchNorm (Simonyan & Zisserman 2015), CIFAR variant, one linear layer",
)
def vgg(depth: int, num_classes: int = 10) -> nn.Module:
    """VGG-11/13/16/19 with BatchNorm (Simonyan & Zisserman 2015), CIFAR variant with one linear layer."""
    return VGG(CONFIGS[depth], num_classes)
