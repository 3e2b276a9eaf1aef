"""This machine as the fast path sees it: the key its cached answers are stored under (what changes the
answer: the device, the CPU flags that matter, threads, torch, the probe's version) and the candidates
(precision x memory layout) it can run."""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path
from typing import Any

import torch

from cnnbench.fastpath.choice import PROBE_VERSION, candidate_name


def _cpu_info() -> tuple[str, list[str]]:
    name, flags = platform.processor() or platform.machine(), []
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name in ("", platform.machine(), platform.processor()):
                name = value.strip()
            elif key.strip() == "flags":
                wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16")
                flags = sorted(f for f in value.split() if f in wanted)
                break
    return name, flags


def machine_key(device: torch.device) -> dict[str, Any]:
    """What changes the answer: the device, the CPU flags that matter, threads, torch."""
    key: dict[str, Any] = {"torch": torch.__version__, "device": device.type, "probe": PROBE_VERSION}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        key.update(
            gpu=torch.cuda.get_device_name(index), capability=list(torch.cuda.get_device_capability(index))
        )
    else:
        name, flags = _cpu_info()
        key.update(cpu=name, flags=flags, threads=torch.get_num_threads())
    return key


def candidates(device: torch.device) -> list[str]:
    if device.type == "cuda":
        precisions = ["fp32", "fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])
    else:
        # bf16 where oneDNN runs it at all (natively or emulated): only the timing says if it is faster.
        bf16 = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)()
        precisions = ["fp32"] + (["bf16"] if bf16 else [])
    return [candidate_name(p, cl) for p in precisions for cl in (True, False)]
