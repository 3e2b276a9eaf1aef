"""cnnbench from Python (a notebook, a script): train, sweep, open run folders, report.

The same code path as the command line: ``train`` and ``sweep`` launch the same Hydra app through
``commands.launch`` with the same overrides, so the composition, validation, fast path, run folder and
records are those of ``cnnbench train``. Refusals raise ``CnnbenchError`` with the message the CLI
prints; the interpreter lives on (Hydra's global state cleared, the working directory and the logging
set-up as they were).

    import cnnbench
    run = cnnbench.train("model=resnet", "depth=20", "data=digits", "trainer.max_iters=300")
    run.status, run.metrics["test_error"], run.model()
    sweep = cnnbench.sweep("model=plain,resnet", "depth=20,56", "data=digits", "trainer.max_iters=300")
    cnnbench.report(sweep).figure            # Figure 6; .rows: Table 6
    cnnbench.analyze(sweep).figure           # Figure 7: layer responses, gradient norms per layer
    cnnbench.landscape(sweep[2:], resolution=21).figure  # the 56s: the loss along a random direction

In a notebook, training shows one progress bar per run, updated in place, and the figures display inline.
"""

from cnnbench.api.handles import Run, Sweep, load
from cnnbench.api.launching import sweep, train
from cnnbench.api.results import Analysis, Landscape, Report, analyze, landscape, report, runs

__all__ = [
    "Analysis",
    "Landscape",
    "Report",
    "Run",
    "Sweep",
    "analyze",
    "landscape",
    "load",
    "report",
    "runs",
    "sweep",
    "train",
]
