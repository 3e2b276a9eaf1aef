"""`cnnbench bench`: throughput of the real training loop, its overhead, memory, and a classic baseline.

What is measured, for the composed config (model, depth, batch size, precision, device, compile):

- ``train``: the engine's ``TrainStep`` back to back (sampling, on-device augmentation, forward,
  backward, optimizer step, device-side accumulators), synchronized only at the end of each window;
- ``pure``: forward + backward + optimizer step alone, on one resident, already augmented batch, with
  the same model, optimizer, precision and memory format; the loop overhead is
  ``train step time / pure step time - 1``;
- ``input``: the sampler and the augmentation alone (the part of the overhead that is not bookkeeping);
- ``grad_norm``: one gradient-flow measurement (per-stage/block gradient and weight norms, read back
  to the host), and its cost amortized over ``trainer.log_grad_every`` steps (% of the train step);
- ``eval``: the engine's ``evaluate`` on (a prefix of) the test set;
- peak memory: ``torch.cuda.max_memory_allocated`` on a GPU, the process's peak RSS on the CPU,
  read before the baseline is built;
- ``other_cpu_pct``: CPU time other processes used during the train/pure windows (% of one core,
  Linux), to tell a slow machine from a busy one;
- ``minimal``: the yardstick, ``cnnbench/commands/minimal_loop.py``: the short loop a skilled user writes
  (its own model definition, data resident on the device, crop and flip on the batch, the same precision
  and layout, the optimizer's fastest implementation), for plain and ResNet nets; ``vs_minimal`` =
  minimal step time / train step time (1.0: as fast as that loop);
- ``baseline``: ``cnnbench/commands/baseline.py`` (PIL + per-sample torchvision transforms + DataLoader
  workers + fp32 NCHW + plain SGD) on the same architecture (same initial weights), the same uint8
  images and the same batch size; ``speedup`` = train img/s / baseline img/s.

Warm-up iterations are excluded. The windows are interleaved (train, pure and minimal loop in a
rotating order, input, eval, baseline; ``repeats`` times) so that load from other processes hits every
measurement alike. Each time and rate is the median over the repeats; the ratios (loop overhead,
``vs_minimal``, ``speedup``) are of those medians, and ``other_cpu_pct`` is over all the train/pure windows.
Without ``iters`` / ``eval_images`` each window lasts about ``window`` seconds, sized from the fastest
warm-up step. Nothing is written to disk.

The protocol is a ``BenchProtocol`` (``bench_protocol.py``); on the command line its options ride along
with the Hydra overrides (``BenchProtocol.from_overrides``): ``bench.iters=N`` (also ``+bench.iters=N``),
``bench.warmup``, ``bench.repeats``, ``bench.window`` (seconds), ``bench.eval_images``. Without a
``data=`` (or ``experiment=``) override the data is ``synthetic`` (CIFAR-sized random images).
"""

from __future__ import annotations

import json
from typing import Any

from cnnbench.commands.bench_display import results_table
from cnnbench.commands.bench_measure import measure
from cnnbench.commands.bench_probe import run_probe as run_probe  # the CLI's entry for --probe
from cnnbench.commands.bench_protocol import BenchProtocol
from cnnbench.commands.bench_protocol import compose_config as compose_config  # read by tests, benchmarks


def run_bench(
    overrides: list[str],
    as_json: bool = False,
    with_baseline: bool = True,
    protocol: BenchProtocol | None = None,
) -> dict[str, Any]:
    """Benchmark the config composed from ``overrides``; print a table (or JSON) and return the results
    (the ``--json`` object).

    ``protocol``: how to time (default ``BenchProtocol()``); ``bench.KEY=VALUE`` in ``overrides`` wins
    over it.
    """
    from rich.console import Console

    protocol, overrides = BenchProtocol.from_overrides(overrides, protocol)
    cfg = compose_config(overrides)
    err = Console(stderr=True, highlight=False)
    with err.status("cnnbench bench") as spinner:

        def status(message: str) -> None:
            if message.startswith("warning"):
                err.print(f"[yellow]{message}[/yellow]")
            spinner.update(f"cnnbench bench: {message}")

        result = measure(cfg, with_baseline=with_baseline, protocol=protocol, status=status)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        Console(highlight=False).print(results_table(result))
    return result.to_dict()
