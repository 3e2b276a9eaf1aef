"""The loss landscape's grid computation: filter-normalized directions, the training subset, and the
loss and error at each grid point (the method: ``cnnbench.diagnostics.landscape``'s module docstring)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.linalg import vector_norm

from cnnbench.diagnostics.landscape_plan import Plan, Settings
from cnnbench.diagnostics.runs import Compared


def filter_normalized_direction(model: nn.Module, generator: torch.Generator) -> list[torch.Tensor]:
    """One random direction, a tensor per parameter of ``model``, filter-normalized (module docstring)."""
    direction = []
    for p in model.parameters():
        w = p.detach()
        if w.dim() <= 1:
            direction.append(torch.zeros_like(w))
            continue
        d = torch.randn(w.shape, generator=generator, dtype=torch.float32).to(w.device, w.dtype)
        dims = tuple(range(1, w.dim()))
        d = d * (vector_norm(w, dim=dims, keepdim=True) / (vector_norm(d, dim=dims, keepdim=True) + 1e-10))
        direction.append(d)
    return direction


def directions(model: nn.Module, dims: int, seed: int) -> list[list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [filter_normalized_direction(model, generator) for _ in range(dims)]


def training_subset(run, images: torch.Tensor, labels: torch.Tensor, samples: int, seed: int):
    """``samples`` of the training images drawn with ``seed`` (sorted), normalized, channels-last; labels."""
    index = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:samples].sort().values
    index = index.to(labels.device)
    x = run.normalize(images[index]).contiguous(memory_format=torch.channels_last)
    return x, labels[index]


class PointEvaluator:
    """Loss and error of ``model`` at ``w + a*d1 (+ b*d2)`` on fixed inputs; ``restore`` puts ``w`` back."""

    def __init__(
        self,
        model: nn.Module,
        dirs: Sequence[Sequence[torch.Tensor]],
        inputs: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        precision: str = "fp32",
    ) -> None:
        self.model = model.eval()
        self.params = list(model.parameters())
        self.base = [p.detach().clone() for p in self.params]
        self.dirs = dirs
        self.inputs, self.labels = inputs, labels
        self.batch_size = batch_size
        self.precision = precision

    def _autocast(self):
        import contextlib

        if self.precision == "bf16":
            return torch.autocast(self.inputs.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.no_grad()
    def set_point(self, coords: Sequence[float]) -> None:
        for k, (p, w) in enumerate(zip(self.params, self.base, strict=True)):
            p.copy_(w)
            for d, c in zip(self.dirs, coords, strict=False):
                if c != 0.0:
                    p.add_(d[k], alpha=c)

    @torch.no_grad()
    def __call__(self, coords: Sequence[float], limit: int | None = None) -> tuple[float, float]:
        """Mean loss and error at ``coords`` (over the first ``limit`` samples when given)."""
        self.set_point(coords)
        inputs, labels = self.inputs[:limit], self.labels[:limit]
        loss = torch.zeros((), dtype=torch.float64, device=inputs.device)
        errors = torch.zeros((), dtype=torch.long, device=inputs.device)
        for xb, yb in zip(inputs.split(self.batch_size), labels.split(self.batch_size), strict=True):
            with self._autocast():
                logits = self.model(xb)
            loss += F.cross_entropy(logits.float(), yb, reduction="sum").double()
            errors += (logits.argmax(1) != yb).sum()
        return loss.item() / len(labels), errors.item() / len(labels)

    def restore(self) -> None:
        self.set_point(())


def point_evaluator(c: Compared, data, s: Settings) -> PointEvaluator:
    x, y = training_subset(c.run, data.train_images, data.train_labels, s.samples, s.seed)
    model = c.run.model.to(memory_format=torch.channels_last)
    dirs = directions(model, s.dims, s.seed)
    batch = int(c.run.cfg.trainer.get("eval_batch_size", 1000))
    return PointEvaluator(model, dirs, x, y, batch, s.precision)


def surfaces(plan_: Plan, rows: dict) -> list[tuple[str, list[float], torch.Tensor, torch.Tensor]]:
    """Per run: (label, coords, loss grid, error grid); grids (resolution,) in 1-D, (res, res) in 2-D."""
    s = plan_.settings
    shape = (s.resolution, s.resolution) if s.dims == 2 else (s.resolution,)
    result = []
    for c in plan_.runs:
        loss, error = torch.empty(shape, dtype=torch.float64), torch.empty(shape, dtype=torch.float64)
        for i, j in s.points():
            row = rows[(c.label, i, j)]
            index = (i, j) if s.dims == 2 else (i,)
            loss[index], error[index] = float(row["loss"]), float(row["error"])
        result.append((c.label, s.coords(), loss, error))
    return result
