"""What `cnnbench bench` is asked: its protocol options (``bench.*``, beside the Hydra overrides) and the
composed config (``data=synthetic`` unless the data is chosen)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from cnnbench.errors import CnnbenchError

# The protocol's options and how their values parse (``bench.KEY=VALUE``).
OPTION_TYPES = {"iters": int, "warmup": int, "repeats": int, "window": float, "eval_images": int}


def _given(name: str, value: object) -> str:
    """A protocol value as the user may have given it: the option, or its ``bench.KEY`` override."""
    return f"--{name.replace('_', '-')} {value} (bench.{name}={value})"


@dataclass(frozen=True)
class BenchProtocol:
    """How `cnnbench bench` times: ``warmup`` untimed steps of each kind, then ``repeats`` interleaved
    rounds of ``iters`` iterations (None: sized to ~``window`` seconds) and an evaluation of
    ``eval_images`` test images (None: sized to ~``window`` seconds). Checked when made."""

    iters: int | None = None
    warmup: int = 3
    repeats: int = 5
    window: float = 2.0  # seconds per timed window when iters / eval_images are not given
    eval_images: int | None = None

    def __post_init__(self) -> None:
        for name, value, minimum in (("warmup", self.warmup, 1), ("repeats", self.repeats, 1)):
            if value < minimum:
                raise CnnbenchError(f"{_given(name, value)} must be at least {minimum}.")
        for name, value in (("iters", self.iters), ("eval_images", self.eval_images)):
            if value is not None and value < 1:
                raise CnnbenchError(f"{_given(name, value)} must be a positive integer (or left out: auto).")
        if not self.window > 0:
            raise CnnbenchError(f"{_given('window', self.window)} must be a positive number of seconds.")

    @classmethod
    def from_overrides(
        cls, overrides: Sequence[str], base: BenchProtocol | None = None
    ) -> tuple[BenchProtocol, list[str]]:
        """``bench.KEY=VALUE`` (or ``+bench.KEY=VALUE``) taken out of the Hydra overrides: the protocol
        (those values over ``base``, by default the defaults) and the overrides left for Hydra."""
        rest: list[str] = []
        options: dict[str, Any] = {}
        for item in overrides:
            key, sep, value = item.lstrip("+").partition("=")
            if not key.startswith("bench."):
                rest.append(item)
                continue
            name = key[len("bench.") :]
            kind = OPTION_TYPES.get(name)
            if kind is None or not sep:
                raise CnnbenchError(
                    f"{item!r} is not a bench option; use bench.KEY=VALUE with KEY one of "
                    f"{', '.join(OPTION_TYPES)} (e.g. bench.iters=20 bench.repeats=5)."
                )
            try:
                options[name] = kind(value)
            except ValueError:
                raise CnnbenchError(
                    f"{item!r}: bench.{name} must be {'an integer' if kind is int else 'a number'}."
                ) from None
        return replace(base or cls(), **options), rest


def compose_config(overrides: Sequence[str]):
    """The composed Hydra config for ``overrides``; ``data=synthetic`` unless data/experiment is set."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from cnnbench.core.overrides import clean_hydra_message, compose, explain_override_problem

    overrides = list(overrides)
    groups = {item.lstrip("+~").partition("=")[0] for item in overrides}
    if not groups & {"data", "experiment"}:
        overrides.insert(0, "data=synthetic")
    try:
        return compose(overrides, job_name="bench")
    except (HydraException, OmegaConfBaseException) as exc:
        raise CnnbenchError(
            explain_override_problem(overrides, "bench")
            or f"{clean_hydra_message(exc)} `cnnbench bench -h` lists the config groups and their choices; "
            f"`cnnbench config` prints every key."
        ) from None
