"""CIFAR plain nets and ResNets of He et al. 2016 (Section 4.2), from one builder.

Depth 6n+2: a 3x3 conv with 16 filters, three stages of n basic blocks with 16, 32 and 64 filters
(the first block of stages 2 and 3 halves the feature map with stride 2), global average pooling and
one linear layer. ``residual=False`` removes the shortcuts and nothing else, so a plain net has
exactly the layers and parameters of its option-A ResNet.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnbench.errors import CnnbenchError
from cnnbench.models.registry import register_model

SHORTCUTS = ("A", "B")


class ZeroPadShortcut(nn.Module):
    """Option A: identity, subsampled by ``stride`` and zero-padded to ``out_planes``; no parameters."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra = out_planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra:
            half = self.extra // 2
            x = F.pad(x, (0, 0, 0, 0, half, self.extra - half))
        return x


def make_shortcut(kind: str, in_planes: int, out_planes: int, stride: int) -> nn.Module:
    """Identity where shapes match; option A (zero-pad) or B (1x1 projection + BN) where they change."""
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    if kind == "A":
        return ZeroPadShortcut(in_planes, out_planes, stride)
    if kind == "B":
        return nn.Sequential(
            nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes)
        )
    raise CnnbenchError(f"model.shortcut={kind!r} is not a shortcut option; use one of {', '.join(SHORTCUTS)}.")


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN; adds the shortcut before the last ReLU when ``residual``."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int, residual: bool, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = make_shortcut(shortcut, in_planes, planes, stride) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out)


class CifarResNet(nn.Module):
    def __init__(
        self,
        depth: int,
        num_classes: int = 10,
        residual: bool = True,
        shortcut: str = "A",
        widths: tuple[int, int, int] = (16, 32, 64),
    ) -> None:
        super().__init__()
        if (depth - 2) % 6 or depth < 8:
            raise CnnbenchError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {depth}.")
        if shortcut not in SHORTCUTS:
            raise CnnbenchError(
                f"model.shortcut={shortcut!r} is not a shortcut option; use one of {', '.join(SHORTCUTS)}."
            )
        blocks_per_stage = (depth - 2) // 6
        self.residual = residual
        self.in_planes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.layer1 = self._make_layer(widths[0], blocks_per_stage, 1, residual, shortcut)
        self.layer2 = self._make_layer(widths[1], blocks_per_stage, 2, residual, shortcut)
        self.layer3 = self._make_layer(widths[2], blocks_per_stage, 2, residual, shortcut)
        self.fc = nn.Linear(widths[2], num_classes)
        init_he(self)

    def _make_layer(self, planes: int, blocks: int, stride: int, residual: bool, shortcut: str) -> nn.Sequential:
        layers = []
        for block_stride in [stride] + [1] * (blocks - 1):
            layers.append(BasicBlock(self.in_planes, planes, block_stride, residual, shortcut))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


def init_he(model: nn.Module) -> None:
    """He et al. 2015 initialization for convs; BN starts as identity (weight 1, bias 0)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _is_6n_plus_2(depth: int) -> bool:
    return depth >= 8 and (depth - 2) % 6 == 0


# Table 6 of He et al. 2016 (CIFAR-10), in millions.
_PAPER_PARAMS = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7, 1202: 19.4}
_EXAMPLE_DEPTHS = (20, 32, 44, 56, 110, 1202)


@register_model(
    "resnet",
    is_valid_depth=_is_6n_plus_2,
    depth_rule="6n+2 (n >= 1 basic blocks per stage)",
    example_depths=_EXAMPLE_DEPTHS,
    paper_params=_PAPER_PARAMS,
    description="CIFAR ResNet (He et al. 2016), basic blocks, shortcut option A or B",
)
def resnet(depth: int, num_classes: int = 10, shortcut: str = "A") -> nn.Module:
    """CIFAR ResNet (He et al. 2016), basic blocks, shortcut option A or B."""
    return CifarResNet(depth, num_classes, residual=True, shortcut=shortcut)


@register_model(
    "plain",
    is_valid_depth=_is_6n_plus_2,
    depth_rule="6n+2 (n >= 1 basic blocks per stage)",
    example_depths=_EXAMPLE_DEPTHS,
    description="The ResNet without shortcuts (He et al. 2016, Fig. 6 left)",
)
def plain(depth: int, num_classes: int = 10, shortcut: str = "A") -> nn.Module:
    """The ResNet without shortcuts (He et al. 2016, Fig. 6 left); ``shortcut`` is accepted and unused."""
    return CifarResNet(depth, num_classes, residual=False, shortcut=shortcut)
