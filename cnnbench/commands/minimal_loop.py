"""The yardstick of `cnnbench bench`: the short training loop a skilled user writes in an afternoon.

Written independently of cnnbench's engine and model zoo, so that a slow model implementation shows as
much as a slow loop: its own CIFAR ResNet / plain net (He et al. 2016, option A shortcuts), the training
set resident on the device as uint8, a per-epoch permutation, the padded random crop and the flip done
on the whole batch, normalization after them, the autocast, memory layout and torch.compile mode
cnnbench's run uses, and the optimizer's fastest implementation (fused where torch has it for the
device, else foreach). No host synchronization in the step: nothing is read back.

`cnnbench bench` times it interleaved with cnnbench's full training step on the same data, batch,
precision and layout, and prints cnnbench's speed as a fraction of it.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

# The architectures this loop writes out: cnnbench's model names it stands beside.
FAMILIES = {"resnet": True, "plain": False}  # name -> has shortcuts


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, residual: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.residual, self.stride, self.extra = residual, stride, cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            short = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
            if self.extra:  # option A: the new channels are zeros
                short = F.pad(short, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
            out = out + short
        return F.relu(out)


class CifarNet(nn.Module):
    """6n+2 layers: a 3x3 conv, three stages of n blocks (16, 32, 64 filters), pooling, one linear layer."""

    def __init__(self, depth: int, residual: bool, channels: int = 3, classes: int = 10) -> None:
        super().__init__()
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        layers, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(n):
                layers.append(Block(cin, cout, stride if i == 0 else 1, residual))
                cin = cout
        self.blocks = nn.Sequential(*layers)
        self.fc = nn.Linear(64, classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1).flatten(1))


def fastest_sgd(params, device: torch.device, **kwargs) -> torch.optim.SGD:
    """SGD's fused kernel where torch has it for the device, else its foreach implementation."""
    if "fused" in inspect.signature(torch.optim.SGD).parameters:
        try:
            return torch.optim.SGD(params, fused=True, **kwargs)
        except RuntimeError:  # no fused SGD for this device in this torch
            pass
    return torch.optim.SGD(params, foreach=True, **kwargs)


class MinimalLoop:
    """One training step of the minimal loop per call (``step()``)."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        model: str,
        depth: int,
        batch_size: int,
        precision: str,
        channels_last: bool,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        padding: int = 4,
        seed: int = 0,
        compile_mode: str | None = None,
    ) -> None:
        device = images.device
        self.device, self.batch_size, self.padding = device, batch_size, padding
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.layout = torch.channels_last if channels_last else torch.contiguous_format
        scaled = images.float() / 255
        self.mean = scaled.mean((0, 2, 3), keepdim=True)
        self.std = scaled.std((0, 2, 3), keepdim=True)
        # Padded once: each step only gathers its crops.
        self.images = F.pad(images, (padding,) * 4) if padding else images
        self.labels, self.size = labels, images.shape[-1]
        self.order, self.position = torch.empty(0, dtype=torch.long, device=device), 0
        self.net = CifarNet(depth, FAMILIES[model], images.shape[1], int(labels.max()) + 1)
        self.net = self.net.to(device, memory_format=self.layout).train()
        # Compiled for its one batch shape, as cnnbench compiles its training step.
        compiled = compile_mode is not None
        self.model = torch.compile(self.net, mode=compile_mode, dynamic=False) if compiled else self.net
        self.optimizer = fastest_sgd(
            self.net.parameters(), device, lr=lr, momentum=momentum, weight_decay=weight_decay
        )
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else None
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        side = torch.arange(self.size, device=device)
        self.rows, self.cols = side.view(1, -1, 1), side.view(1, 1, -1)  # (1, H, 1), (1, 1, W)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.position + self.batch_size > len(self.order):
            self.order = torch.randperm(len(self.labels), generator=self.generator, device=self.device)
            self.position = 0
        index = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        x = self.images[index]  # uint8 (B, C, H + 2p, W + 2p)
        b = len(index)
        if self.padding:
            shape = (b, 1, 1)
            dy = torch.randint(0, 2 * self.padding + 1, shape, generator=self.generator, device=self.device)
            dx = torch.randint(0, 2 * self.padding + 1, shape, generator=self.generator, device=self.device)
            flip = torch.rand(shape, generator=self.generator, device=self.device) < 0.5
            cols = torch.where(flip, self.size - 1 - self.cols, self.cols) + dx
            # One gather for crop and flip: (B, H, W) pixel indices, the channels come out last.
            x = x[torch.arange(b, device=self.device).view(-1, 1, 1), :, self.rows + dy, cols]
            x = x.permute(0, 3, 1, 2)
        x = ((x.float() / 255 - self.mean) / self.std).contiguous(memory_format=self.layout)
        return x, self.labels[index]

    def step(self) -> None:
        x, y = self.batch()
        if self.autocast is None:
            loss = F.cross_entropy(self.model(x), y)
        else:
            with self.autocast():
                out = self.model(x)
            loss = F.cross_entropy(out.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
