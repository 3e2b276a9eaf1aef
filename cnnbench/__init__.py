"""cnnbench: plain vs residual CNNs on CIFAR, reproducibly.

From Python: ``cnnbench.train(...)``, ``cnnbench.sweep(...)``, ``cnnbench.load(path)``,
``cnnbench.report(...)``, ``cnnbench.runs(...)``, ``cnnbench.analyze(...)``, ``cnnbench.landscape(...)``
(``cnnbench.api``);
refusals raise ``cnnbench.CnnbenchError``.
"""

from typing import Any

from cnnbench.errors import CnnbenchError
from cnnbench.version import __version__

__all__ = [
    "__version__",
    "Analysis",
    "CnnbenchError",
    "Landscape",
    "Report",
    "Run",
    "Sweep",
    "analyze",
    "landscape",
    "load",
    "report",
    "runs",
    "sweep",
    "train",
]


def __getattr__(name: str) -> Any:
    # The API's imports (Hydra, torch) happen on first use: `import cnnbench` stays instant.
    if name in __all__:
        from cnnbench import api

        return getattr(api, name)
    raise AttributeError(f"module 'cnnbench' has no attribute {name!r}")
