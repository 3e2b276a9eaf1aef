"""Wide ResNets WRN-d-k of Zagoruyko & Komodakis 2016, CIFAR.

Depth 6n+4: a 3x3 conv with 16 filters, three stages of n pre-activation basic blocks with 16k, 32k and
64k filters, BN-ReLU, average pooling, linear. ``dropout`` sits between the two convs of each block
(the paper uses 0.3 on CIFAR); 1x1 projections where the shape changes, including the first block
whenever k > 1.

The papers' counts per (depth, width) are in ``cnnbench/core/reference.yaml``;
``cnnbench.models.paper.paper_param_count`` answers for any width.
"""

from __future__ import annotations

from torch import nn

from cnnbench.models.common import (
    check_fraction,
    check_int,
    check_stochastic_depth,
)
from cnnbench.models.preact_resnet import PreActBasicBlock, PreActResNet
from cnnbench.models.registry import register_model


def _is_6n_plus_4(depth: int) -> bool:
    return depth >= 10 and (depth - 4) % 6 == 0


@register_model(
    "wide_resnet",
    is_valid_depth=_is_6n_plus_4,
    depth_rule="6n+4 (n >= 1 blocks per stage)",
    example_depths=(16, 22, 28, 40),
    description="Wide ResNet WRN-d-k (Zagoruyko & Komodakis 2016), width k, dropout between convs",
)
def wide_resnet(
    depth: int, num_classes: int = 10, width: int = 10, dropout: float = 0.3, stochastic_depth: float = 1.0
) -> nn.Module:
    """Wide ResNet WRN-d-k (Zagoruyko & Komodakis 2016), width k, dropout between convs."""
    k = check_int("wide_resnet", "width", width, 1, hint=" (the widening factor k; the paper uses 1 to 12)")
    p_drop = check_fraction("wide_resnet", "dropout", dropout, high_open=True, hint=" (the paper uses 0.3)")
    p_last = check_stochastic_depth("wide_resnet", stochastic_depth)
    return PreActResNet(
        PreActBasicBlock,
        (depth - 4) // 6,
        num_classes,
        widths=(16 * k, 32 * k, 64 * k),
        stem_width=16,
        dropout=p_drop,
        stochastic_depth=p_last,
    )
