"""Tiny dataset folders in the official on-disk formats, for tests (no network here).

    from data_fixtures import write_cifar10, write_cifar100, write_svhn
    written = write_cifar10(tmp_path)  # then load_dataset("cifar10", root=str(tmp_path))

Each writer returns the arrays as ``load_dataset`` should give them back: images uint8 (N, 3, 32, 32),
labels int64 (N,).
"""

from __future__ import annotations

import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class WrittenDataset:
    folder: Path  # the official folder that was written (e.g. <root>/cifar-10-batches-py)
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    extra_images: np.ndarray | None = None  # SVHN's extra_32x32.mat, if written
    extra_labels: np.ndarray | None = None


def write_cifar10(
    root: str | Path, n_per_batch: int = 20, n_test: int = 20, *, bytes_keys: bool = False, seed: int = 0
) -> WrittenDataset:
    """``<root>/cifar-10-batches-py`` with 5 train batches of ``n_per_batch`` images and a test batch.

    ``bytes_keys=True`` writes the files the way the official ones were written (Python 2 cPickle,
    protocol 2, ``str`` = bytes); otherwise Python 3 pickles with ``str`` keys.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train = []
    for i in range(1, 6):
        images, labels = _random_split(rng, n_per_batch, 10)
        batch = {"batch_label": f"training batch {i} of 5", "labels": labels.tolist(), "data": _rows(images)}
        _write_pickle(folder / f"data_batch_{i}", _with_filenames(batch, len(labels)), bytes_keys)
        train.append((images, labels))
    test_images, test_labels = _random_split(rng, n_test, 10)
    test = {"batch_label": "testing batch 1 of 1", "labels": test_labels.tolist(), "data": _rows(test_images)}
    _write_pickle(folder / "test_batch", _with_filenames(test, n_test), bytes_keys)
    meta = {"num_cases_per_batch": n_per_batch, "label_names": [f"class{i}" for i in range(10)]}
    _write_pickle(folder / "batches.meta", meta, bytes_keys)
    return WrittenDataset(
        folder=folder,
        train_images=np.concatenate([images for images, _ in train]),
        train_labels=np.concatenate([labels for _, labels in train]),
        test_images=test_images,
        test_labels=test_labels,
    )


def write_cifar100(
    root: str | Path, n_train: int = 20, n_test: int = 20, *, bytes_keys: bool = False, seed: int = 0
) -> WrittenDataset:
    """``<root>/cifar-100-python`` with ``train`` and ``test`` files (fine labels 0..99, coarse 0..19)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = _random_split(rng, n, 100)
        batch = {
            "batch_label": f"{split}ing batch 1 of 1",
            "fine_labels": labels.tolist(),
            "coarse_labels": (labels // 5).tolist(),
            "data": _rows(images),
        }
        _write_pickle(folder / split, _with_filenames(batch, n), bytes_keys)
        splits[split] = (images, labels)
    meta = {"fine_label_names": [f"fine{i}" for i in range(100)], "coarse_label_names": []}
    _write_pickle(folder / "meta", meta, bytes_keys)
    return WrittenDataset(folder, *splits["train"], *splits["test"])


def write_svhn(
    root: str | Path, n_train: int = 20, n_test: int = 20, n_extra: int = 0, *, seed: int = 0
) -> WrittenDataset:
    """``<root>/svhn/{train,test}_32x32.mat`` (and ``extra_32x32.mat`` if ``n_extra``), MATLAB v5 files.

    The returned train arrays exclude the extra images (``extra_images`` / ``extra_labels``).
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "svhn"
    folder.mkdir(parents=True, exist_ok=True)
    splits: dict[str, tuple[np.ndarray, np.ndarray] | tuple[None, None]] = {"extra": (None, None)}
    for split, n in (("train", n_train), ("test", n_test), ("extra", n_extra)):
        if split == "extra" and n == 0:
            continue
        images, labels = _random_split(rng, n, 10)
        write_svhn_mat(folder / f"{split}_32x32.mat", images, labels)
        splits[split] = (images, labels)
    return WrittenDataset(folder, *splits["train"], *splits["test"], *splits["extra"])


def write_svhn_mat(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """One SVHN file: ``X`` (32, 32, 3, N) uint8, ``y`` (N, 1) uint8 with digit 0 stored as 10."""
    from scipy.io import savemat

    x = np.ascontiguousarray(images.transpose(2, 3, 1, 0))  # (N, C, H, W) -> (H, W, C, N)
    y = np.where(labels == 0, 10, labels).astype(np.uint8).reshape(-1, 1)
    savemat(str(path), {"X": x, "y": y})


def _random_split(rng: np.random.Generator, n: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    # Every class appears (when n allows), in random order.
    labels = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
    return images, labels


def _rows(images: np.ndarray) -> np.ndarray:
    """(N, 3, 32, 32) -> the official (N, 3072) rows: all red values, then green, then blue."""
    return images.reshape(len(images), -1).copy()


def _with_filenames(batch: dict, n: int) -> dict:
    return {**batch, "filenames": [f"image_{i:05d}.png" for i in range(n)]}


def _write_pickle(path: Path, obj: object, py2: bool) -> None:
    with path.open("wb") as f:
        if py2:
            _Py2Pickler(f, protocol=2).dump(obj)
        else:
            pickle.dump(obj, f)


class _Py2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote for the official files.

    Every ``str`` and ``bytes`` becomes a Python 2 string (BINSTRING opcode, which Python 3 loads as bytes
    with ``encoding="bytes"``: keys, dtype codes and the array buffer alike) and numpy's functions are
    named by their numpy 1 module (``numpy.core.multiarray``), as in the real files.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: str | bytes) -> None:
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str

    def save_global(self, obj: object, name: str | None = None) -> None:
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)
