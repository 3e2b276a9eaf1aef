"""What `cnnbench bench` is asked: its protocol options (``bench.*``, beside the Hydra overrides) and the
composed config (``data=synthetic`` unless the data is chosen)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cnnbench.errors import CnnbenchError

BENCH_OPTIONS = {"iters": int, "warmup": int, "repeats": int, "window": float, "eval_images": int}
DEFAULT_WARMUP = 3
DEFAULT_REPEATS = 5
DEFAULT_WINDOW = 2.0  # seconds per timed window when iters / eval_images are not given


def split_bench_options(overrides: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """Separate ``bench.KEY=VALUE`` (or ``+bench.KEY=VALUE``) from the Hydra overrides."""
    rest: list[str] = []
    options: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.lstrip("+").partition("=")
        if not key.startswith("bench."):
            rest.append(item)
            continue
        name = key[len("bench.") :]
        kind = BENCH_OPTIONS.get(name)
        if kind is None or not sep:
            raise CnnbenchError(
                f"{item!r} is not a bench option; use bench.KEY=VALUE with KEY one of "
                f"{', '.join(BENCH_OPTIONS)} (e.g. bench.iters=20 bench.repeats=5)."
            )
        try:
            options[name] = kind(value)
        except ValueError:
            raise CnnbenchError(
                f"{item!r}: bench.{name} must be {'an integer' if kind is int else 'a number'}."
            ) from None
    return rest, options


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


def check_options(iters: int | None, warmup: int, repeats: int, window: float, eval_images: int | None):
    for name, value, minimum in (("warmup", warmup, 1), ("repeats", repeats, 1)):
        if value < minimum:
            raise CnnbenchError(f"bench.{name}={value} must be at least {minimum}.")
    for name, value in (("iters", iters), ("eval_images", eval_images)):
        if value is not None and value < 1:
            raise CnnbenchError(f"bench.{name}={value} must be a positive integer (or left out: auto).")
    if not window > 0:
        raise CnnbenchError(f"bench.window={window} must be a positive number of seconds.")
