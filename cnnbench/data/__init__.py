"""Datasets as uint8 tensors (N, 3, 32, 32), loaded once and then held on the training device.

CONTRACT (other modules rely on it):
- ``load_dataset(name, **options) -> ImageDataset``; ``name`` in ``DATASETS``; an unknown name raises
  ``CnnbenchError`` listing the valid ones. ``options`` are the data config's keys other than ``name``
  (e.g. ``root``, ``download``, ``val_size``) and unknown ones are ignored by loaders that don't use them.
- Images are CPU ``torch.uint8`` tensors of shape (N, 3, 32, 32), labels CPU ``torch.int64`` (N,).
- Bad files, missing data with ``download=False``: ``CnnbenchError`` with a one-paragraph message.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import replace

import torch

from cnnbench.data.cifar import load_cifar10, load_cifar100
from cnnbench.data.dataset import ImageDataset
from cnnbench.data.digits import load_digits
from cnnbench.data.paths import default_data_root
from cnnbench.data.svhn import load_svhn
from cnnbench.data.synthetic import load_synthetic
from cnnbench.errors import CnnbenchError

# name -> loader(**options); every loader ignores the options it does not use.
DATASETS: dict[str, Callable[..., ImageDataset]] = {
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "svhn": load_svhn,
    "digits": load_digits,
    "synthetic": load_synthetic,
}

# Independent of the run seed: every run of an experiment holds out the same validation images.
VAL_SPLIT_SEED = 0


def load_dataset(name: str, **options: object) -> ImageDataset:
    """Load dataset ``name`` with the data config's ``options``.

    Common options: ``root`` (None -> ``default_data_root()``), ``download`` (bool) and ``val_size``
    (int, 0 = none): that many training images are held out as ``val_images`` / ``val_labels``.
    """
    loader = DATASETS.get(name)
    if loader is None:
        raise CnnbenchError(f"Unknown dataset {name!r}. Set data.name to one of: {', '.join(DATASETS)}.")
    dataset = loader(**options)
    val_size = _val_size(options.get("val_size"), dataset)
    return hold_out_validation(dataset, val_size) if val_size else dataset


def hold_out_validation(dataset: ImageDataset, val_size: int) -> ImageDataset:
    """Move ``val_size`` training images, picked by a fixed seeded permutation, to ``val_images``."""
    generator = torch.Generator().manual_seed(VAL_SPLIT_SEED)
    perm = torch.randperm(len(dataset.train_labels), generator=generator)
    # Sorted so both parts keep the file order (the permutation only decides membership).
    val_idx, train_idx = perm[:val_size].sort().values, perm[val_size:].sort().values
    return replace(
        dataset,
        train_images=dataset.train_images[train_idx],
        train_labels=dataset.train_labels[train_idx],
        val_images=dataset.train_images[val_idx],
        val_labels=dataset.train_labels[val_idx],
    )


def _val_size(value: object, dataset: ImageDataset) -> int:
    n_train = len(dataset.train_labels)
    if value is None:
        return 0
    try:
        if isinstance(value, bool):
            raise TypeError
        size = operator.index(value)
    except TypeError:
        size = -1
    if not 0 <= size < n_train:
        raise CnnbenchError(
            f"data.val_size={value!r} is not valid for {dataset.name}, which has {n_train} training images: "
            f"it must be an integer from 0 (no validation split) to {n_train - 1}. Set data.val_size to such "
            f"a number (the paper holds out 5000 of CIFAR-10's 50000 training images)."
        )
    return size


__all__ = [
    "DATASETS",
    "ImageDataset",
    "default_data_root",
    "hold_out_validation",
    "load_dataset",
]
