"""Which saved weights of a run a command reads (``--weights last|best|ema``), and the check that the run
has them, shared by eval, export and the Python API's ``Run.model``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cnnbench.errors import CnnbenchError
from cnnbench.rundir.files import BEST_CHECKPOINT_NAME, CHECKPOINT_NAME


@dataclass(frozen=True)
class Weights:
    """One choice of ``--weights``: which checkpoint file of the run holds them, which weights inside it,
    and what to say when the run has none."""

    name: str
    checkpoint_name: str
    missing: str  # {run} is the run folder
    state_key: str = "model"  # which weights inside the file: the model's, or their EMA

    def path(self, run_dir: Path) -> Path:
        return run_dir / self.checkpoint_name


WEIGHTS: dict[str, Weights] = {
    "last": Weights(
        "last",
        CHECKPOINT_NAME,
        "{run} has no checkpoint.pt, so there are no weights to evaluate: the run stopped before its "
        "first checkpoint (every trainer.ckpt_every iterations, at the end and on Ctrl-C). Continue it "
        "with `cnnbench resume {run}` or train a new run.",
    ),
    "best": Weights(
        "best",
        BEST_CHECKPOINT_NAME,
        "{run} has no best.pt: the weights with the best validation error are kept only by runs trained "
        "with a validation split (e.g. data.val_size=5000), and only after their first evaluation. "
        "Evaluate its last weights with --weights last, or train with data.val_size=N.",
    ),
    "ema": Weights(
        "ema",
        CHECKPOINT_NAME,
        "{run} has no checkpoint.pt, so there are no EMA weights to evaluate. Continue the run with "
        "`cnnbench resume {run}` or train a new one with trainer.ema_decay.",
        state_key="ema",
    ),
}


def check_weights_name(name: str, option: str = "--weights ") -> Weights:
    """The choice called ``name`` (``option`` is how the caller spells the setting, for the message)."""
    if name not in WEIGHTS:
        raise CnnbenchError(f"{option}{name!r} is not valid; use one of {', '.join(WEIGHTS)}.")
    return WEIGHTS[name]


def chosen_weights(run_dir: Path, name: str, option: str = "--weights ") -> Weights:
    """The choice ``name`` for ``run_dir``, with its file there (else a CnnbenchError says what to do)."""
    choice = check_weights_name(name, option)
    if not choice.path(run_dir).is_file():
        raise CnnbenchError(choice.missing.format(run=run_dir))
    return choice
