"""One torch.compile cache for the jobs of a sweep.

Inductor keeps its compiled graphs (the FX graph cache), its autotuning results and Triton's kernels on
disk under ``TORCHINDUCTOR_CACHE_DIR`` (default: ``/tmp/torchinductor_<user>``, one per machine). The
jobs of a sweep run in other processes (joblib workers) or on other machines (SLURM nodes, each with its
own ``/tmp``), and a requeued job may land on a fresh node: each would compile again, and under
``max-autotune`` autotune again, for minutes. So the jobs of a sweep point Inductor at one folder inside
the sweep folder, ``<sweep>/.compile-cache/``: it is where every job can see it, and it goes when the
sweep goes. The first job to compile a graph pays; the others, and any requeue, read it. Jobs compiling
the same graph at the same moment each compile (Inductor writes its entries atomically, so they do not
corrupt each other); different depths are different graphs, but the same convolution shapes share their
autotuning results.

An explicit ``TORCHINDUCTOR_CACHE_DIR`` of the user's own always wins. Single runs keep Inductor's
default.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

ENV = "TORCHINDUCTOR_CACHE_DIR"
SWEEP_CACHE_DIR = ".compile-cache"  # inside the sweep folder

_ours: str | None = None  # the folder this process set (a later sweep in the same process may replace it)


def _inductor_default() -> str | None:
    with contextlib.suppress(Exception):
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir

        return os.path.abspath(default_cache_dir())
    return None


def use_shared_cache(folder: Path) -> Path | None:
    """Point Inductor's on-disk caches at ``folder`` for this process; returns it, or None when the user
    chose a cache folder of their own (``TORCHINDUCTOR_CACHE_DIR``), which is then kept.

    Call it before anything compiles. Inductor reads the variable each time it needs the folder (and
    writes its default there once it has used one, which is not the user's choice); paths it derived
    from an earlier folder are dropped.
    """
    global _ours
    current = os.environ.get(ENV)
    if current and current not in (_ours, _inductor_default()):
        return None
    path = str(folder.resolve())  # created by Inductor when something compiles, not before
    if current == path:
        return folder
    os.environ[ENV] = path
    _ours = path
    if "torch._inductor.utils" in sys.modules:  # already compiled in this process: forget the old folder
        with contextlib.suppress(Exception):
            sys.modules["torch._inductor.utils"].clear_caches()
    return folder
