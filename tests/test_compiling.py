"""Compiled training graphs stay static across runs in one process (cnnbench/core/compiling.py).

Dynamo decides which dimensions are dynamic before any backend runs, so a recording backend (no code
generation) shows the shapes each graph was compiled for, in about a second.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnbench.core.compiling import compile_module, fresh_compiler


class Net(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.fc = nn.Linear(width, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3)))


@pytest.fixture
def compiled_graphs(monkeypatch) -> list[bool]:
    """Whether each graph Dynamo hands to the backend was compiled for dynamic shapes."""
    seen: list[bool] = []

    def backend(gm, example_inputs):
        values = [node.meta.get("example_value") for node in gm.graph.nodes if node.op == "placeholder"]
        shapes = [d for v in values if isinstance(v, torch.Tensor) for d in v.shape]
        seen.append(any(isinstance(v, torch.SymInt) for v in values + shapes))
        return gm.forward

    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: real(model, backend=backend, **kwargs))
    fresh_compiler()
    yield seen
    fresh_compiler()


def _train_then_evaluate(static_training: bool, width: int) -> None:
    """One run: its training step, then an evaluation at another batch size (a deeper net: another width)."""
    torch.manual_seed(0)
    model = Net(width)
    compile_module(model, "default", static_shapes=static_training)(torch.randn(8, 3, 8, 8)).sum().backward()
    with torch.no_grad():
        compile_module(model.eval(), "default")(torch.randn(5, 3, 8, 8))  # evaluation's other batch size


def test_a_later_run_compiles_its_training_step_for_static_shapes(compiled_graphs: list[bool]) -> None:
    _train_then_evaluate(static_training=True, width=4)
    assert compiled_graphs == [False, True]  # training static; evaluation's second batch size: dynamic
    fresh_compiler()  # as build_parts does for each run that compiles
    _train_then_evaluate(static_training=True, width=6)
    assert compiled_graphs[2] is False  # the next run's training graph: static again


def test_without_a_fresh_compiler_the_next_run_would_train_on_a_dynamic_graph(
    compiled_graphs: list[bool],
) -> None:
    # What core/compiling.py prevents: Dynamo's memory of the earlier run marks the batch dimension dynamic.
    _train_then_evaluate(static_training=False, width=4)
    _train_then_evaluate(static_training=False, width=6)
    assert compiled_graphs[0] is False and compiled_graphs[2] is True
