"""What a run asks of the fast path, read once from its config: ``FastPathRequest.from_config``.

The ``trainer`` settings (``auto`` or explicit), what the run can do (a fused optimizer, a captured update),
the device, and what was chosen before (a resumed run's record, a sweep's shared record). Every setting is
checked here, one clear error each, before anything is measured or built; ``resolve.resolve`` turns the
request into the run's ``FastPath``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from cnnbench.core.device import resolve_precision
from cnnbench.core.optim import supports_fused
from cnnbench.errors import CnnbenchError
from cnnbench.fastpath.choice import COMPILE_MODES, CPU_COMPILE_MODE, CUDA_COMPILE_MODE, INDUCTOR_GRAPH_MODES


@dataclass(frozen=True)
class FastPathRequest:
    """One run's question to the fast path. A setting of None is ``auto`` (measured or recorded)."""

    device: torch.device
    precision: str  # auto, fp32, bf16 or fp16 (checked against the device)
    channels_last: bool | None
    compile: bool | None
    cuda_graphs: bool | None
    fused_optimizer: bool | None
    compile_mode: str | None  # a torch.compile mode, None for auto (the device's: ``mode``)
    max_iters: int
    # The optimizer has a fused implementation; the update can be captured (one process, a fused
    # optimizer, no host-side randomness in the model).
    fused_ok: bool = True
    graphs_ok: bool = True
    recorded: Mapping[str, Any] | None = None  # the fast path a resumed run trained with
    sweep_record: Path | None = None  # the sweep's fastpath.json (written by its first job)

    @classmethod
    def from_config(
        cls,
        cfg: DictConfig,
        recorded: Mapping[str, Any] | None = None,
        sweep_record: Path | None = None,
        *,
        device: torch.device,
        distributed: bool = False,
    ) -> FastPathRequest:
        """The request of the run composed as ``cfg`` on ``device`` (``distributed``: under torchrun)."""
        trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
        # Fused needs an optimizer class with a fused implementation; a CUDA graph also one process (DDP's
        # all-reduce hooks would need their own warm-up and capture rules) and a model whose forward makes
        # no host-side choice (stochastic depth flips a coin per batch on the host: a graph would freeze it).
        fused_ok = supports_fused(cfg.optimizer)
        model = OmegaConf.to_container(cfg.model, resolve=True)
        host_random = float(model.get("stochastic_depth", 1.0) or 1.0) < 1.0
        precision = str(trainer.get("precision", "auto"))
        resolve_precision(precision, device)  # names and device support, one clear error
        mode = str(trainer.get("compile_mode", "auto"))
        request = cls(
            device=device,
            precision=precision,
            channels_last=_explicit("channels_last", trainer.get("channels_last", "auto")),
            compile=_explicit("compile", trainer.get("compile", "auto")),
            cuda_graphs=_explicit("cuda_graphs", trainer.get("cuda_graphs", "auto")),
            fused_optimizer=_explicit("fused_optimizer", trainer.get("fused_optimizer", "auto")),
            compile_mode=None if mode == "auto" else _compile_mode(mode),
            max_iters=int(trainer.get("max_iters", 0)),
            fused_ok=fused_ok,
            graphs_ok=fused_ok and not distributed and not host_random,
            recorded=recorded,
            sweep_record=sweep_record,
        )
        request.check()
        return request

    @property
    def mode(self) -> str:
        """The torch.compile mode: the one asked for, or the device's (see CPU_COMPILE_MODE)."""
        if self.compile_mode is not None:
            return self.compile_mode
        return CUDA_COMPILE_MODE if self.device.type == "cuda" else CPU_COMPILE_MODE

    def check(self) -> None:
        """Explicit settings that cannot run together: one clear error each, before anything is built."""
        if self.fused_optimizer and not self.fused_ok:
            raise CnnbenchError(
                "trainer.fused_optimizer=true but the optimizer has no fused implementation; use "
                "optimizer=sgd, adam or adamw, or set trainer.fused_optimizer=auto."
            )
        if not self.cuda_graphs:
            return
        reason = None
        if self.device.type != "cuda":
            reason = "CUDA graphs need a CUDA GPU"
        elif self.fused_optimizer is False:
            reason = "a captured update needs the fused optimizer (trainer.fused_optimizer=false)"
        elif self.precision == "fp16":
            reason = "fp16's GradScaler checks for infinities on the host"
        elif not self.graphs_ok:
            reason = (
                "they need one process (no torchrun), an optimizer with a fused implementation (sgd, adam, "
                "adamw) and a model without stochastic depth (a per-batch coin flip on the host)"
            )
        elif self.compile and self.mode in INDUCTOR_GRAPH_MODES:
            reason = f"trainer.compile_mode={self.mode} already captures Inductor's own CUDA graphs"
        if reason:
            raise CnnbenchError(
                f"trainer.cuda_graphs=true cannot run here: {reason}. Set trainer.cuda_graphs=auto."
            )


def _explicit(key: str, value: Any) -> bool | None:
    """``trainer.<key>``: None for ``auto`` (measure), else the boolean given."""
    if value == "auto":
        return None
    if isinstance(value, bool):
        return value
    raise CnnbenchError(f"trainer.{key}={value!r} must be auto, true or false.")


def _compile_mode(value: str) -> str:
    """``trainer.compile_mode`` other than auto: a torch.compile mode."""
    if value not in COMPILE_MODES:
        raise CnnbenchError(
            f"trainer.compile_mode={value!r} is not a torch.compile mode; use auto or one of "
            f"{', '.join(COMPILE_MODES)}."
        )
    return value
