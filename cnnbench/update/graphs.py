"""The model update as one CUDA graph (``trainer.cuda_graphs``): captured once, replayed every step.

A small net on a fast GPU spends most of a step launching kernels, not running them: ResNet-20's
forward, backward and optimizer step are hundreds of launches of microsecond kernels. A CUDA graph
replays all of them with one launch. ``GraphedUpdate`` captures the whole update (forward, loss,
backward, optimizer step) and keeps it correct:

- **static inputs**: each call copies its batch (and targets) into buffers the graph reads, one
  device-to-device copy each, no host sync;
- **the learning rate** is a device tensor that the (fused) optimizer reads inside the graph; the
  schedule writes each value into it in place (``cnnbench.core.optim.set_lr``), so a new lr never needs a
  new capture;
- **warm-up**: the first ``WARMUP_STEPS`` calls run eagerly on a side stream, as torch.cuda.graph's
  documentation asks: cuDNN picks its algorithms, torch.compile compiles, the optimizer creates its
  momentum buffers. They are real training steps, the same as the eager path's;
- **gradients** are set to None inside the captured update before backward, so backward allocates them
  from the graph's pool; after each replay ``p.grad`` holds that step's gradients (gradient-flow
  logging reads them);
- **autocast** runs with its weight cache off (``device.autocast(cache=False)``).

Not captured: sampling, augmentation and mixing's draws (their generators advance exactly as in an eager
run), the EMA and the loss/error accumulators. The captured tensors are the ones alive at capture time:
load any checkpoint before the first call (``Trainer`` restores before it trains).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

WARMUP_STEPS = 3  # eager updates before the capture (PyTorch's examples use 3; DDP would need 11)

Update = Callable[..., tuple[torch.Tensor, torch.Tensor]]


class GraphedUpdate:
    """``update(*inputs) -> (loss, logits)`` run eagerly ``warmup`` times, then captured and replayed.

    ``inputs`` are device tensors of the same shapes, dtypes and strides at every call (full batches).
    The returned tensors are the graph's static outputs: the next call overwrites them, so read them
    (or accumulate them on the device) before calling again.
    """

    def __init__(self, update: Update, warmup: int = WARMUP_STEPS) -> None:
        self.update = update
        self.warmup = warmup
        self.calls = 0
        self.captures = 0  # how many times a graph was captured (tests: exactly once per run)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_inputs: tuple[torch.Tensor, ...] = ()
        self.static_outputs: tuple[torch.Tensor, torch.Tensor] | None = None
        self._side: torch.cuda.Stream | None = None

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls += 1
        if self.graph is None and self.calls <= self.warmup:
            return self._eager(inputs)
        if self.graph is None:
            self._capture(inputs)
        for static, value in zip(self.static_inputs, inputs, strict=True):
            static.copy_(value, non_blocking=True)
        self.graph.replay()
        return self.static_outputs

    def _eager(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """A warm-up update on a side stream (ordered after and before the current stream's work)."""
        current = torch.cuda.current_stream()
        if self._side is None:
            self._side = torch.cuda.Stream(device=current.device)
        self._side.wait_stream(current)
        with torch.cuda.stream(self._side):
            outputs = self.update(*inputs)
        current.wait_stream(self._side)
        return outputs

    def _capture(self, inputs: tuple[torch.Tensor, ...]) -> None:
        # clone() keeps each input's strides (channels-last stays channels-last), so any compiled
        # forward's guards see the layout it was compiled for.
        self.static_inputs = tuple(value.clone() for value in inputs)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            # Recorded, not run: the replay that follows performs this step's update.
            self.static_outputs = self.update(*self.static_inputs)
        self.graph = graph
        self.captures += 1
