"""Batched, on-device augmentation: normalize, zero-pad, random crop and flip in a few tensor ops.

The crop and the flip are one gather: every output pixel reads ``padded[n, :, dy + i, dx +/- j]``.
Indexing with the channel slice between the advanced indices yields an (N, H, W, C) tensor, so the
permuted result is already channels-last in memory, the layout the convolutions want.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NORMALIZATIONS = ("pixel_mean", "channel")


def normalization_stats(train_images: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std (broadcastable to (N, 3, H, W), in [0, 1] units) from the uint8 training images.

    ``pixel_mean``: the paper's per-pixel mean subtraction (std 1). ``channel``: per-channel mean/std.
    """
    from cnnbench.errors import CnnbenchError

    # Sum in chunks: a float copy of all 50k CIFAR images would cost 600 MB.
    total = torch.zeros(train_images.shape[1:], dtype=torch.float64, device=train_images.device)
    for chunk in train_images.split(4096):
        total += chunk.to(torch.float64).sum(0)
    pixel_mean = (total / (255.0 * len(train_images))).float()
    if kind == "pixel_mean":
        return pixel_mean, torch.ones((), device=train_images.device)
    if kind == "channel":
        mean = pixel_mean.mean((1, 2), keepdim=True)
        sq = torch.zeros(train_images.shape[1], dtype=torch.float64, device=train_images.device)
        for chunk in train_images.split(4096):
            sq += ((chunk.to(torch.float64) / 255.0 - mean.double()) ** 2).sum((0, 2, 3))
        std = (sq / (len(train_images) * train_images.shape[2] * train_images.shape[3])).sqrt().float()
        return mean, std.view(-1, 1, 1)
    raise CnnbenchError(
        f"data.normalize={kind!r} is not a normalization; use one of {', '.join(NORMALIZATIONS)}."
    )


class BatchAugment:
    """uint8 (N, C, H, W) batch -> normalized float batch, randomly cropped and flipped, channels-last."""

    def __init__(
        self,
        mean: torch.Tensor,
        std: torch.Tensor,
        padding: int,
        flip: bool,
        generator: torch.Generator,
        memory_format: torch.memory_format = torch.channels_last,
    ) -> None:
        self.mean, self.std = mean, std
        self.padding, self.flip = padding, flip
        self.generator = generator
        # The layout the model's convolutions take (trainer.channels_last); batches come out in it.
        self.memory_format = memory_format

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 -> normalized float, in ``memory_format`` (evaluation: no crop, no flip)."""
        x = (images.float() / 255.0 - self.mean) / self.std
        return x.contiguous(memory_format=self.memory_format)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() / 255.0 - self.mean) / self.std
        if not self.padding and not self.flip:
            return x.contiguous(memory_format=self.memory_format)
        n, _, h, w = x.shape
        dev = x.device
        p = self.padding
        if p:
            # Zero padding after normalization pads with the mean, as the paper's Torch recipe does.
            x = F.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (n, 1), device=dev, generator=self.generator)
        dx = torch.randint(0, 2 * p + 1, (n, 1), device=dev, generator=self.generator)
        rows = dy + torch.arange(h, device=dev)
        cols = torch.arange(w, device=dev).expand(n, w)
        if self.flip:
            flipped = torch.rand(n, 1, device=dev, generator=self.generator) < 0.5
            cols = torch.where(flipped, (w - 1) - cols, cols)
        cols = dx + cols
        batch = torch.arange(n, device=dev)[:, None, None]
        out = x[batch, :, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
        # Already channels-last in memory: a no-op then, one copy for NCHW (trainer.channels_last=false).
        return out.permute(0, 3, 1, 2).contiguous(memory_format=self.memory_format)
