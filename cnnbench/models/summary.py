"""Parameters and FLOPs per model and depth, for `cnnbench models`."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode

from cnnbench.models.registry import build_model, get_model_spec, list_models


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: torch.nn.Module, image_size: int = 32) -> int:
    """FLOPs of one forward pass of a single image (torch.utils.flop_counter; a multiply-add = 2 FLOPs)."""
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, image_size, image_size))
    return counter.get_total_flops()


def _human(n: float, unit: str = "") -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def model_table(
    depths: Iterable[int] | None = None, only: str | None = None, with_flops: bool = True
) -> Table:
    """One row per family and depth; depths a family cannot take are skipped (all of them: an error)."""
    from cnnbench.errors import CnnbenchError

    names = [get_model_spec(only).name] if only else list_models()
    table = Table(title="cnnbench models (10 classes, 32x32 input)")
    for column in ("model", "depth", "params", "paper", "FLOPs", "valid depths"):
        table.add_column(
            column, justify="right" if column in ("depth", "params", "paper", "FLOPs") else "left"
        )
    rows = 0
    for name in names:
        spec = get_model_spec(name)
        family_depths = list(depths) if depths else list(spec.example_depths)
        for depth in family_depths:
            if not spec.is_valid_depth(depth):
                continue
            model = build_model(name, depth=depth, num_classes=10)
            params = count_params(model)
            paper = spec.paper_params.get(depth)
            flops = _human(count_flops(model)) if with_flops else "-"
            table.add_row(
                name,
                str(depth),
                f"{params / 1e6:.3f}M",
                f"{paper}M" if paper else "-",
                flops,
                spec.depth_rule,
            )
            rows += 1
    if rows == 0:
        raise CnnbenchError(
            f"None of the depths {list(depths or [])} is valid for {', '.join(names)}. "
            + " ".join(f"{n}: {get_model_spec(n).depth_rule}." for n in names)
        )
    return table
