"""Where the Hydra configs live and how a config is checked before any work starts."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def conf_dir() -> Path:
    """The `conf/` folder: inside an installed wheel (cnnbench/conf) or at the top of a source checkout."""
    try:
        packaged = Path(str(resources.files("cnnbench.conf")))
        if (packaged / "config.yaml").is_file():
            return packaged
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parents[2] / "conf"
