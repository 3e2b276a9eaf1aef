"""scikit-learn's bundled 8x8 handwritten digits, upsampled to 32x32 RGB: a tiny offline dataset."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cnnbench.data.dataset import ImageDataset


def load_digits(**_ignored: object) -> ImageDataset:
    """1,797 digits split 80/20 (stratified, fixed seed): 1,437 train / 360 test images, 10 classes."""
    # Imported here: scikit-learn is slow to import and only this dataset needs it.
    from sklearn.datasets import load_digits as sklearn_load_digits
    from sklearn.model_selection import train_test_split

    pixels, labels = sklearn_load_digits(return_X_y=True)
    images = _to_rgb32(pixels)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=0.2, random_state=0, stratify=labels
    )
    labels_t = torch.from_numpy(labels.astype(np.int64))
    train_idx_t, test_idx_t = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    return ImageDataset(
        name="digits",
        train_images=images[train_idx_t],
        train_labels=labels_t[train_idx_t],
        test_images=images[test_idx_t],
        test_labels=labels_t[test_idx_t],
        num_classes=10,
    )


def _to_rgb32(pixels: np.ndarray) -> torch.Tensor:
    """(N, 64) values 0..16 -> uint8 (N, 3, 32, 32) values 0..255."""
    small = torch.from_numpy(pixels).float().reshape(-1, 1, 8, 8) * (255.0 / 16.0)
    big = F.interpolate(small, size=(32, 32), mode="bilinear", align_corners=False)
    gray = big.round().clamp(0, 255).to(torch.uint8)
    return gray.expand(-1, 3, -1, -1).contiguous()
