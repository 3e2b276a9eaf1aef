"""Pre-activation ResNets of He et al. 2016b ("Identity Mappings in Deep Residual Networks"), CIFAR.

Each unit is BN-ReLU-conv (twice for basic, three times for bottleneck); nothing follows the addition,
so the shortcut path is a clean identity. Where the shape changes the shortcut is a 1x1 projection
taking the pre-activated input, as in the paper. A final BN-ReLU precedes global average pooling.
The blocks also serve the wide ResNets (``wide_resnet.py``), which add dropout between the convs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnbench.models.common import ResidualBlock, check_stochastic_depth, init_he, set_stochastic_depth
from cnnbench.models.registry import register_model
from cnnbench.models.resnet import blocks_per_stage, depth_rule_of_block, is_resnet_depth


def _projection(in_planes: int, out_planes: int, stride: int) -> nn.Conv2d | None:
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class PreActBasicBlock(ResidualBlock):
    """BN-ReLU-3x3 conv, BN-ReLU-(dropout)-3x3 conv, plus the shortcut."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.shortcut = _projection(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        # A projection takes the pre-activated input (the two paths share the first BN-ReLU).
        shortcut = x if self.shortcut is None else self.shortcut(out)
        if self.drop_branch():
            return shortcut
        out = self.conv1(out)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return self.scale_branch(out) + shortcut


class PreActBottleneck(ResidualBlock):
    """BN-ReLU-1x1 conv (reduce), BN-ReLU-3x3 conv, BN-ReLU-1x1 conv (expand x4), plus the shortcut."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.shortcut = _projection(in_planes, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        if self.drop_branch():
            return shortcut
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(self.dropout(F.relu(self.bn3(out))))
        return self.scale_branch(out) + shortcut


class PreActResNet(nn.Module):
    """Stem conv, three stages of ``blocks`` pre-activation blocks, BN-ReLU, average pooling, linear."""

    def __init__(
        self,
        block: type[PreActBasicBlock | PreActBottleneck],
        blocks: int,
        num_classes: int = 10,
        widths: tuple[int, int, int] = (16, 32, 64),
        stem_width: int = 16,
        dropout: float = 0.0,
        stochastic_depth: float = 1.0,
    ) -> None:
        super().__init__()
        self.in_planes = stem_width
        self.conv1 = nn.Conv2d(3, stem_width, 3, padding=1, bias=False)
        self.layer1 = self._make_layer(block, widths[0], blocks, 1, dropout)
        self.layer2 = self._make_layer(block, widths[1], blocks, 2, dropout)
        self.layer3 = self._make_layer(block, widths[2], blocks, 2, dropout)
        self.bn = nn.BatchNorm2d(self.in_planes)  # the last unit's output is not yet activated
        self.fc = nn.Linear(self.in_planes, num_classes)
        init_he(self)
        set_stochastic_depth(self, stochastic_depth)

    def _make_layer(
        self,
        block: type[PreActBasicBlock | PreActBottleneck],
        planes: int,
        blocks: int,
        stride: int,
        dropout: float,
    ) -> nn.Sequential:
        layers = []
        for block_stride in [stride] + [1] * (blocks - 1):
            layers.append(block(self.in_planes, planes, block_stride, dropout))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.relu(self.bn(x))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


_BLOCK_TYPES: dict[str, type[PreActBasicBlock | PreActBottleneck]] = {
    "basic": PreActBasicBlock,
    "bottleneck": PreActBottleneck,
}


@register_model(
    "preact_resnet",
    is_valid_depth=is_resnet_depth,
    depth_rule="9n+2 with block=bottleneck (the default) or 6n+2 with block=basic (n >= 1 blocks per stage)",
    example_depths=(56, 110, 164, 1001),
    description="Pre-activation ResNet (He et al. 2016b), bottleneck or basic blocks",
    depth_rule_for=depth_rule_of_block("bottleneck"),
)
def preact_resnet(
    depth: int, num_classes: int = 10, block: str = "bottleneck", stochastic_depth: float = 1.0
) -> nn.Module:
    """Pre-activation ResNet (He et al. 2016b), bottleneck (9n+2) or basic (6n+2) blocks."""
    n = blocks_per_stage("preact_resnet", depth, block)
    p_last = check_stochastic_depth("preact_resnet", stochastic_depth)
    return PreActResNet(_BLOCK_TYPES[block], n, num_classes, stochastic_depth=p_last)
