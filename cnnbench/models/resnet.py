"""CIFAR plain nets and ResNets of He et al. 2016 (Section 4.2), from one builder.

Depth 6n+2 (basic blocks): a 3x3 conv with 16 filters, three stages of n basic blocks with 16, 32 and
64 filters (the first block of stages 2 and 3 halves the feature map with stride 2), global average
pooling and one linear layer. ``residual=False`` removes the shortcuts and nothing else, so a plain net
has exactly the layers and parameters of its option-A ResNet.

``block="bottleneck"`` (depth 9n+2) uses 1x1-3x3-1x1 blocks with expansion 4 instead, as in the
ResNet-164/1001 of He et al. 2016b ("Identity Mappings", original units): stage widths 16/32/64 inside
the blocks, 64/128/256 at their outputs. ``stochastic_depth`` (residual nets only) is Huang et al. 2016.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnbench.errors import CnnbenchError
from cnnbench.models.common import (
    ResidualBlock,
    check_choice,
    check_depth_for_option,
    check_stochastic_depth,
    init_he,
    set_stochastic_depth,
)
from cnnbench.models.registry import register_model

__all__ = ["BasicBlock", "Bottleneck", "CifarResNet", "ZeroPadShortcut", "init_he", "make_shortcut"]

SHORTCUTS = ("A", "B")
BLOCKS = ("basic", "bottleneck")


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
    raise CnnbenchError(
        f"model.shortcut={kind!r} is not a shortcut option; use one of {', '.join(SHORTCUTS)}."
    )


class BasicBlock(ResidualBlock):
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
        if self.shortcut is not None and self.drop_branch():
            return F.relu(self.shortcut(x))  # Huang et al.: H_l = ReLU(id(H_{l-1})) when the block is dropped
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            out = self.scale_branch(out) + self.shortcut(x)
        return F.relu(out)


class Bottleneck(ResidualBlock):
    """1x1 (reduce) - 3x3 - 1x1 (expand x4) convs with BN; the shortcut is added before the last ReLU."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int, residual: bool, shortcut: str) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        # Stride on the 3x3 (as in fb.resnet.torch, which He et al. 2016b build on): a strided 1x1 would
        # discard three quarters of its input.
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = make_shortcut(shortcut, in_planes, out_planes, stride) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shortcut is not None and self.drop_branch():
            return F.relu(self.shortcut(x))
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.shortcut is not None:
            out = self.scale_branch(out) + self.shortcut(x)
        return F.relu(out)


_BLOCK_TYPES: dict[str, type[BasicBlock | Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


def _is_6n_plus_2(depth: int) -> bool:
    return depth >= 8 and (depth - 2) % 6 == 0


def _is_9n_plus_2(depth: int) -> bool:
    return depth >= 11 and (depth - 2) % 9 == 0


# Depth rules per block type, shared with the pre-activation ResNets: (is_valid, rule, usual depths).
DEPTH_RULES = {
    "basic": (_is_6n_plus_2, "6n+2 for block=basic (n >= 1 basic blocks per stage)", (20, 56, 110)),
    "bottleneck": (
        _is_9n_plus_2,
        "9n+2 for block=bottleneck (n >= 1 bottleneck blocks per stage)",
        (56, 164, 1001),
    ),
}


def is_resnet_depth(depth: int) -> bool:
    """Valid for some block type; the builder then checks the chosen one."""
    return _is_6n_plus_2(depth) or _is_9n_plus_2(depth)


RESNET_DEPTH_RULE = "6n+2 with block=basic or 9n+2 with block=bottleneck (n >= 1 blocks per stage)"


def depth_rule_of_block(default_block: str):
    """The registry's ``depth_rule_for``: the chosen block's rule (None for an unknown block: the builder
    names the valid blocks)."""

    def rule(options):
        return DEPTH_RULES.get(str(options.get("block") or default_block))

    return rule


def blocks_per_stage(model: str, depth: int, block: str) -> int:
    """Check ``block`` and that ``depth`` fits it (CnnbenchError listing valid depths otherwise)."""
    check_choice(model, "block", block, BLOCKS)
    is_valid, rule, examples = DEPTH_RULES[block]
    check_depth_for_option(model, depth, is_valid, rule, examples)
    return (depth - 2) // (6 if block == "basic" else 9)


class CifarResNet(nn.Module):
    def __init__(
        self,
        depth: int,
        num_classes: int = 10,
        residual: bool = True,
        shortcut: str = "A",
        widths: tuple[int, int, int] = (16, 32, 64),
        block: str = "basic",
        stochastic_depth: float = 1.0,
    ) -> None:
        super().__init__()
        model = "resnet" if residual else "plain"
        n = blocks_per_stage(model, depth, block)
        if shortcut not in SHORTCUTS:
            raise CnnbenchError(
                f"model.shortcut={shortcut!r} is not a shortcut option; use one of {', '.join(SHORTCUTS)}."
            )
        p_last = check_stochastic_depth(model, stochastic_depth)
        if not residual and p_last != 1.0:
            raise CnnbenchError(
                f"model.stochastic_depth={stochastic_depth} needs residual blocks, and a plain net has none "
                "to drop. Use model=resnet (or preact_resnet / wide_resnet) for stochastic depth, or set "
                "model.stochastic_depth=1.0."
            )
        block_type = _BLOCK_TYPES[block]
        self.residual = residual
        self.in_planes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.layer1 = self._make_layer(block_type, widths[0], n, 1, residual, shortcut)
        self.layer2 = self._make_layer(block_type, widths[1], n, 2, residual, shortcut)
        self.layer3 = self._make_layer(block_type, widths[2], n, 2, residual, shortcut)
        self.fc = nn.Linear(widths[2] * block_type.expansion, num_classes)
        init_he(self)
        if residual:
            set_stochastic_depth(self, p_last)

    def _make_layer(
        self,
        block: type[BasicBlock | Bottleneck],
        planes: int,
        blocks: int,
        stride: int,
        residual: bool,
        shortcut: str,
    ) -> nn.Sequential:
        layers = []
        for block_stride in [stride] + [1] * (blocks - 1):
            layers.append(block(self.in_planes, planes, block_stride, residual, shortcut))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


_EXAMPLE_DEPTHS = (20, 32, 44, 56, 110, 1202)


@register_model(
    "resnet",
    is_valid_depth=is_resnet_depth,
    depth_rule=RESNET_DEPTH_RULE,
    example_depths=_EXAMPLE_DEPTHS,
    description="CIFAR ResNet (He et al. 2016), basic or bottleneck blocks, shortcut option A or B",
    depth_rule_for=depth_rule_of_block("basic"),
)
def resnet(
    depth: int,
    num_classes: int = 10,
    shortcut: str = "A",
    block: str = "basic",
    stochastic_depth: float = 1.0,
) -> nn.Module:
    """CIFAR ResNet (He et al. 2016), basic or bottleneck blocks, shortcut option A or B."""
    return CifarResNet(
        depth, num_classes, residual=True, shortcut=shortcut, block=block, stochastic_depth=stochastic_depth
    )


@register_model(
    "plain",
    is_valid_depth=is_resnet_depth,
    depth_rule=RESNET_DEPTH_RULE,
    example_depths=_EXAMPLE_DEPTHS,
    description="The ResNet without shortcuts (He et al. 2016, Fig. 6 left)",
    depth_rule_for=depth_rule_of_block("basic"),
)
def plain(
    depth: int,
    num_classes: int = 10,
    shortcut: str = "A",
    block: str = "basic",
    stochastic_depth: float = 1.0,
) -> nn.Module:
    """The ResNet without shortcuts (He et al. 2016, Fig. 6 left); ``shortcut`` is accepted and unused.

    ``stochastic_depth`` is accepted so one sweep can set it for plain and resnet; only 1.0 is valid.
    """
    return CifarResNet(
        depth, num_classes, residual=False, shortcut=shortcut, block=block, stochastic_depth=stochastic_depth
    )
