"""The GPUs this process sees: CUDA_VISIBLE_DEVICES's entries and torch's count."""

from __future__ import annotations

import os


def visible_gpu_ids() -> list[str] | None:
    """The entries of CUDA_VISIBLE_DEVICES (indices or UUIDs), or None when it is not set."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
