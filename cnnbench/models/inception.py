"""A CIFAR GoogLeNet (Szegedy et al. 2015) built from Inception modules with 1x1 reductions.

The nine Inception modules (3a-5b) have the paper's widths (Table 1). Each module runs four branches
in parallel and concatenates them: 1x1; 1x1 reduce -> 3x3; 1x1 reduce -> 5x5; 3x3 max-pool -> 1x1.
For 32x32 inputs the ImageNet stem (7x7/2 conv, max-pools, LRN) becomes three stride-1 convs with the
same widths (3x3 64, 1x1 64, 3x3 192), so the net keeps the paper's 22 weight layers: 3 stem + 9 x 2
Inception + 1 classifier, with 2x2 max-pools before 4a and 5a (32 -> 16 -> 8). Every conv is followed by
BN (as in Inception-v2 and the common CIFAR versions) and ReLU; the auxiliary classifiers are left out.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnbench.models.common import check_fraction, init_he
from cnnbench.models.registry import register_model


def conv_bn(in_planes: int, out_planes: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_planes),
        nn.ReLU(inplace=True),
    )


class Inception(nn.Module):
    def __init__(
        self, in_planes: int, n1x1: int, n3x3red: int, n3x3: int, n5x5red: int, n5x5: int, pool_proj: int
    ) -> None:
        super().__init__()
        self.branch1 = conv_bn(in_planes, n1x1, 1)
        # The 1x1 reductions keep the 3x3 and 5x5 convs cheap (the point of the module).
        self.branch2 = nn.Sequential(conv_bn(in_planes, n3x3red, 1), conv_bn(n3x3red, n3x3, 3))
        self.branch3 = nn.Sequential(conv_bn(in_planes, n5x5red, 1), conv_bn(n5x5red, n5x5, 5))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), conv_bn(in_planes, pool_proj, 1))
        self.out_planes = n1x1 + n3x3 + n5x5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


# (in, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj) for 3a-3b, 4a-4e, 5a-5b.
STAGES = (
    ((192, 64, 96, 128, 16, 32, 32), (256, 128, 128, 192, 32, 96, 64)),
    (
        (480, 192, 96, 208, 16, 48, 64),
        (512, 160, 112, 224, 24, 64, 64),
        (512, 128, 128, 256, 24, 64, 64),
        (512, 112, 144, 288, 32, 64, 64),
        (528, 256, 160, 320, 32, 128, 128),
    ),
    ((832, 256, 160, 320, 32, 128, 128), (832, 384, 192, 384, 48, 128, 128)),
)


class GoogLeNet(nn.Module):
    def __init__(self, num_classes: int = 10, dropout: float = 0.4) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 64, 3), conv_bn(64, 64, 1), conv_bn(64, 192, 3))
        self.inception3 = self._make_layer(STAGES[0])
        self.inception4 = self._make_layer(STAGES[1])
        self.inception5 = self._make_layer(STAGES[2])
        self.pool = nn.MaxPool2d(2)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(1024, num_classes)
        init_he(self)

    @staticmethod
    def _make_layer(modules: tuple[tuple[int, ...], ...]) -> nn.Sequential:
        return nn.Sequential(*(Inception(*widths) for widths in modules))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inception3(self.stem(x))
        x = self.inception4(self.pool(x))
        x = self.inception5(self.pool(x))
        x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(self.dropout(x))


@register_model(
    "inception",
    is_valid_depth=lambda depth: depth == 22,
    depth_rule="22 (GoogLeNet's depth; the only one)",
    example_depths=(22,),
    description="CIFAR GoogLeNet (Szegedy et al. 2015): Inception modules with 1x1 reductions",
)
def inception(depth: int, num_classes: int = 10, dropout: float = 0.4) -> nn.Module:
    """CIFAR GoogLeNet (Szegedy et al. 2015): Inception modules with 1x1 reductions."""
    p = check_fraction("inception", "dropout", dropout, high_open=True, hint=" (GoogLeNet uses 0.4)")
    return GoogLeNet(num_classes, dropout=p)
