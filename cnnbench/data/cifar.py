"""CIFAR-10 and CIFAR-100 from the official python-pickle folders.

The folders are ``cifar-10-batches-py`` and ``cifar-100-python`` under the data root. The array checks
shared with the SVHN reader live in ``cnnbench.data.dataset``.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnbench.data.dataset import ImageDataset, as_labels, as_uint8_pixels, to_image_tensor, to_label_tensor
from cnnbench.data.download import ensure_extracted, source
from cnnbench.data.paths import corrupt_error, missing_error, resolve_root


@dataclass(frozen=True)
class _CifarSpec:
    name: str
    title: str
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    label_key: str
    num_classes: int
    url: str
    md5: str  # of the .tar.gz archive; the extracted files are validated as read (`cnnbench data verify`)

    @property
    def archive(self) -> str:
        return self.url.rsplit("/", 1)[-1]


CIFAR10 = _CifarSpec(
    name="cifar10",
    title="CIFAR-10",
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_file="test_batch",
    label_key="labels",
    num_classes=10,
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    md5="c58f30108f718f92721af3b95e74349a",
)
CIFAR100 = _CifarSpec(
    name="cifar100",
    title="CIFAR-100",
    folder="cifar-100-python",
    train_files=("train",),
    test_file="test",
    label_key="fine_labels",
    num_classes=100,
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    md5="eb9058c3a382ffc7106e4002c42a8d85",
)

# What a pickled numpy array (Python 2 or 3, numpy 1 or 2) may refer to. Anything else is refused, so a
# foreign or tampered file in the data folder cannot run code when it is unpickled.
_ALLOWED_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # how Python 3 writes bytes at protocol 2
    }
)


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a CIFAR batch never contains")
        return super().find_class(module, name)


def load_cifar10(
    root: str | None = None,
    download: bool = False,
    url: str | None = None,
    md5: str | None = None,
    **_ignored: object,
) -> ImageDataset:
    """CIFAR-10: 50k train / 10k test images, 10 classes, from ``<root>/cifar-10-batches-py``.

    ``url`` / ``md5``: a mirror of the archive (None: ``$CNNBENCH_CIFAR10_URL`` / ``_MD5``, else official).
    """
    return _load(CIFAR10, root, download, url, md5)


def load_cifar100(
    root: str | None = None,
    download: bool = False,
    url: str | None = None,
    md5: str | None = None,
    **_ignored: object,
) -> ImageDataset:
    """CIFAR-100 (fine labels): 50k train / 10k test images, 100 classes, from ``<root>/cifar-100-python``."""
    return _load(CIFAR100, root, download, url, md5)


def _load(
    spec: _CifarSpec, root: str | None, download: bool, url: str | None, md5: str | None
) -> ImageDataset:
    base = resolve_root(root)
    folder = base / spec.folder
    if not folder.is_dir():
        fetch(spec, base, download, url, md5)
    train = [_read_batch(spec, folder, name) for name in spec.train_files]
    test_images, test_labels = _read_batch(spec, folder, spec.test_file)
    return ImageDataset(
        name=spec.name,
        train_images=to_image_tensor(np.concatenate([images for images, _ in train])),
        train_labels=to_label_tensor(np.concatenate([labels for _, labels in train])),
        test_images=to_image_tensor(test_images),
        test_labels=to_label_tensor(test_labels),
        num_classes=spec.num_classes,
    )


def fetch(
    spec: _CifarSpec, base: Path, download: bool = True, url: str | None = None, md5: str | None = None
) -> Path:
    """``base/spec.folder``, downloaded and extracted if missing (once, however many jobs ask at once)."""
    chosen_url, chosen_md5 = source(spec.name, url, md5, spec.url, spec.md5)
    folder = base / spec.folder
    if not download and not folder.is_dir():
        raise missing_error(spec.title, base, folder, chosen_url)
    return ensure_extracted(
        name=spec.name,
        title=spec.title,
        root=base,
        folder=spec.folder,
        archive=spec.archive,
        url=chosen_url,
        md5=chosen_md5,
    )


def _read_batch(spec: _CifarSpec, folder: Path, file_name: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickle file -> (uint8 images (N, 3, 32, 32), int64 labels (N,)), validated."""
    path = folder / file_name
    if not path.is_file():
        raise corrupt_error(spec.title, path, "it is missing from the folder", folder)
    try:
        with path.open("rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except Exception as exc:  # garbage input makes pickle raise nearly any exception type
        raise corrupt_error(spec.title, path, "it cannot be unpickled", folder, cause=exc) from exc
    try:
        return _parse_batch(batch, spec)
    except ValueError as exc:
        raise corrupt_error(spec.title, path, str(exc), folder) from exc


def _parse_batch(batch: object, spec: _CifarSpec) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(batch, dict):
        raise ValueError(f"it holds a {type(batch).__name__}, not the dict of a CIFAR batch")
    # Python 2 pickles (the official files) have bytes keys; ones written by Python 3 have str keys.
    entries = {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in batch.items()}
    for key in ("data", spec.label_key):
        if key not in entries:
            raise ValueError(f"it has no '{key}' entry (keys: {sorted(map(str, entries))})")
    data = as_uint8_pixels(entries["data"], "data")
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"'data' has shape {data.shape}, expected (N, 3072)")
    labels = as_labels(entries[spec.label_key], len(data), spec.label_key, 0, spec.num_classes)
    # Each row is the 1024 red, then green, then blue values of a 32x32 image in row-major order.
    return data.reshape(-1, 3, 32, 32), labels
