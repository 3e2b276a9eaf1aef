"""Gradient flow while training: L2 norms of the gradients and weights per stage and per block.

Any model is grouped the same generic way, from its module tree:

- **stages**: the model's top-level children that hold parameters, in network order. Leaf layers before
  the first container (``conv1``, ``bn1``) form ``stem``; leaf layers after the last one (``bn``,
  ``fc``) form ``classifier``. So a CIFAR ResNet gives stem, layer1, layer2, layer3, classifier; VGG
  gives features, classifier.
- **blocks**: the children of each stage container that hold parameters (``layer1.0``: a residual
  block; ``features.3``: one layer of a VGG), and the stem and classifier as they are.

TensorBoard tags: ``grad_norm/stage/<name>``, ``grad_norm/block/<name>``, the same under
``weight_norm/``, and ``grad_norm/ratio_first_last``: the gradient norm of the first block (the stem)
over that of the last (the classifier), the vanishing-gradient view in one number.

The norms are computed on the device right after an optimizer step (the gradients are still there: the
next step clears them), kept as one device tensor, and read only when the loop logs. Nothing here
writes to a parameter or a gradient, so a run's result is the same with and without it.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

STEM, CLASSIFIER = "stem", "classifier"


def _holds_params(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def stage_groups(model: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    """``[(stage name, [modules])]`` in network order (see the module docstring)."""
    children = [(name, child) for name, child in model.named_children() if _holds_params(child)]
    containers = [i for i, (_, child) in enumerate(children) if any(True for _ in child.children())]
    if not containers:  # a flat model: each layer is a stage
        return [(name, [child]) for name, child in children]
    first, last = containers[0], containers[-1]
    groups: list[tuple[str, list[nn.Module]]] = []
    if first > 0:
        groups.append((STEM, [child for _, child in children[:first]]))
    groups.extend((name, [child]) for name, child in children[first : last + 1])
    if last < len(children) - 1:
        groups.append((CLASSIFIER, [child for _, child in children[last + 1 :]]))
    return groups


def block_groups(model: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    """``[(block name, [modules])]`` in network order: each stage's children that hold parameters."""
    blocks: list[tuple[str, list[nn.Module]]] = []
    for stage, modules in stage_groups(model):
        inner = (
            [(n, c) for n, c in modules[0].named_children() if _holds_params(c)] if len(modules) == 1 else []
        )
        if stage in (STEM, CLASSIFIER) or not inner:
            blocks.append((stage, modules))
        else:
            blocks.extend((f"{stage}.{name}", [child]) for name, child in inner)
    return blocks


class GradFlow:
    """Per-group gradient and weight norms of ``model``, measured on the device, read when logged."""

    def __init__(self, model: nn.Module, every: int) -> None:
        self.every = int(every)
        self.params = [p for p in model.parameters() if p.requires_grad]
        index = {id(p): i for i, p in enumerate(self.params)}
        self.tags: list[str] = []
        members: list[list[int]] = []
        for level, groups in (("stage", stage_groups(model)), ("block", block_groups(model))):
            for name, modules in groups:
                ids = sorted({index[id(p)] for m in modules for p in m.parameters() if id(p) in index})
                if ids:
                    self.tags.append(f"{level}/{name}")
                    members.append(ids)
        self.first_block = next(i for i, tag in enumerate(self.tags) if tag.startswith("block/"))
        self.last_block = len(self.tags) - 1
        device = self.params[0].device if self.params else torch.device("cpu")
        # membership[g, p] = 1 when parameter p belongs to group g: group sums of squares in one matmul.
        self.membership = torch.zeros(len(self.tags), len(self.params), device=device)
        for g, ids in enumerate(members):
            self.membership[g, ids] = 1.0
        self.pending: list[tuple[int, torch.Tensor]] = []

    def due(self, iteration: int) -> bool:
        """Whether to measure after ``iteration`` steps (never with ``every`` <= 0)."""
        return self.every > 0 and iteration % self.every == 0

    @torch.no_grad()
    def measure(self) -> torch.Tensor:
        """``[grad norms per group, weight norms per group]`` as one fp32 device tensor (no sync)."""
        zero = torch.zeros((), device=self.membership.device)
        grads = [zero if p.grad is None else torch.linalg.vector_norm(p.grad.float()) for p in self.params]
        weights = [torch.linalg.vector_norm(p.detach().float()) for p in self.params]
        squares = torch.stack([torch.stack(grads), torch.stack(weights)]) ** 2  # (2, params)
        return (squares @ self.membership.T).sqrt()  # (2, groups)

    def record(self, iteration: int) -> None:
        self.pending.append((iteration, self.measure()))

    def flush(self) -> Iterable[tuple[int, dict[str, float]]]:
        """The recorded measurements as ``(iteration, {tag: value})``, read from the device now."""
        pending, self.pending = self.pending, []
        for iteration, norms in pending:
            grad, weight = norms.tolist()
            scalars = {f"grad_norm/{tag}": value for tag, value in zip(self.tags, grad, strict=True)}
            scalars.update(
                {f"weight_norm/{tag}": value for tag, value in zip(self.tags, weight, strict=True)}
            )
            last = grad[self.last_block]
            scalars["grad_norm/ratio_first_last"] = (
                grad[self.first_block] / last if last > 0 else float("nan")
            )
            yield iteration, scalars
