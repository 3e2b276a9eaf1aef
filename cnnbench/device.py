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


def cpu_has_native_bf16() -> bool:
    """x86 CPUs with AVX512-BF16 or AMX: oneDNN runs bf16 convolutions natively, not emulated.

    (``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` is also true on plain AVX512 CPUs, where bf16 is
    emulated and usually slower than fp32, so it is not the test here.)
    """
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` -> bf16 autocast on CUDA GPUs with bf16 and on CPUs with native bf16, fp32 elsewhere.

    On a CPU with AVX512-BF16, bf16 autocast trains ResNet-20/56 (batch 128) 1.3-1.6x faster than fp32
    (measurements in docs/performance.md).
    """
    name = str(name)
    if name not in PRECISIONS:
        raise CnnbenchError(
            f"trainer.precision={name!r} is not a precision; use one of {', '.join(PRECISIONS)}."
        )
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16"
        if device.type == "cpu" and cpu_has_native_bf16():
            return "bf16"
        return "fp32"
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise CnnbenchError(
            "trainer.precision=bf16 but this GPU has no bf16 support; use trainer.precision=fp16 or fp32."
        )
    return name


def autocast(device: torch.device, precision: str) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of autocast contexts for the forward pass (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext
    dtype = _DTYPES[precision]
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


# On the CPU, compiling costs ~30 s and saves ~5% per step (docs/performance.md): it pays off only
# for long runs, and short ones (quick experiments, tests) stay eager.
CPU_COMPILE_MIN_ITERS = 10_000


def resolve_compile(flag: object, device: torch.device, max_iters: int = 0) -> bool:
    """``auto`` -> compile on CUDA, and on the CPU for runs of at least CPU_COMPILE_MIN_ITERS iterations."""
    if flag == "auto":
        return device.type == "cuda" or max_iters >= CPU_COMPILE_MIN_ITERS
    if isinstance(flag, bool):
        return flag
    raise CnnbenchError(f"trainer.compile={flag!r} must be auto, true or false.")
