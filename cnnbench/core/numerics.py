"""Which numerics a run trains with: its arithmetic and how many images each BatchNorm normalizes over.

He et al. 2016 computed in fp32 on two GPUs of 64 images each (BatchNorm statistics over 64 images);
cnnbench's defaults are the fast path (bf16 where it pays, the whole batch of 128 per BatchNorm on one
device). ``describe`` names the combination a run used, for env.json, TensorBoard's HParams and the
report, e.g. ``paper (fp32, BN/64)`` or ``fast (bf16, BN/128)``. Imports no torch (the report uses it).
"""

from __future__ import annotations

from typing import Any

PAPER_BN_IMAGES = 64  # 128 images over 2 GPUs


def bn_images(
    batch_size: int, world_size: int = 1, bn_group: int | None = None, sync_bn: bool = False
) -> int:
    """How many images one BatchNorm normalizes over in training mode.

    ``trainer.bn_group`` when set; else the process's share of the batch (the whole global batch with
    SyncBatchNorm).
    """
    if bn_group:
        return int(bn_group)
    if sync_bn and world_size > 1:
        return int(batch_size)
    return int(batch_size) // max(int(world_size), 1)


def arithmetic(precision: str, tf32: bool = False) -> str:
    """``fp32``, ``tf32`` (fp32 with TF32 convolutions: PyTorch's default on Ampere+ GPUs), ``bf16``,
    ``fp16``."""
    return "tf32" if precision == "fp32" and tf32 else str(precision)


def describe(precision: str, images: int, tf32: bool = False, bn_group: int | None = None) -> dict[str, Any]:
    """The record of a run's numerics: name, label and the settings behind them.

    ``paper``: fp32 arithmetic and BatchNorm over 64 images (however reached); ``fast``: the defaults
    (no ``trainer.bn_group``), whatever precision they chose; ``custom``: anything else.
    """
    math = arithmetic(precision, tf32)
    if math == "fp32" and images == PAPER_BN_IMAGES:
        name = "paper"
    elif not bn_group:
        name = "fast"
    else:
        name = "custom"
    return {
        "name": name,
        "label": f"{name} ({math}, BN/{images})",
        "precision": precision,
        "tf32": bool(tf32),
        "bn_images": int(images),
        "bn_group": int(bn_group) if bn_group else None,
    }


def set_tf32(setting: bool | None) -> None:
    """``trainer.tf32``: None leaves PyTorch's flags as they are; True/False sets TF32 for cuDNN convolutions
    and CUDA matmuls (False: true fp32 arithmetic, as in the paper)."""
    if setting is None:
        return
    import torch

    torch.backends.cudnn.allow_tf32 = bool(setting)
    torch.backends.cuda.matmul.allow_tf32 = bool(setting)


def tf32_active(device_type: str, precision: str) -> bool:
    """Whether fp32 convolutions run as TF32 here (CUDA with cuDNN's TF32 allowed, on a GPU that has it)."""
    if device_type != "cuda" or precision != "fp32":
        return False
    import torch

    major, _ = torch.cuda.get_device_capability()
    return bool(torch.backends.cudnn.allow_tf32) and major >= 8
