"""`cnnbench data download|verify|list`: fetch the datasets ahead of a sweep and check what is on disk.

``verify`` and ``list`` read local files only (they work offline).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cnnbench.data.paths import resolve_root
from cnnbench.errors import CnnbenchError

NAMES = ("cifar10", "cifar100", "svhn")


@dataclass
class FileCheck:
    relpath: str  # relative to the data root
    state: str  # ok, missing, bad
    detail: str = ""


def check_names(names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in NAMES]
    if unknown or not names:
        from cnnbench.core.overrides import did_you_mean

        what = f"Unknown dataset {', '.join(map(repr, unknown))}" if unknown else "No dataset named"
        hint = did_you_mean(unknown[0], NAMES).strip() if unknown else ""
        raise CnnbenchError(
            f"{what}{' (' + hint + ')' if hint else ''}: the datasets that can be downloaded are "
            f"{', '.join(NAMES)} (digits ships with "
            f"scikit-learn, synthetic is generated). Run e.g. `cnnbench data download cifar10`."
        )
    return list(dict.fromkeys(names))


def published_md5s(name: str) -> tuple[dict[str, str], dict[str, str]]:
    """(required, optional) files of dataset ``name``: path relative to the data root -> published MD5."""
    if name == "svhn":
        from cnnbench.data.svhn import FILES

        required = {f"svhn/{FILES[s][0]}": FILES[s][1] for s in ("train", "test")}
        return required, {f"svhn/{FILES['extra'][0]}": FILES["extra"][1]}
    # torchvision keeps the per-file checksums the authors published (imported here: slow to import).
    from torchvision.datasets import CIFAR10, CIFAR100

    from cnnbench.data.cifar import CIFAR10 as SPEC10
    from cnnbench.data.cifar import CIFAR100 as SPEC100

    tv, spec = (CIFAR10, SPEC10) if name == "cifar10" else (CIFAR100, SPEC100)
    entries = [*tv.train_list, *tv.test_list, [tv.meta["filename"], tv.meta["md5"]]]
    return {f"{spec.folder}/{file}": md5 for file, md5 in entries}, {}


def archive_of(name: str) -> tuple[str, str] | None:
    """(archive file name, published MD5) of a dataset shipped as an archive."""
    if name == "svhn":
        return None
    from cnnbench.data.cifar import CIFAR10, CIFAR100

    spec = CIFAR10 if name == "cifar10" else CIFAR100
    return spec.archive, spec.md5


def download(names: list[str], root: str | None, extra: bool = False) -> list[tuple[str, Path]]:
    """Fetch each dataset into ``root`` (default: ``data.root``'s default); (name, where) for each."""
    from cnnbench.data import cifar, svhn

    base = resolve_root(root)
    done = []
    for name in check_names(names):
        if name == "svhn":
            for split in ("train", "test", "extra") if extra else ("train", "test"):
                svhn.fetch(base, split)
            done.append((name, base / "svhn"))
        else:
            done.append((name, cifar.fetch(cifar.CIFAR10 if name == "cifar10" else cifar.CIFAR100, base)))
    return done


def verify(names: list[str], root: str | None) -> list[tuple[str, list[FileCheck]]]:
    """Each file of each dataset checked against its published MD5 (optional files only if present)."""
    from cnnbench.data.download import file_md5

    base = resolve_root(root)
    results = []
    for name in check_names(names):
        required, optional = published_md5s(name)
        archive = archive_of(name)
        if archive:
            optional = {**optional, archive[0]: archive[1]}
        checks = []
        for relpath, md5 in {**required, **optional}.items():
            path = base / relpath
            if not path.is_file():
                if relpath in required:
                    checks.append(FileCheck(relpath, "missing", f"{path} does not exist"))
                continue
            got = file_md5(path)
            if got == md5:
                checks.append(FileCheck(relpath, "ok"))
            else:
                size = path.stat().st_size
                checks.append(FileCheck(relpath, "bad", f"MD5 {got}, expected {md5} ({size} bytes)"))
        results.append((name, checks))
    return results


def listing(root: str | None) -> tuple[Path, list[tuple[str, Path, int]]]:
    """(root, [(dataset, path, size in bytes)]) for the dataset folders, files and archives present."""
    base = resolve_root(root)
    found = []
    for name in NAMES:
        required, optional = published_md5s(name)
        archive = archive_of(name)
        top = {relpath.split("/", 1)[0] for relpath in {**required, **optional}}
        if archive:
            top.add(archive[0])
        for entry in sorted(top):
            path = base / entry
            if path.exists():
                found.append((name, path, _size(path)))
    return base, found


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"  # pragma: no cover


def empty_root_hint(base: Path) -> str:
    return (
        f"No datasets in {base}. Fetch them with "
        f"`cnnbench data download cifar10 cifar100 svhn --root {base}` "
        f"(on a machine without network, run that where there is network and copy the folder over), or "
        f"point --root / CNNBENCH_DATA at the folder that holds them. Trainings with data.download=true also "
        f"fetch what they need."
    )
