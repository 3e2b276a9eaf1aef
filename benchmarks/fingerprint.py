"""The training fingerprint: final weights and metrics of three small runs, trained through the CLI.

Run it before and after a change that should not change what training computes (a move of modules, a
refactor of the loop) and diff the two outputs: every line must be identical. The numbers depend on the
machine's kernels, so compare outputs of one machine only.

    python benchmarks/fingerprint.py /tmp/fp-before > before.txt   # ... change ...
    python benchmarks/fingerprint.py /tmp/fp-after > after.txt && diff before.txt after.txt
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import torch

# Three families, the mixing/EMA path and another optimizer and schedule; fixed numerics (not `auto`).
CONFIGS = {
    "plain8": ["data=digits", "model=plain", "depth=8"],
    "resnet14_mix": ["data=digits", "model=resnet", "depth=14", "augment.mixup=0.2", "trainer.ema_decay=0.9"],
    "preact_adam": ["data=digits", "model=preact_resnet", "depth=11", "optimizer=adam", "schedule=cosine"],
}
COMMON = [
    "trainer.max_iters=40",
    "trainer.batch_size=32",
    "trainer.eval_every=20",
    "trainer.ckpt_every=20",
    "trainer.precision=fp32",
    "trainer.channels_last=false",
    "trainer.compile=false",
    "data.val_size=100",
]
METRICS = ("iteration", "train_error", "train_loss", "test_error", "test_loss", "best_test_error", "params")


def fingerprint(run_dir: Path) -> str:
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].cpu().numpy().tobytes())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return f"{digest.hexdigest()[:16]} {json.dumps({k: metrics.get(k) for k in METRICS}, sort_keys=True)}"


def main(out: Path) -> int:
    for name, overrides in CONFIGS.items():
        run_dir = out / name
        done = subprocess.run(
            ["cnnbench", "train", *overrides, *COMMON, f"hydra.run.dir={run_dir}"],
            capture_output=True,
            text=True,
        )
        if done.returncode:
            sys.stderr.write(done.stderr[-3000:])
            return done.returncode
        print(name, fingerprint(run_dir), flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1])))
