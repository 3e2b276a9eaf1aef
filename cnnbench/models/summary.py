"""Parameters and FLOPs per model and depth, for `cnnbench models`."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode

from cnnbench.models.paper import paper_param_count
from cnnbench.models.registry import build_model, get_model_spec, list_models


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: torch.nn.Module, image_size: int = 32) -> int:
    """FLOPs of one forward pass of one image (torch.utils.flop_counter; a multiply-add counts 2).

    Works on a model on the meta device too (shapes only, no arithmetic).
    """
    model.eval()
    counter = FlopCounterMode(display=False)
    device = next(model.parameters()).device
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, image_size, image_size, device=device))
    return counter.get_total_flops()


def _human(n: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.2f}{suffix}"
    return f"{n:.0f}"


def model_table(
    depths: Iterable[int] | None = None,
    only: str | None = None,
    with_flops: bool = True,
    progress: Callable[[str], None] | None = None,
) -> tuple[Table, list[str]]:
    """One row per family and depth (each family's usual depths by default), and a line per family
    naming the depths asked for that it cannot build.

    Models are built with real weights on the CPU: on PyTorch's meta device (shapes only) the deep thin
    nets counted slower (the whole default table: 19 s vs 13 s on a 2-core Xeon with AMX), since their
    cost is per-module dispatch, not arithmetic. ``progress(label)`` is called before each model.
    """
    from cnnbench.errors import CnnbenchError

    depths = list(depths) if depths else None
    names = [get_model_spec(only).name] if only else list_models()
    table = Table(title="cnnbench models (default options, 10 classes, one 32x32 image)")
    for column in ("model", "depth", "params", "paper", "FLOPs"):
        table.add_column(column, justify="left" if column == "model" else "right")
    rules, skipped = [], []
    for name in names:
        spec = get_model_spec(name)
        rules.append(f"{name}: {spec.depth_rule}")
        invalid = []
        for depth in depths or spec.example_depths:
            if progress is not None:
                progress(f"{name}-{depth}")
            try:
                model = build_model(name, depth=depth, num_classes=10)
            except CnnbenchError:
                invalid.append(depth)  # not a depth of this family (or only with other options)
                continue
            paper = paper_param_count(name, depth)
            flops = _human(count_flops(model)) if with_flops else "-"
            table.add_row(
                name, str(depth), f"{count_params(model) / 1e6:.3f}M", f"{paper}M" if paper else "-", flops
            )
        if invalid and depths:
            skipped.append(f"{name} {', '.join(map(str, invalid))}")
    if not table.row_count:
        raise CnnbenchError(
            f"None of the depths {depths} fits {', '.join(names)}. Valid depths: {'; '.join(rules)}."
        )
    table.caption = "Valid depths:\n" + "\n".join(rules)
    table.caption_justify = "left"
    return table, skipped
