"""torch.compile as cnnbench uses it: one mode name for every caller, and training graphs kept static.

Dynamo remembers, per Python function, the input shapes it has seen: once a function (a model class's
``forward``) has been compiled for two batch sizes, every later compile of it marks the batch dimension
dynamic ("automatic dynamic shapes"). Evaluation runs at another batch size than training, and a
notebook, a test or a joblib worker trains several runs in one process, so without care the second run's
training graph would be compiled for any batch size: measured on a 2-vCPU Xeon (model 167, AMX,
max-autotune-no-cudagraphs, bf16), ResNet-56's compiled step ran about 15% slower that way
(docs/performance.md). So a training graph is compiled for its static shapes (``dynamic=False``), and a
run that compiles starts from a fresh Dynamo (``fresh_compiler``): graphs of earlier runs in the process
neither shape its choices nor count against Dynamo's recompile limit.
"""

from __future__ import annotations

import torch


def compile_module(module: torch.nn.Module, mode: str, *, static_shapes: bool = False) -> torch.nn.Module:
    """``torch.compile(module)`` in ``mode`` (``"default"``: torch's own default). ``static_shapes``:
    compile for the shapes of the calls only, never marking a dimension dynamic (training steps, whose
    batches all have one shape)."""
    options: dict[str, object] = {} if mode == "default" else {"mode": mode}
    if static_shapes:
        options["dynamic"] = False
    return torch.compile(module, **options)  # type: ignore[return-value]


def fresh_compiler() -> None:
    """Forget what Dynamo compiled and observed earlier in this process (the graphs and the shapes seen);
    modules compiled before are compiled again on their next call."""
    torch._dynamo.reset()
