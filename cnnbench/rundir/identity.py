"""A run's identity: the fingerprint of everything that decides its result (docs/reuse.md).

Two runs with the same identity train the same network the same way and log the same numbers, so a
finished one stands for the other (``rundir/reuse.py``). The identity is the sha256 of the canonical JSON
(sorted keys) of the resolved task config, less the keys that only say where or how fast a run trains
(``NOT_IDENTITY``), plus ``SCHEME``. ``auto`` settings count as asked (``trainer.precision=auto`` is
"auto"); what they resolved to is env.json's record, shown beside the identity, never hashed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cnnbench.rundir.files import SAVED_CONFIG, write_error, write_json_atomic

IDENTITY_NAME = "identity.json"
# Bumped when cnnbench changes what a given config trains (a model's layers, the data split, the
# schedule's arithmetic): runs of an older scheme then no longer match. Not cnnbench's or torch's version:
# a new release or a new torch changes rounding, not the experiment (env.json records both).
SCHEME = 1
SHORT = 16  # hex digits shown

# Keys that do not change the trained weights or the logged numbers: where the data lives and how it is
# fetched; where and how fast the run trains (device, compile, memory layout, CUDA graphs, the fused
# optimizer: the same arithmetic up to rounding, as `cnnbench resume` already allows them to change);
# the evaluation batch size (BatchNorm in eval mode: per-image results); the checkpoint interval; the
# permission to train slowly; what to do with an existing folder; reuse's own settings; and the model's
# default depth (the trained depth is the top-level `depth`, which is hashed).
NOT_IDENTITY = frozenset(
    {
        "data.root",
        "data.download",
        "data.url",
        "data.md5",
        "data.num_workers",
        "trainer.device",
        "trainer.compile",
        "trainer.compile_mode",
        "trainer.channels_last",
        "trainer.cuda_graphs",
        "trainer.fused_optimizer",
        "trainer.eval_batch_size",
        "trainer.ckpt_every",
        "trainer.allow_slow_precision",
        "trainer.resume",
        "model.default_depth",
    }
)
NOT_IDENTITY_SECTIONS = ("hydra", "reuse")


@dataclass(frozen=True)
class Identity:
    """A run's fingerprint (``digest``: 64 hex digits) and the settings it was computed from."""

    digest: str
    settings: dict[str, Any]

    @property
    def short(self) -> str:
        return self.digest[:SHORT]

    def record(self) -> dict[str, Any]:
        """identity.json's content."""
        return {
            "identity": self.digest,
            "short": self.short,
            "scheme": SCHEME,
            "computed": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, Mapping):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): tree}


def _canonical(value: Any) -> Any:
    """One spelling per value: 1.0 and 1 are the same learning rate, tuples are lists."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def identity_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The dotted keys and values that make up a run's identity, from a resolved config (plain dicts)."""
    flat = _flatten({k: v for k, v in config.items() if k not in NOT_IDENTITY_SECTIONS})
    return {key: _canonical(value) for key, value in sorted(flat.items()) if key not in NOT_IDENTITY}


def identity_of_settings(settings: Mapping[str, Any]) -> Identity:
    text = json.dumps({"scheme": SCHEME, "settings": settings}, sort_keys=True, separators=(",", ":"))
    return Identity(hashlib.sha256(text.encode()).hexdigest(), dict(settings))


def identity_of(config: Any) -> Identity:
    """The identity of a composed config (a DictConfig, with or without its ``hydra`` section, or a
    resolved mapping)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(
            OmegaConf.create({k: config[k] for k in config if k not in NOT_IDENTITY_SECTIONS}), resolve=True
        )
    return identity_of_settings(identity_settings(config))


def write_identity(run_dir: Path, identity: Identity) -> None:
    """identity.json: the digest only (a few hundred bytes); the settings behind it are the saved config's.
    A file that cannot be written is the one-paragraph refusal (exit 75 when there is no room)."""
    path = Path(run_dir) / IDENTITY_NAME
    try:
        write_json_atomic(path, identity.record())
    except OSError as exc:
        raise write_error(
            path,
            exc,
            "The run did not start; nothing was trained.",
            f"Make {run_dir} writable by this user, or train into another folder.",
        ) from None


def recorded_identity(run_dir: Path) -> str | None:
    """identity.json's digest, if the run wrote one (of this scheme)."""
    try:
        data = json.loads((Path(run_dir) / IDENTITY_NAME).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("scheme") != SCHEME:
        return None
    digest = data.get("identity")
    return digest if isinstance(digest, str) else None


def run_identity(run_dir: Path) -> str | None:
    """A run folder's identity: identity.json's, else computed from .hydra/config.yaml (runs of older
    cnnbench versions); None when neither can be read."""
    digest = recorded_identity(run_dir)
    if digest is not None:
        return digest
    path = Path(run_dir) / SAVED_CONFIG
    if not path.is_file():
        return None
    try:
        from omegaconf import OmegaConf

        loaded = OmegaConf.load(path)
        return identity_of(loaded).digest
    except Exception:  # an unreadable or unresolvable saved config: no identity, never a wrong one
        return None
