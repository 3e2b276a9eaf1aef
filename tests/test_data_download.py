"""Dataset downloads: one fetch per data root across parallel jobs, clean restarts, mirrors, `cnnbench data`.

Fully offline: the archive is a tiny CIFAR-10 folder (tests/data_fixtures.py) served from 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import http.server
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from data_fixtures import write_cifar10

from cnnbench.data import load_dataset
from cnnbench.data.download import TIMEOUT_S
from cnnbench.errors import CnnbenchError

FOLDER = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"


@pytest.fixture
def archive(tmp_path: Path) -> tuple[Path, str]:
    """A CIFAR-10-format .tar.gz (seeded) and its MD5."""
    src = tmp_path / "src"
    write_cifar10(src, n_per_batch=10, n_test=10, seed=0)
    path = tmp_path / "serve" / "c10.tar.gz"
    path.parent.mkdir()
    with tarfile.open(path, "w:gz") as tar:
        tar.add(src / FOLDER, arcname=FOLDER)
    return path, hashlib.md5(path.read_bytes()).hexdigest()


@dataclass
class Served:
    """The archive served from 127.0.0.1: its URL, the paths of the GET requests, and ``ready``, which the
    server waits for before it sends the archive (a test that needs its jobs to overlap sets it)."""

    url: str
    gets: list[str] = field(default_factory=list)
    ready: Callable[[], bool] = lambda: True


@pytest.fixture
def server(archive: tuple[Path, str]) -> Iterator[Served]:
    path, _ = archive
    served = Served("")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            served.gets.append(self.path)
            # Within the client's read timeout: if ``ready`` never comes, the test fails on what it
            # checks rather than on a timed-out download.
            deadline = time.monotonic() + TIMEOUT_S / 2
            while not served.ready() and time.monotonic() < deadline:
                time.sleep(0.01)
            body = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    served.url = f"http://127.0.0.1:{httpd.server_address[1]}/c10.tar.gz"
    try:
        yield served
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.endswith((".tmp", ".part")))


def test_parallel_jobs_download_once(tmp_path: Path, server: Served, archive) -> None:
    """Three jobs at once: the first to take the lock downloads, and the server holds the archive back
    until the other two have said that they wait for it, so the three overlap however slowly they start."""
    _, md5 = archive
    root = tmp_path / "data"
    code = (
        "import sys; from cnnbench.data import load_dataset; "
        "ds = load_dataset('cifar10', root=sys.argv[1], download=True, url=sys.argv[2], md5=sys.argv[3]); "
        "print(len(ds.train_labels))"
    )
    errs = [tmp_path / f"job{i}.err" for i in range(3)]
    waiting = "Waiting for another job's download"

    def waiters() -> int:
        return sum(waiting in err.read_text() for err in errs if err.exists())

    server.ready = lambda: waiters() == 2
    jobs = []
    for err in errs:
        with err.open("w") as stderr:
            jobs.append(
                subprocess.Popen(
                    [sys.executable, "-c", code, str(root), server.url, md5],
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    text=True,
                )
            )
    outs = [job.communicate(timeout=120)[0] for job in jobs]
    outputs = [(out, err.read_text()) for out, err in zip(outs, errs, strict=True)]
    assert [job.returncode for job in jobs] == [0, 0, 0], outputs
    assert [out.strip() for out in outs] == ["50", "50", "50"]
    assert server.gets == ["/c10.tar.gz"]  # fetched once
    assert waiters() == 2, outputs  # while the third downloaded
    assert (root / FOLDER).is_dir() and (root / ARCHIVE).is_file()
    assert _leftovers(root) == []


def test_interrupted_download_and_extraction_start_over(tmp_path: Path, server: Served, archive) -> None:
    url, gets = server.url, server.gets
    _, md5 = archive
    root = tmp_path / "data"
    root.mkdir()
    # What a killed job leaves: a half-extracted temporary folder, a partial download and a partial archive
    # under the final name (as older versions wrote it).
    half = root / f".{FOLDER}.abc123.tmp" / FOLDER
    half.mkdir(parents=True)
    (half / "data_batch_1").write_bytes(b"\x80\x02half")
    (root / f".{ARCHIVE}.xyz.part").write_bytes(b"partial")
    (root / ARCHIVE).write_bytes(archive[0].read_bytes()[:100])
    ds = load_dataset("cifar10", root=str(root), download=True, url=url, md5=md5)
    assert len(ds.train_labels) == 50
    assert gets == ["/c10.tar.gz"]
    assert _leftovers(root) == []
    assert hashlib.md5((root / ARCHIVE).read_bytes()).hexdigest() == md5
    # A complete archive but no folder (extraction interrupted before the rename): extracted, not fetched.
    import shutil

    shutil.rmtree(root / FOLDER)
    load_dataset("cifar10", root=str(root), download=True, url=url, md5=md5)
    assert gets == ["/c10.tar.gz"]


def test_file_mirror_and_local_path_from_environment(tmp_path: Path, archive, monkeypatch) -> None:
    path, md5 = archive
    monkeypatch.setenv("CNNBENCH_CIFAR10_URL", path.as_uri())
    monkeypatch.setenv("CNNBENCH_CIFAR10_MD5", md5)
    assert len(load_dataset("cifar10", root=str(tmp_path / "a"), download=True).test_labels) == 10
    monkeypatch.setenv("CNNBENCH_CIFAR10_URL", str(path))  # a plain path is copied too
    assert len(load_dataset("cifar10", root=str(tmp_path / "b"), download=True).test_labels) == 10


def test_checksum_mismatch_keeps_nothing(tmp_path: Path, archive) -> None:
    path, _ = archive
    root = tmp_path / "data"
    with pytest.raises(CnnbenchError, match="has MD5") as info:
        load_dataset("cifar10", root=str(root), download=True, url=str(path), md5="0" * 32)
    assert "\n" not in str(info.value) and "data.md5" in str(info.value)
    assert not (root / ARCHIVE).exists() and not (root / FOLDER).exists() and _leftovers(root) == []


def test_offline_error_names_the_command_and_folder(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = tmp_path / "data"
    with pytest.raises(CnnbenchError) as info:
        load_dataset("cifar10", root=str(root), download=True, url=f"http://127.0.0.1:{port}/x.tar.gz")
    message = str(info.value)
    assert "\n" not in message
    assert "`cnnbench data download cifar10 --root DIR`" in message and str(root / FOLDER) in message
    assert _leftovers(root) == []


def test_verify_names_the_truncated_file(tmp_path: Path, cli, monkeypatch) -> None:
    from cnnbench.commands import data as datacmd

    written = write_cifar10(tmp_path / "data")
    md5s = {f"{FOLDER}/{p.name}": hashlib.md5(p.read_bytes()).hexdigest() for p in written.folder.iterdir()}
    monkeypatch.setattr(datacmd, "published_md5s", lambda name: (md5s, {}))
    result = cli("data", "verify", "cifar10", "--root", str(tmp_path / "data"))
    assert result.exit_code == 0, result.output
    assert "7 file(s) ok" in result.output
    bad = written.folder / "data_batch_3"
    bad.write_bytes(bad.read_bytes()[:1000])
    (written.folder / "test_batch").unlink()
    result = cli("data", "verify", "cifar10", "--root", str(tmp_path / "data"))
    assert result.exit_code == 1
    assert f"bad: {FOLDER}/data_batch_3" in result.output and f"missing: {FOLDER}/test_batch" in result.output
    assert "data_batch_1" not in result.output


def test_list_empty_root_says_how_to_fetch(tmp_path: Path, cli) -> None:
    result = cli("data", "list", "--root", str(tmp_path / "empty"))
    assert result.exit_code == 0
    assert "cnnbench data download cifar10 cifar100 svhn --root" in result.output.replace("\n", " ")
    write_cifar10(tmp_path / "full")
    result = cli("data", "list", "--root", str(tmp_path / "full"))
    assert "cifar10" in result.output and FOLDER in result.output and "KB" in result.output


def test_download_command_with_mirror(tmp_path: Path, cli, archive, monkeypatch) -> None:
    path, md5 = archive
    monkeypatch.setenv("CNNBENCH_CIFAR10_URL", path.as_uri())
    monkeypatch.setenv("CNNBENCH_CIFAR10_MD5", md5)
    result = cli("data", "download", "cifar10", "--root", str(tmp_path / "data"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / FOLDER / "data_batch_5").is_file()
    result = cli("data", "download", "mnist", "--root", str(tmp_path / "data"))
    assert result.exit_code == 2 and "cifar10, cifar100, svhn" in result.output


# ----- archives with unsafe members ---------------------------------------------------------------------
def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    return info


# Each: the bad members (added after a complete CIFAR-10 folder), and what the refusal names.
UNSAFE = {
    "absolute path": ([_member("/OUTSIDE/abs.txt")], "abs.txt"),
    "dot-dot": ([_member(f"{FOLDER}/../../dotdot.txt")], "dotdot.txt"),
    "symlink to an absolute path": ([_member(f"{FOLDER}/passwd", tarfile.SYMTYPE, "/etc/passwd")], "passwd"),
    "symlink outside": ([_member(f"{FOLDER}/up", tarfile.SYMTYPE, "../..")], "up"),
    # Each link alone stays inside; through the first, the second leaves the folder.
    "symlink chain": (
        [
            _member(f"{FOLDER}/here", tarfile.SYMTYPE, ".."),
            _member(f"{FOLDER}/away", tarfile.SYMTYPE, "here/../.."),
        ],
        "away",
    ),
    "hard link outside": ([_member(f"{FOLDER}/hard", tarfile.LNKTYPE, "../outside.txt")], "hard"),
    "device file": ([_member(f"{FOLDER}/null", tarfile.CHRTYPE)], "null"),
    "fifo": ([_member(f"{FOLDER}/pipe", tarfile.FIFOTYPE)], "pipe"),
}


def _archive_with(tmp_path: Path, bad: list[tarfile.TarInfo]) -> Path:
    import io

    src = tmp_path / "src"
    write_cifar10(src, n_per_batch=2, n_test=2, seed=0)
    path = tmp_path / "bad.tar"
    with tarfile.open(path, "w") as tar:
        tar.add(src / FOLDER, arcname=FOLDER)
        for member in bad:
            if member.name.startswith("/OUTSIDE/"):  # an absolute path that would land in this test's folder
                member.name = str(tmp_path / "outside" / Path(member.name).name)
            data = b"written by the archive\n" if member.isreg() else b""
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data) if data else None)
    return path


@pytest.fixture(params=["filter", "no filter"])
def extraction(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both paths: tarfile's data filter, and the member checks of Pythons without it (filter hidden)."""
    if request.param == "no filter":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    return request.param


@pytest.mark.parametrize("case", list(UNSAFE))
def test_an_archive_with_an_unsafe_member_is_refused_and_nothing_is_kept(
    tmp_path: Path, extraction: str, case: str
) -> None:
    from cnnbench.data import download

    bad, named = UNSAFE[case]
    archive = _archive_with(tmp_path, bad)
    root = tmp_path / "root" / "data"
    root.mkdir(parents=True)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p != root)
    with pytest.raises(CnnbenchError, match=rf"unsafe member '[^']*{named}'") as info:
        download.ensure_extracted(
            name="cifar10",
            title="CIFAR-10",
            root=root,
            folder=FOLDER,
            archive=ARCHIVE,
            url=str(archive),
            md5=None,
        )
    message = str(info.value)
    assert "\n" not in message and "official archive" in message
    assert not (root / FOLDER).exists() and _leftovers(root) == []
    # Nothing landed anywhere else either: the only new files are the copied archive and the lock file.
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p != root)
    new = {str(p) for p in set(after) - set(before)}
    assert new == {f"root/data/{ARCHIVE}", "root/data/.cifar10.lock"}, new


def test_a_safe_archive_extracts_on_both_paths(tmp_path: Path, extraction: str) -> None:
    from cnnbench.data import download

    ok = _member(f"{FOLDER}/notes/readme.txt")
    inside = _member(f"{FOLDER}/notes/latest", tarfile.SYMTYPE, "readme.txt")
    ok.mode = 0o4777  # setuid and writable by all: dropped, as the data filter does
    archive = _archive_with(tmp_path, [ok, inside])
    root = tmp_path / "data"
    folder = download.ensure_extracted(
        name="cifar10",
        title="CIFAR-10",
        root=root,
        folder=FOLDER,
        archive=ARCHIVE,
        url=str(archive),
        md5=None,
    )
    assert (folder / "notes" / "latest").read_text() == "written by the archive\n"
    assert (folder / "notes" / "readme.txt").stat().st_mode & 0o7022 == 0
    assert len(load_dataset("cifar10", root=str(root)).test_labels) == 2
