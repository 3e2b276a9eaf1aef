"""Historical baselines for 32x32 RGB: LeNet-5 (LeCun et al. 1998) and AlexNet (Krizhevsky et al. 2012).

LeNet-5 keeps the layer sizes of the paper (conv 6@5x5, pool, conv 16@5x5, pool, 120, 84, classes) but
uses ReLU and max-pooling, full connections into C3 and a linear output instead of the RBF units, so its
count (62,006 with 10 classes and RGB input) is not the paper's "60,000" for its 1-channel net.

The AlexNet variant keeps 5 convs (64, 192, 384, 256, 256 filters, as in the one-tower torchvision
version) and 3 fully connected layers with dropout, shrunk for 32x32: 5x5 then 3x3 kernels at stride 1,
three 2x2 max-pools (32 -> 4) and 1024-wide hidden layers instead of 4096. No LRN, as in torchvision.
No paper prints counts for these CIFAR variants, so they have no paper figures.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnbench.models.common import check_fraction, init_he
from cnnbench.models.registry import register_model


class LeNet5(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        # fmt: off
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # 32 -> 28 -> 14
            nn.Conv2d(6, 16, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # 14 -> 10 -> 5
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * 5 * 5, 120), nn.ReLU(inplace=True),
            nn.Linear(120, 84), nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )
        # fmt: on
        init_he(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class AlexNet(nn.Module):
    def __init__(self, num_classes: int = 10, dropout: float = 0.5, hidden: int = 1024) -> None:
        super().__init__()
        # fmt: off
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # 32 -> 16
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # 16 -> 8
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # 8 -> 4
        )
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(256 * 4 * 4, hidden), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )
        # fmt: on
        init_he(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


@register_model(
    "lenet5",
    is_valid_depth=lambda depth: depth == 5,
    depth_rule="5 (LeNet-5; the only one)",
    example_depths=(5,),
    description="LeNet-5 (LeCun et al. 1998) for 32x32 RGB, ReLU and max-pooling",
)
def lenet5(depth: int, num_classes: int = 10) -> nn.Module:
    """LeNet-5 (LeCun et al. 1998) for 32x32 RGB, ReLU and max-pooling."""
    return LeNet5(num_classes)


@register_model(
    "alexnet",
    is_valid_depth=lambda depth: depth == 8,
    depth_rule="8 (AlexNet: 5 conv + 3 fully connected layers; the only one)",
    example_depths=(8,),
    description="AlexNet (Krizhevsky et al. 2012), CIFAR variant: 5 convs, 3 fully connected layers",
)
def alexnet(depth: int, num_classes: int = 10, dropout: float = 0.5) -> nn.Module:
    """AlexNet (Krizhevsky et al. 2012), CIFAR variant: 5 convs, 3 fully connected layers."""
    p = check_fraction("alexnet", "dropout", dropout, high_open=True, hint=" (AlexNet uses 0.5)")
    return AlexNet(num_classes, dropout=p)
