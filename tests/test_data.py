"""Dataset readers: official-format fixtures written into tmp_path (no network)."""

from __future__ import annotations

import ast
import importlib
import os
import pickle
import random
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from data_fixtures import write_cifar10, write_cifar100, write_svhn, write_svhn_mat

from cnnbench.data import DATASETS, ImageDataset, load_dataset
from cnnbench.data.paths import corrupt_error, default_data_root, download_error, one_line, resolve_root
from cnnbench.errors import CnnbenchError


def assert_images_equal(tensor: torch.Tensor, expected: np.ndarray) -> None:
    assert tensor.dtype == torch.uint8
    assert tuple(tensor.shape) == expected.shape
    assert np.array_equal(tensor.numpy(), expected)


def assert_labels_equal(tensor: torch.Tensor, expected: np.ndarray) -> None:
    assert tensor.dtype == torch.int64
    assert np.array_equal(tensor.numpy(), expected)


def assert_one_paragraph(error: CnnbenchError) -> str:
    message = str(error)
    assert "\n" not in message and message
    return message


# --- registry --------------------------------------------------------------------------------------


def test_registry_names() -> None:
    assert set(DATASETS) == {"cifar10", "cifar100", "svhn", "digits", "synthetic"}


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(CnnbenchError) as info:
        load_dataset("imagenet")
    message = assert_one_paragraph(info.value)
    assert "imagenet" in message
    for name in DATASETS:
        assert name in message


# --- CIFAR -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bytes_keys", [False, True], ids=["py3-str-keys", "py2-bytes-keys"])
def test_cifar10_round_trip(tmp_path: Path, bytes_keys: bool) -> None:
    written = write_cifar10(tmp_path, n_per_batch=20, n_test=12, bytes_keys=bytes_keys)
    ds = load_dataset("cifar10", root=str(tmp_path), download=False, val_size=0, normalize=True)
    assert isinstance(ds, ImageDataset)
    assert (ds.name, ds.num_classes, ds.synthetic) == ("cifar10", 10, False)
    assert ds.train_images.shape == (100, 3, 32, 32)
    assert_images_equal(ds.train_images, written.train_images)
    assert_labels_equal(ds.train_labels, written.train_labels)
    assert_images_equal(ds.test_images, written.test_images)
    assert_labels_equal(ds.test_labels, written.test_labels)
    assert ds.val_images is None and ds.val_labels is None


@pytest.mark.parametrize("bytes_keys", [False, True], ids=["py3-str-keys", "py2-bytes-keys"])
def test_cifar100_round_trip(tmp_path: Path, bytes_keys: bool) -> None:
    written = write_cifar100(tmp_path, n_train=120, n_test=20, bytes_keys=bytes_keys)
    ds = load_dataset("cifar100", root=str(tmp_path))
    assert (ds.name, ds.num_classes) == ("cifar100", 100)
    assert_images_equal(ds.train_images, written.train_images)
    assert_labels_equal(ds.train_labels, written.train_labels)
    assert_images_equal(ds.test_images, written.test_images)
    assert_labels_equal(ds.test_labels, written.test_labels)
    assert int(ds.train_labels.max()) == 99  # fine labels, not the 20 coarse ones


def test_cifar_row_layout_is_channel_major(tmp_path: Path) -> None:
    """A row is 1024 red values, then green, then blue, each a 32x32 image in row-major order."""
    written = write_cifar10(tmp_path, n_per_batch=1, n_test=1)
    row = pickle.loads((written.folder / "test_batch").read_bytes())["data"][0]
    image = load_dataset("cifar10", root=str(tmp_path)).test_images[0]
    assert int(image[1, 0, 5]) == row[1024 + 5]
    assert int(image[2, 3, 0]) == row[2048 + 3 * 32]


def test_val_split_sizes_membership_and_determinism(tmp_path: Path) -> None:
    written = write_cifar10(tmp_path, n_per_batch=20)
    torch.manual_seed(1)
    first = load_dataset("cifar10", root=str(tmp_path), val_size=30)
    torch.manual_seed(2)  # the split must not depend on the run seed
    second = load_dataset("cifar10", root=str(tmp_path), val_size=30)
    assert first.val_images is not None and first.val_labels is not None
    assert first.train_images.shape == (70, 3, 32, 32) and first.train_labels.shape == (70,)
    assert first.val_images.shape == (30, 3, 32, 32) and first.val_labels.shape == (30,)
    assert torch.equal(first.val_images, second.val_images)
    assert torch.equal(first.train_labels, second.train_labels)

    # Train and val partition the original training set: same images and labels, none twice.
    def pairs(images: object, labels: object) -> list[tuple[bytes, int]]:
        return [(np.asarray(img).tobytes(), int(lab)) for img, lab in zip(images, labels, strict=True)]

    rows = dict(pairs(written.train_images, written.train_labels))
    seen = pairs(first.train_images, first.train_labels) + pairs(first.val_images, first.val_labels)
    assert len({img for img, _ in seen}) == 100
    assert all(rows[img] == lab for img, lab in seen)
    assert torch.equal(first.test_images, torch.from_numpy(written.test_images))


@pytest.mark.parametrize("val_size", [100, 101, -1, 2.5, "10", True])
def test_bad_val_size(tmp_path: Path, val_size: object) -> None:
    write_cifar10(tmp_path, n_per_batch=20)
    with pytest.raises(CnnbenchError) as info:
        load_dataset("cifar10", root=str(tmp_path), val_size=val_size)
    message = assert_one_paragraph(info.value)
    assert "val_size" in message and "100 training images" in message


def test_missing_folder_without_download(tmp_path: Path) -> None:
    with pytest.raises(CnnbenchError) as info:
        load_dataset("cifar10", root=str(tmp_path), download=False)
    message = assert_one_paragraph(info.value)
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "data.download=true" in message and "data.root" in message and "CNNBENCH_DATA" in message
    assert f"extract it in {tmp_path}" in message


def test_missing_cifar100_folder_names_its_folder(tmp_path: Path) -> None:
    write_cifar10(tmp_path)  # the other CIFAR must not count
    with pytest.raises(CnnbenchError, match="cifar-100-python"):
        load_dataset("cifar100", root=str(tmp_path))


def _tar_of(folder: Path, archive: Path) -> None:
    """The official archive's layout: the dataset folder at the top of a .tar.gz."""
    import tarfile

    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)


def test_download_fetches_the_official_archive_once(tmp_path: Path, monkeypatch) -> None:
    from cnnbench.data import download

    source = tmp_path / "source"
    written = write_cifar100(source)
    calls = []

    def fake_fetch(url: str, dest: Path, md5: str | None) -> None:
        calls.append((url, dest, md5))
        _tar_of(written.folder, dest)  # what the download leaves, checksum already verified

    monkeypatch.setattr(download, "fetch_file", fake_fetch)
    root = tmp_path / "root"
    ds = load_dataset("cifar100", root=str(root), download=True)
    assert calls == [
        (
            "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
            root / "cifar-100-python.tar.gz",
            "eb9058c3a382ffc7106e4002c42a8d85",
        )
    ]
    assert ds.train_images.shape == (20, 3, 32, 32)
    load_dataset("cifar100", root=str(root), download=True)  # already there: no second download
    assert len(calls) == 1


def test_download_url_for_cifar10(tmp_path: Path, monkeypatch) -> None:
    from cnnbench.data import download

    written = write_cifar10(tmp_path / "source")
    calls = []

    def fake_fetch(url: str, dest: Path, md5: str | None) -> None:
        calls.append((url, md5))
        _tar_of(written.folder, dest)

    monkeypatch.setattr(download, "fetch_file", fake_fetch)
    load_dataset("cifar10", root=str(tmp_path / "root"), download=True)
    assert calls == [
        ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a")
    ]


def test_download_failure_says_how_to_download_manually(tmp_path: Path, monkeypatch) -> None:
    from cnnbench.data import download

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(download, "fetch_file", offline)
    with pytest.raises(CnnbenchError) as info:
        load_dataset("cifar10", root=str(tmp_path), download=True)
    message = assert_one_paragraph(info.value)
    assert "manually" in message and str(tmp_path / "cifar-10-batches-py") in message
    assert "cifar-10-python.tar.gz" in message and "cnnbench data download cifar10" in message


def test_truncated_file(tmp_path: Path) -> None:
    written = write_cifar10(tmp_path)
    path = written.folder / "data_batch_3"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CnnbenchError) as info:
        load_dataset("cifar10", root=str(tmp_path))
    message = assert_one_paragraph(info.value)
    assert str(path) in message and "delete" in message and str(written.folder) in message


def _random_bytes(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


# Fixed seeds, so the same garbage every run. Found by trying seeds 0..599 (every one fails to unpickle):
# 0 -> "invalid load key"; 2 -> "unpickling stack underflow"; 103 -> pickle's two-line "A load persistent
# id instruction was encountered,\nbut no persistent_load function was specified."; 358 -> a ValueError
# quoting the garbage, carriage return and control characters included.
RANDOM_PICKLE_SEEDS = (0, 2, 103, 358)


@pytest.mark.parametrize(
    "content",
    [
        pickle.dumps([1, 2, 3]),  # a pickle of something else
        *(_random_bytes(seed, 4096) for seed in RANDOM_PICKLE_SEEDS),  # not a pickle
        b"",  # empty file
        pickle.dumps({"data": "not an array", "labels": [0]}),
        pickle.dumps({"labels": [0, 1]}),  # no data
    ],
    ids=[
        "pickled-list",
        *(f"random-bytes-seed{seed}" for seed in RANDOM_PICKLE_SEEDS),
        "empty",
        "data-not-array",
        "no-data-key",
    ],
)
def test_foreign_file(tmp_path: Path, content: bytes) -> None:
    written = write_cifar10(tmp_path)
    path = written.folder / "test_batch"
    path.write_bytes(content)
    with pytest.raises(CnnbenchError) as info:
        load_dataset("cifar10", root=str(tmp_path))
    message = assert_one_paragraph(info.value)
    assert str(path) in message and message.isprintable()


def test_multi_line_pickle_error_becomes_one_paragraph(tmp_path: Path) -> None:
    written = write_cifar10(tmp_path)
    path = written.folder / "test_batch"
    path.write_bytes(_random_bytes(103, 4096))
    with pytest.raises(CnnbenchError) as info:
        load_dataset("cifar10", root=str(tmp_path))
    assert "\n" in str(info.value.__cause__)  # what made this test flaky with os.urandom
    message = assert_one_paragraph(info.value)
    assert "encountered, but no persistent_load" in message


def test_error_details_are_one_short_line(tmp_path: Path) -> None:
    assert one_line("a\n  b\r\n\tc\x1b[31m") == "a b c [31m"
    assert one_line("x" * 1000) == "x" * 297 + "..."
    cause = ValueError("first line\nsecond line " + "garbage " * 500)
    error = corrupt_error("CIFAR-10", tmp_path / "f", "it cannot be unpickled", tmp_path, cause=cause)
    message = assert_one_paragraph(error)
    assert "it cannot be unpickled (ValueError: first line second line garbage" in message
    assert len(message) < 800 and str(tmp_path / "f") in message
    error = download_error("SVHN", "http://x", tmp_path / "f", OSError("line one\nline two"))
    assert "(OSError: line one line two)" in assert_one_paragraph(error)


class _RemovesFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (os.remove, (str(self.path),))


def test_pickle_cannot_run_code(tmp_path: Path) -> None:
    written = write_cifar10(tmp_path)
    victim = tmp_path / "keep-me"
    victim.write_text("x")
    (written.folder / "test_batch").write_bytes(pickle.dumps({"data": _RemovesFile(victim), "labels": []}))
    with pytest.raises(CnnbenchError, match="remove"):
        load_dataset("cifar10", root=str(tmp_path))
    assert victim.exists()


def _rewrite_test_batch(folder: Path, **changes: object) -> None:
    path = folder / "test_batch"
    batch = pickle.loads(path.read_bytes())
    batch.update(changes)
    path.write_bytes(pickle.dumps(batch))


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"labels": [10] + [0] * 19}, "labels from 0 to 10"),
        ({"labels": [-1] + [0] * 19}, "labels from -1"),
        ({"labels": [0] * 19}, "19 labels for 20 images"),
        ({"labels": [0.5] * 20}, "integer"),
        ({"data": np.zeros((20, 3000), np.uint8)}, "3072"),
        ({"data": np.zeros((20, 3, 32, 32), np.uint8)}, "3072"),
        ({"data": np.full((20, 3072), 256, np.int32)}, "0..255"),
        ({"data": np.zeros((20, 3072), np.float32)}, "float32"),
    ],
    ids=["label-too-big", "label-negative", "label-count", "label-float", "columns", "4d", "range", "float"],
)
def test_bad_contents(tmp_path: Path, changes: dict, reason: str) -> None:
    written = write_cifar10(tmp_path, n_test=20)
    _rewrite_test_batch(written.folder, **changes)
    with pytest.raises(CnnbenchError) as info:
        load_dataset("cifar10", root=str(tmp_path))
    message = assert_one_paragraph(info.value)
    assert reason in message and str(written.folder / "test_batch") in message


def test_int_pixels_in_range_are_accepted(tmp_path: Path) -> None:
    written = write_cifar10(tmp_path, n_test=20)
    _rewrite_test_batch(written.folder, data=written.test_images.reshape(20, -1).astype(np.int64))
    ds = load_dataset("cifar10", root=str(tmp_path))
    assert_images_equal(ds.test_images, written.test_images)


def test_missing_batch_file_in_folder(tmp_path: Path) -> None:
    written = write_cifar10(tmp_path)
    (written.folder / "data_batch_5").unlink()
    with pytest.raises(CnnbenchError) as info:
        load_dataset("cifar10", root=str(tmp_path))
    assert str(written.folder / "data_batch_5") in assert_one_paragraph(info.value)


# --- data root -------------------------------------------------------------------------------------


def test_default_root_from_env(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CNNBENCH_DATA", str(tmp_path))
    assert default_data_root() == tmp_path
    write_cifar10(tmp_path)
    assert load_dataset("cifar10", root=None).train_images.shape == (100, 3, 32, 32)


def test_default_root_xdg_and_home(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("CNNBENCH_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_data_root() == tmp_path / "xdg" / "cnnbench" / "data"
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_data_root() == tmp_path / ".cache" / "cnnbench" / "data"


def test_root_expands_tilde(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_root("~/datasets") == tmp_path / "datasets"
    write_cifar10(tmp_path / "datasets")
    assert load_dataset("cifar10", root="~/datasets").test_images.shape == (20, 3, 32, 32)


# --- SVHN ------------------------------------------------------------------------------------------


def test_svhn_round_trip_maps_label_10_to_0(tmp_path: Path) -> None:
    written = write_svhn(tmp_path, n_train=30, n_test=20)
    from scipy.io import loadmat

    y = loadmat(str(written.folder / "train_32x32.mat"))["y"]
    assert y.shape == (30, 1) and y.min() == 1 and y.max() == 10  # the official convention
    ds = load_dataset("svhn", root=str(tmp_path), download=False)
    assert (ds.name, ds.num_classes) == ("svhn", 10)
    assert_images_equal(ds.train_images, written.train_images)
    assert_labels_equal(ds.train_labels, written.train_labels)
    assert_images_equal(ds.test_images, written.test_images)
    assert_labels_equal(ds.test_labels, written.test_labels)
    assert set(ds.train_labels.tolist()) == set(range(10))


def test_svhn_extra_is_appended_to_train(tmp_path: Path) -> None:
    written = write_svhn(tmp_path, n_train=20, n_test=10, n_extra=15)
    ds = load_dataset("svhn", root=str(tmp_path), extra=True, val_size=5)
    assert ds.train_images.shape[0] + ds.val_images.shape[0] == 35
    plain = load_dataset("svhn", root=str(tmp_path), extra=False)
    assert_images_equal(plain.train_images, written.train_images)
    full = load_dataset("svhn", root=str(tmp_path), extra=True)
    assert_images_equal(full.train_images, np.concatenate([written.train_images, written.extra_images]))


def test_svhn_missing_file(tmp_path: Path) -> None:
    write_svhn(tmp_path)
    with pytest.raises(CnnbenchError) as info:
        load_dataset("svhn", root=str(tmp_path), extra=True)
    message = assert_one_paragraph(info.value)
    assert str(tmp_path / "svhn" / "extra_32x32.mat") in message and "data.download=true" in message
    assert "directory that contains svhn/extra_32x32.mat" in message


def test_svhn_download_fetches_the_official_files(tmp_path: Path, monkeypatch) -> None:
    from cnnbench.data import download

    calls = []
    rng = np.random.default_rng(0)

    def fake_fetch(url: str, dest: Path, md5: str | None) -> None:
        calls.append((url, dest, md5))
        images = rng.integers(0, 256, size=(4, 3, 32, 32), dtype=np.uint8)
        write_svhn_mat(dest, images, np.arange(4))

    monkeypatch.setattr(download, "fetch_file", fake_fetch)
    ds = load_dataset("svhn", root=str(tmp_path), download=True)
    folder = tmp_path / "svhn"
    base = "http://ufldl.stanford.edu/housenumbers/"
    assert calls == [
        (base + "train_32x32.mat", folder / "train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
        (base + "test_32x32.mat", folder / "test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),
    ]
    assert ds.train_images.shape == (4, 3, 32, 32)
    load_dataset("svhn", root=str(tmp_path), download=True, extra=True)
    assert calls[-1][1:] == (folder / "extra_32x32.mat", "a93ce644f1a588dc4d68dda5feec44a7")


@pytest.mark.parametrize("kind", ["random-bytes", "truncated", "wrong-shape", "label-out-of-range", "no-y"])
def test_svhn_bad_file(tmp_path: Path, kind: str) -> None:
    from scipy.io import savemat

    written = write_svhn(tmp_path, n_train=20)
    path = written.folder / "train_32x32.mat"
    x = np.zeros((32, 32, 3, 4), np.uint8)
    if kind == "random-bytes":
        path.write_bytes(_random_bytes(0, 2048))
    elif kind == "truncated":
        path.write_bytes(path.read_bytes()[:4000])
    elif kind == "wrong-shape":
        savemat(str(path), {"X": np.zeros((28, 28, 3, 4), np.uint8), "y": np.ones((4, 1), np.uint8)})
    elif kind == "label-out-of-range":
        savemat(str(path), {"X": x, "y": np.array([[1], [2], [11], [3]], np.uint8)})
    else:
        savemat(str(path), {"X": x})
    with pytest.raises(CnnbenchError) as info:
        load_dataset("svhn", root=str(tmp_path))
    assert str(path) in assert_one_paragraph(info.value)


# --- digits and synthetic --------------------------------------------------------------------------


def test_digits() -> None:
    ds = load_dataset("digits", root="/nonexistent", download=True)  # both ignored
    assert (ds.name, ds.num_classes, ds.synthetic) == ("digits", 10, False)
    assert ds.train_images.shape == (1437, 3, 32, 32) and ds.test_images.shape == (360, 3, 32, 32)
    assert ds.train_images.dtype == torch.uint8 and ds.train_labels.dtype == torch.int64
    assert int(ds.train_images.max()) == 255 and int(ds.train_images.min()) == 0
    assert torch.equal(ds.train_images[:, 0], ds.train_images[:, 2])  # gray replicated to RGB
    # Stratified: every class in both splits, in proportion.
    assert ds.train_labels.bincount().min() >= 135 and ds.test_labels.bincount().min() >= 34
    again = load_dataset("digits")
    assert torch.equal(ds.test_images, again.test_images) and torch.equal(ds.test_labels, again.test_labels)


def test_digits_val_split() -> None:
    ds = load_dataset("digits", val_size=137)
    assert ds.train_images.shape[0] == 1300 and ds.val_images.shape[0] == 137


def test_synthetic() -> None:
    ds = load_dataset("synthetic", train_size=64, test_size=16, num_classes=5, root=None, normalize=True)
    assert ds.synthetic is True and (ds.name, ds.num_classes) == ("synthetic", 5)
    assert ds.train_images.shape == (64, 3, 32, 32) and ds.test_images.shape == (16, 3, 32, 32)
    assert ds.train_images.dtype == torch.uint8 and ds.train_labels.dtype == torch.int64
    assert int(ds.train_labels.min()) >= 0 and int(ds.train_labels.max()) < 5
    torch.manual_seed(123)  # must not matter
    again = load_dataset("synthetic", train_size=64, test_size=16, num_classes=5)
    assert torch.equal(ds.train_images, again.train_images) and torch.equal(ds.test_labels, again.test_labels)


def test_synthetic_defaults_and_bad_option() -> None:
    ds = DATASETS["synthetic"]()
    assert ds.train_images.shape[0] == 50_000 and ds.test_images.shape[0] == 10_000 and ds.num_classes == 10
    with pytest.raises(CnnbenchError, match="train_size"):
        load_dataset("synthetic", train_size=0)


# --- package structure -----------------------------------------------------------------------------


def test_no_data_module_imports_from_the_package_init() -> None:
    """The loaders import ImageDataset from cnnbench.data.dataset, never a name of the package's __init__
    (which imports the loaders: a cycle). ``from cnnbench.data import <submodule>`` is fine."""
    folder = Path(importlib.import_module("cnnbench.data").__file__).parent
    submodules = {path.stem for path in folder.iterdir()}  # modules (x.py) and subpackages (x/)
    for source in folder.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module == "cnnbench.data" or node.level):
                names = {alias.name for alias in node.names}
                assert node.level == 0 and names <= submodules, (
                    f"{source.name} imports {names} from the package"
                )
