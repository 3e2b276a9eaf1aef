"""SVHN cropped digits from the official ``.mat`` files in ``<root>/svhn``.

Each file holds ``X`` uint8 (32, 32, 3, N) and ``y`` (N, 1) with labels 1..10, where 10 means digit 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnbench.data.dataset import ImageDataset, as_labels, as_uint8_pixels, to_image_tensor, to_label_tensor
from cnnbench.data.download import ensure_file, source
from cnnbench.data.paths import corrupt_error, missing_error, resolve_root

URL_BASE = "http://ufldl.stanford.edu/housenumbers/"
# split -> (file name, md5 of the official file)
FILES = {
    "train": ("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
    "test": ("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),
    "extra": ("extra_32x32.mat", "a93ce644f1a588dc4d68dda5feec44a7"),
}


def load_svhn(
    root: str | None = None,
    download: bool = False,
    extra: bool = False,
    url: str | None = None,
    **_ignored: object,
) -> ImageDataset:
    """SVHN: 73,257 train (+531,131 with ``extra=True``) / 26,032 test images, 10 classes.

    ``url``: a mirror folder holding the ``.mat`` files (None: ``$CNNBENCH_SVHN_URL``, else official);
    every file is checked against its published MD5.
    """
    base = resolve_root(root)
    splits = ["train", "extra"] if extra else ["train"]
    train = [_read_split(base, split, download, url) for split in splits]
    test_images, test_labels = _read_split(base, "test", download, url)
    return ImageDataset(
        name="svhn",
        train_images=to_image_tensor(np.concatenate([images for images, _ in train])),
        train_labels=to_label_tensor(np.concatenate([labels for _, labels in train])),
        test_images=to_image_tensor(test_images),
        test_labels=to_label_tensor(test_labels),
        num_classes=10,
    )


def _read_split(base: Path, split: str, download: bool, url: str | None) -> tuple[np.ndarray, np.ndarray]:
    path = fetch(base, split, download, url)
    # Imported here: scipy is only needed for SVHN and takes a while to import.
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path))
    except Exception as exc:  # scipy raises many types (ValueError, MatReadError, TypeError...) on bad files
        raise corrupt_error("SVHN", path, "it cannot be read as a MATLAB file", path, cause=exc) from exc
    try:
        return _parse_mat(mat)
    except ValueError as exc:
        raise corrupt_error("SVHN", path, str(exc), path) from exc


def fetch(base: Path, split: str, download: bool = True, url: str | None = None) -> Path:
    """``<base>/svhn/<split file>``, downloaded if missing (once, however many jobs ask at once)."""
    file_name, md5 = FILES[split]
    folder_url, _ = source("svhn", url, None, URL_BASE, None)
    file_url = folder_url.rstrip("/") + "/" + file_name
    path = base / "svhn" / file_name
    if path.is_file():
        return path
    if not download:
        raise missing_error("SVHN", base, path, file_url)
    return ensure_file(name="svhn", title="SVHN", root=base, path=path, url=file_url, md5=md5)


def _parse_mat(mat: dict[str, object]) -> tuple[np.ndarray, np.ndarray]:
    for key in ("X", "y"):
        if key not in mat:
            raise ValueError(f"it has no '{key}' variable")
    x = as_uint8_pixels(mat["X"], "X")
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise ValueError(f"'X' has shape {x.shape}, expected (32, 32, 3, N)")
    y = mat["y"]
    if isinstance(y, np.ndarray):
        y = y.reshape(-1)  # stored as a (N, 1) column
    labels = as_labels(y, x.shape[3], "y", 1, 11)
    labels[labels == 10] = 0  # SVHN writes digit 0 as class 10
    # (H, W, C, N) -> (N, C, H, W)
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), labels
