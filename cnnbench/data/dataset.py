"""``ImageDataset``, what every loader returns, and the array checks the file readers share.

Its own module so that the loaders (cifar, svhn, digits, synthetic) and the package ``__init__``, which
imports them for ``DATASETS``, all import it from here: no module of the package imports the package.

The checks raise ``ValueError(reason)``; the readers turn that into a ``CnnbenchError`` naming the file
and the fix (``cnnbench.data.paths.corrupt_error``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
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


def as_uint8_pixels(value: object, key: str) -> np.ndarray:
    """``value`` as a uint8 array; ValueError unless it is a non-empty integer array with values 0..255."""
    if not isinstance(value, np.ndarray):
        raise ValueError(f"'{key}' is a {type(value).__name__}, not a numpy array")
    if value.size == 0:
        raise ValueError(f"'{key}' holds no images")
    if value.dtype == np.uint8:
        return value
    if not np.issubdtype(value.dtype, np.integer):
        raise ValueError(f"'{key}' has dtype {value.dtype}, expected uint8 pixel values")
    if value.min() < 0 or value.max() > 255:
        raise ValueError(f"'{key}' has values outside 0..255")
    return value.astype(np.uint8)


def as_labels(value: object, count: int, key: str, low: int, high: int) -> np.ndarray:
    """``value`` as int64 labels; ValueError unless there are ``count`` integers in ``[low, high)``."""
    try:
        labels = np.asarray(value)
    except ValueError as exc:  # ragged nested lists
        raise ValueError(f"'{key}' is not a flat list of labels") from exc
    if labels.ndim != 1:
        raise ValueError(f"'{key}' has shape {labels.shape}, expected a flat list of labels")
    if len(labels) != count:
        raise ValueError(f"'{key}' has {len(labels)} labels for {count} images")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"'{key}' has dtype {labels.dtype}, expected integer class labels")
    if labels.min() < low or labels.max() >= high:
        raise ValueError(
            f"'{key}' has labels from {labels.min()} to {labels.max()}, expected {low}..{high - 1}"
        )
    return labels.astype(np.int64)


def to_image_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, 3, 32, 32) array -> torch tensor that owns writable, contiguous memory."""
    # Unpickled arrays can be read-only views of the file's bytes; torch warns on those.
    return torch.from_numpy(np.require(images, dtype=np.uint8, requirements=["C", "W"]))


def to_label_tensor(labels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.require(labels, dtype=np.int64, requirements=["C", "W"]))
