"""The fixed choices of the commands' options, one definition each: the bodies check them, the CLI lists
them in `-h` and Typer refuses anything else. Imports nothing heavy (`cnnbench -h` stays instant)."""

from __future__ import annotations

from enum import Enum

from cnnbench.rundir.weights import WEIGHTS

SPLITS = ("test", "val", "train")
TTA_CHOICES = ("none", "flip")
EVAL_PRECISIONS = ("run", "fp32", "bf16", "fp16")
EXPORT_FORMATS = ("torchscript", "onnx", "state_dict")
LANDSCAPE_PRECISIONS = ("fp32", "bf16")


def choice(name: str, values: tuple[str, ...]) -> type[Enum]:
    """A string Enum of ``values`` for a Typer option (its ``.value`` is the string the body takes)."""
    return Enum(name, {value: value for value in values}, type=str)  # type: ignore[return-value]


Split = choice("Split", SPLITS)
WeightsChoice = choice("WeightsChoice", tuple(WEIGHTS))  # runs.weights.Weights is what each names
Tta = choice("Tta", TTA_CHOICES)
EvalPrecision = choice("EvalPrecision", EVAL_PRECISIONS)
ExportFormat = choice("ExportFormat", EXPORT_FORMATS)
LandscapePrecision = choice("LandscapePrecision", LANDSCAPE_PRECISIONS)
