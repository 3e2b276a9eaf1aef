"""Random images and labels, always the same ones: for throughput benchmarks, not for accuracy."""

from __future__ import annotations

import torch

from cnnbench.data.dataset import ImageDataset
from cnnbench.errors import CnnbenchError


def load_synthetic(
    train_size: int = 50_000, test_size: int = 10_000, num_classes: int = 10, **_ignored: object
) -> ImageDataset:
    """``train_size`` / ``test_size`` uniform random uint8 images, random labels in ``[0, num_classes)``."""
    _check_count("train_size", train_size, minimum=1)
    _check_count("test_size", test_size, minimum=1)
    _check_count("num_classes", num_classes, minimum=2)
    # A fixed seed, independent of the run seed, so every run benchmarks the same data.
    generator = torch.Generator().manual_seed(0)

    def images(n: int) -> torch.Tensor:
        return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator)

    def labels(n: int) -> torch.Tensor:
        return torch.randint(0, num_classes, (n,), dtype=torch.int64, generator=generator)

    return ImageDataset(
        name="synthetic",
        train_images=images(train_size),
        train_labels=labels(train_size),
        test_images=images(test_size),
        test_labels=labels(test_size),
        num_classes=num_classes,
        synthetic=True,
    )


def _check_count(option: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise CnnbenchError(
            f"data.{option}={value!r} is not valid for the synthetic dataset: it must be an integer of at "
            f"least {minimum}. Set data.{option} to such a number, or leave it out for the default."
        )
