"""Device, precision and compile choices, resolved once per run from the trainer config."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from cnnbench.errors import CnnbenchError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU. ``cuda`` without a GPU is an error, never a fall-back."""
    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CnnbenchError(
                f"trainer.device={name} but no CUDA GPU is visible to PyTorch (torch {torch.__version__}, "
                f"built for CUDA {torch.version.cuda}). Run on the CPU with trainer.device=cpu (or auto), "
                f"or check the GPU driver and CUDA_VISIBLE_DEVICES."
            )
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise CnnbenchError(f"trainer.device={name!r} is not a device; use auto, cpu, cuda or cuda:N.")


def resolve_precision(name: str, device: torch.device) -> str:
    """Check a precision name against the device; ``auto`` -> bf16 on GPUs with bf16, else fp32.

    Training resolves ``auto`` by measurement instead (``cnnbench.fastpath.resolve``); this rule is the
    measurement-free answer for short uses such as evaluation.
    """
    name = str(name)
    if name not in PRECISIONS:
        raise CnnbenchError(
            f"trainer.precision={name!r} is not a precision; use one of {', '.join(PRECISIONS)}."
        )
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp32"
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise CnnbenchError(
            "trainer.precision=bf16 but this GPU has no bf16 support; use trainer.precision=fp16 or fp32."
        )
    return name


def autocast(
    device: torch.device, precision: str, cache: bool = True
) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of autocast contexts for the forward pass (a no-op for fp32).

    ``cache=False`` for a captured CUDA graph: autocast's cache of low-precision weight copies would be
    captured once and then replayed stale after every optimizer step (torch.cuda.graph's documentation).
    """
    if precision == "fp32":
        return contextlib.nullcontext
    dtype = _DTYPES[precision]
    if not cache:
        return lambda: torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=False)
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


# On the CPU, compiling costs tens of seconds: only runs this long consider it (cnnbench.fastpath.resolve).
CPU_COMPILE_MIN_ITERS = 10_000
# On CUDA, compiled candidates are measured only for runs this long; a compile must also repay its
# measured compilation time over the run (cnnbench.fastpath.choice.choose_variant).
CUDA_COMPILE_MIN_ITERS = 2_000
