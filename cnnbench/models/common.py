"""Pieces the model families share: He init, option checks with user-facing errors, stochastic depth."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from cnnbench.errors import CnnbenchError
from cnnbench.models.registry import check_depth, get_model_spec


def init_he(model: nn.Module) -> None:
    """He et al. 2015 initialization for convs; BN starts as identity (weight 1, bias 0)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# --- option checks (messages name the option as Hydra spells it: model.<option>) ---


def check_choice(model: str, option: str, value: object, choices: Sequence[str]) -> str:
    if value not in choices:
        raise CnnbenchError(
            f"model.{option}={value!r} is not valid for model {model!r}; use one of {', '.join(choices)} "
            f"(e.g. model.{option}={choices[0]})."
        )
    return str(value)


def check_bool(model: str, option: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise CnnbenchError(
            f"model.{option}={value!r} is not valid for model {model!r}; use true or false "
            f"(e.g. model.{option}=true)."
        )
    return value


def check_int(model: str, option: str, value: object, minimum: int, hint: str = "") -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise CnnbenchError(
            f"model.{option}={value!r} is not valid for model {model!r}: it must be an integer >= {minimum}"
            f"{hint}."
        )
    return value


def check_fraction(
    model: str, option: str, value: object, *, low_open: bool = False, high_open: bool = False, hint: str = ""
) -> float:
    """A number in [0, 1]; ``low_open``/``high_open`` exclude 0 or 1."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = (value > 0 if low_open else value >= 0) and (value < 1 if high_open else value <= 1)
    if not ok:
        interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
        raise CnnbenchError(
            f"model.{option}={value!r} is not valid for model {model!r}: "
            f"it must be a number in {interval}{hint}."
        )
    return float(value)


def check_depth_for_option(
    model: str,
    depth: int,
    is_valid: Callable[[int], bool],
    depth_rule: str,
    example_depths: Iterable[int],
) -> None:
    """Depth check where validity depends on an option (e.g. ``block``), with the registry's error message.

    The registered rule is the union over the option's values; this narrows it to the chosen value.
    """
    spec = dataclasses.replace(
        get_model_spec(model),
        is_valid_depth=is_valid,
        depth_rule=depth_rule,
        example_depths=tuple(example_depths),
        depth_rule_for=None,  # already narrowed by the caller
    )
    check_depth(spec, depth)


# --- stochastic depth (Huang et al. 2016) ---


def check_stochastic_depth(model: str, value: object) -> float:
    return check_fraction(
        model,
        "stochastic_depth",
        value,
        hint=" (the survival probability p_L of the last block; 1.0 turns stochastic depth off, "
        "Huang et al. 2016 use 0.5)",
    )


def linear_decay(num_blocks: int, p_last: float) -> list[float]:
    """Survival probabilities p_l = 1 - l/L (1 - p_L) for blocks l = 1..L (Huang et al. 2016, Eq. 4)."""
    return [1.0 - i / num_blocks * (1.0 - p_last) for i in range(1, num_blocks + 1)]


class ResidualBlock(nn.Module):
    """A block with a residual branch that stochastic depth may drop.

    ``survival_prob`` (p_l) is 1.0 unless ``set_stochastic_depth`` changes it. In training the whole
    branch is skipped with probability 1 - p_l, leaving only the shortcut; as in the paper the draw is
    once per mini-batch (all samples share it), so a dropped branch costs no compute. In evaluation the
    branch is scaled by p_l, its expected contribution during training.
    """

    survival_prob: float = 1.0

    def drop_branch(self) -> bool:
        # Test p_l < 1 first: with stochastic depth off no random number is drawn (seeded runs unchanged).
        return self.training and self.survival_prob < 1.0 and torch.rand(()).item() >= self.survival_prob

    def scale_branch(self, out: torch.Tensor) -> torch.Tensor:
        if self.training or self.survival_prob >= 1.0:
            return out
        return out * self.survival_prob

    def extra_repr(self) -> str:
        return f"survival_prob={self.survival_prob:.4g}" if self.survival_prob < 1.0 else ""


def set_stochastic_depth(model: nn.Module, p_last: float) -> None:
    """Give the model's residual blocks, in forward order, linearly decaying survival probabilities."""
    blocks = [m for m in model.modules() if isinstance(m, ResidualBlock)]
    for block, p in zip(blocks, linear_decay(len(blocks), p_last), strict=True):
        block.survival_prob = p
