"""The speed-up baseline of `cnnbench bench`: CIFAR training the way popular public reimplementations do it.

Modelled on the usual CIFAR ResNet repositories (e.g. kuangliu/pytorch-cifar,
akamaster/pytorch_resnet_cifar10) and the torchvision CIFAR10 dataset class:

- a map-style ``Dataset`` holding the images as an (N, H, W, C) uint8 array and returning a PIL image
  per index, like ``torchvision.datasets.CIFAR10``;
- torchvision transforms applied per sample in the workers: ``RandomCrop(32, padding=4)``,
  ``RandomHorizontalFlip()``, ``ToTensor()``, ``Normalize(CIFAR mean, std)``;
- a ``DataLoader(shuffle=True, num_workers=2, drop_last=True)`` whose workers start with every epoch;
- an fp32, NCHW (contiguous) model and a plain SGD step, with the per-iteration ``loss.item()`` and
  accuracy bookkeeping those training loops print.

It ships inside the package (`cnnbench bench` works from a plain `pip install`), and is importable by
name, so DataLoader workers started with spawn/forkserver can unpickle its dataset class.

`cnnbench bench` builds it on the same architecture, the same uint8 images and the same batch size as
the run it measures, so the ratio of the two throughputs is the speed-up of cnnbench's pipeline.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

# The CIFAR-10 per-channel statistics those repositories hard-code.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
NUM_WORKERS = 2


class UInt8ImageDataset(Dataset):
    """uint8 images (N, 3, H, W) as a map-style dataset of (transformed PIL image, int label) pairs."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform=None) -> None:
        # (N, H, W, C) numpy array and a list of ints: the layout of torchvision's CIFAR10.data/.targets.
        self.data: np.ndarray = images.detach().cpu().permute(0, 2, 3, 1).contiguous().numpy()
        self.targets: list[int] = labels.detach().cpu().tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        img, target = self.data[index], self.targets[index]
        img = Image.fromarray(img)
        if self.transform is not None:
            img = self.transform(img)
        return img, target


def train_transform(mean=CIFAR_MEAN, std=CIFAR_STD) -> transforms.Compose:
    return transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )


def make_loader(
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    num_workers: int = NUM_WORKERS,
    seed: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    dataset = UInt8ImageDataset(images, labels, transform=train_transform())
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=num_workers,
        drop_last=True,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed),
    )


class BaselineTrainer:
    """``train_step()``: the body of the classic ``for inputs, targets in trainloader:`` loop.

    ``stop()`` ends the current epoch (its worker processes exit); the next step starts a new one,
    as the outer ``for epoch in range(...)`` loop of those scripts does.
    """

    def __init__(
        self,
        model: nn.Module,
        loader: DataLoader,
        device: torch.device,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).float()  # fp32, default (NCHW) memory format
        self.model.train()
        self.loader = loader
        self.criterion = nn.CrossEntropyLoss()
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
        )
        self._batches: Iterator | None = None
        self.train_loss = 0.0
        self.correct = 0
        self.total = 0

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._batches is None:
            self._batches = iter(self.loader)
        try:
            return next(self._batches)
        except StopIteration:
            self._batches = iter(self.loader)
            return next(self._batches)

    def train_step(self) -> float:
        inputs, targets = self.next_batch()
        inputs, targets = inputs.to(self.device), targets.to(self.device)
        self.optimizer.zero_grad()
        outputs = self.model(inputs)
        loss = self.criterion(outputs, targets)
        loss.backward()
        self.optimizer.step()

        self.train_loss += loss.item()
        _, predicted = outputs.max(1)
        self.total += targets.size(0)
        self.correct += predicted.eq(targets).sum().item()
        return loss.item()

    def stop(self) -> None:
        """End the epoch: drop the loader iterator, which shuts its worker processes down."""
        self._batches = None
