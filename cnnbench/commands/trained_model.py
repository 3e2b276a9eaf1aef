"""The trained network of a run folder, ready to use: what ``cnnbench.Run.model()`` returns."""

from __future__ import annotations

from pathlib import Path

import torch

from cnnbench.engine.trained import load_trained
from cnnbench.rundir.weights import chosen_weights


def trained_model(run_dir: Path, device: str = "cpu", weights: str = "last") -> torch.nn.Module:
    """The run's network in eval mode on ``device``, with ``weights``: last, best (best.pt) or ema."""
    chosen = chosen_weights(run_dir, weights, option="weights=")
    return load_trained(
        run_dir, device=device, checkpoint_name=chosen.checkpoint_name, state_key=chosen.state_key
    ).model
