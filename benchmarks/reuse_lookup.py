"""How long a job takes to find a run of its identity among many run folders (cnnbench/rundir/index.py).

Creates N fake run folders (default 10,000: 1,000 sweeps of 10 jobs, each with identity.json,
metrics.json and checkpoint.pt) in a temporary folder, then times the cold lookup (the index built from
the run folders) and the warm one (the index there), and the whole decision of a job (``survey``: the
lookup plus each match's metrics.json and run.lock). Prints the machine (lscpu's model name).

    python benchmarks/reuse_lookup.py [--runs 10000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from cnnbench.rundir.identity import IDENTITY_NAME, SCHEME
from cnnbench.rundir.index import runs_with
from cnnbench.rundir.reuse import survey


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return "unknown (no lscpu)"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def fake_runs(root: Path, count: int, per_sweep: int = 10) -> list[str]:
    digests = []
    for n in range(count):
        run_dir = root / "multirun" / f"sweep{n // per_sweep:05d}" / f"depth={n % per_sweep}"
        (run_dir / ".hydra").mkdir(parents=True)
        digest = hashlib.sha256(f"run {n}".encode()).hexdigest()
        (run_dir / IDENTITY_NAME).write_text(json.dumps({"identity": digest, "scheme": SCHEME}))
        (run_dir / "metrics.json").write_text(json.dumps({"status": "completed", "elapsed_seconds": 60.0}))
        (run_dir / "checkpoint.pt").write_bytes(b"")
        digests.append(digest)
    return digests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cnnbench-reuse-") as tmp:
        root = Path(tmp)
        digests = fake_runs(root, args.runs)
        target, own = digests[args.runs // 2], root / "new-job"
        start = time.perf_counter()
        found = runs_with(root, target)
        cold = time.perf_counter() - start
        assert len(found) == 1, found
        warm, decide = [], []
        for i in range(args.repeats):
            digest = digests[(i * 7919) % args.runs]
            start = time.perf_counter()
            runs_with(root, digest)
            warm.append(time.perf_counter() - start)
            start = time.perf_counter()
            assert len(survey(root, digest, own).completed) == 1
            decide.append(time.perf_counter() - start)
    print(f"machine: {machine()}")
    print(f"{args.runs} run folders")
    print(f"cold lookup (index built from the run folders): {cold:.2f} s")
    print(f"warm lookup (index there), median of {args.repeats}: {1000 * statistics.median(warm):.2f} ms")
    whole = 1000 * statistics.median(decide)
    print(f"a job's whole decision (lookup + metrics.json + run.lock), median: {whole:.2f} ms")


if __name__ == "__main__":
    main()
