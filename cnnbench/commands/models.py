"""`cnnbench models`: parameters and FLOPs per model and depth, beside the papers' figures."""

from __future__ import annotations

from cnnbench.errors import CnnbenchError


def parse_depths(depths: str | None) -> list[int] | None:
    """``--depths 20,32,44`` as integers; None (each family's usual depths) when not given."""
    if not depths:
        return None
    try:
        return [int(d) for d in depths.split(",")]
    except ValueError:
        raise CnnbenchError(
            f"--depths {depths!r} must be comma-separated integers, e.g. --depths 20,32,44,56."
        ) from None


def models_command(depths: str | None, model: str | None, flops: bool) -> int:
    """Print the table (a spinner on stderr while the models are built) and the depths left out."""
    from rich.console import Console

    from cnnbench.models.summary import model_table

    wanted = parse_depths(depths)
    with Console(stderr=True).status("Building models...") as spinner:
        counting = lambda label: spinner.update(f"Counting {label}...")  # noqa: E731
        table, skipped = model_table(wanted, only=model, with_flops=flops, progress=counting)
    Console().print(table)
    if skipped:
        print("Skipped, not valid depths of the family (rules above): " + "; ".join(skipped) + ".")
    return 0
