"""Datasets as uint8 tensors (N, 3, 32, 32), loaded once and then held on the training device.

CONTRACT (other modules rely on it):
- ``load_dataset(name, **options) -> ImageDataset``; ``name`` in ``DATASETS``; an unknown name raises
  ``CnnbenchError`` listing the valid ones. ``options`` are the data config's keys other than ``name``
  (e.g. ``root``, ``download``, ``val_size``) and unknown ones are ignored by loaders that don't use them.
- Images are CPU ``torch.uint8`` tensors of shape (N, 3, 32, 32), labels CPU ``torch.int64`` (N,).
- Bad files, missing data with ``download=False``: ``CnnbenchError`` with a one-paragraph message.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ImageDataset:
    name: str
    train_images: torch.Tensor  # uint8 (N, 3, 32, 32)
    train_labels: torch.Tensor  # int64 (N,)
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int
    val_images: torch.Tensor | None = None
    val_labels: torch.Tensor | None = None
    synthetic: bool = False  # random images: for throughput benchmarks only
