"""`cnnbench data download|verify|list`: fetch the datasets ahead of a sweep and check what is on disk.

``verify`` and ``list`` read local files only (they work offline).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cnnbench.data.paths import resolve_root
from cnnbench.errors import CnnbenchError, print_error

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


# ---- the commands, with what they print ------------------------------------------------------------


def download_command(names: list[str], root: str | None, extra: bool = False) -> int:
    """`cnnbench data download`: fetch and check each dataset, printing where it is."""
    for name, where in download(names, root, extra=extra):
        print(f"{name}: ready in {where}")
    return 0


def verify_command(names: list[str], root: str | None) -> int:
    """`cnnbench data verify`: every file checked and listed; 1 with the fix when any is missing or bad."""
    results = verify(names, root)
    bad = 0
    for name, checks in results:
        problems = [c for c in checks if c.state != "ok"]
        bad += len(problems)
        ok = len(checks) - len(problems)
        print(f"{name}: {ok} file(s) ok" + (f", {len(problems)} missing or bad:" if problems else ""))
        for check in problems:
            print(f"  {check.state}: {check.relpath} ({check.detail})")
    if bad:
        again = " ".join(n for n, _ in results) + (f" --root {root}" if root else "")
        print_error(
            f"{bad} file(s) missing or bad (listed above). Delete them (for CIFAR, the whole folder) and run "
            f"`cnnbench data download {again}` to fetch them again."
        )
        return 1
    return 0


def list_command(root: str | None) -> int:
    """`cnnbench data list`: the data root and each dataset's folders, files and archives with sizes."""
    base, found = listing(root)
    print(f"Data root: {base}")
    if not found:
        print(empty_root_hint(base))
    for name, path, size in found:
        print(f"  {name:<9} {human(size):>9}  {path}")
    return 0
