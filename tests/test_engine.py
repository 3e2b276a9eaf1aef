"""The engine's units: bench times the step training runs, memory layout, scoped compile fallback,
no import cycles, and the experiment-without-sweep trap."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY

import cnnbench

PACKAGE = Path(cnnbench.__file__).resolve().parent
# The `config -m` list launcher: a Hydra plugin package beside cnnbench, held to the same layers.
PLUGINS = PACKAGE.parent / "hydra_plugins"
LIST_LAUNCHER = "hydra_plugins.cnnbench_list_launcher"


def _compose(*overrides: str):
    from cnnbench.commands.bench import compose_config

    return compose_config(list(overrides))


@pytest.fixture
def counted_step(monkeypatch):
    """Count the calls of TrainStep.__call__ (the loop's iteration) and TrainStep.update (the model step)."""
    from cnnbench.engine.step import TrainStep

    calls = {"step": 0, "update": 0}
    step, update = TrainStep.__call__, TrainStep.update

    def counting_step(self, iteration):
        calls["step"] += 1
        return step(self, iteration)

    def counting_update(self, images, labels):
        calls["update"] += 1
        return update(self, images, labels)

    monkeypatch.setattr(TrainStep, "__call__", counting_step)
    monkeypatch.setattr(TrainStep, "update", counting_update)
    return calls


def test_bench_times_the_step_that_training_runs(counted_step, tmp_path, monkeypatch):
    from cnnbench.commands.bench import run_bench
    from cnnbench.engine.trainer import run

    monkeypatch.chdir(tmp_path)
    run(_compose(*TINY, "trainer.max_iters=7"), tmp_path / "run")
    assert counted_step == {"step": 7, "update": 7}

    counted_step.update(step=0, update=0)
    bench_cfg = [*TINY, "trainer.compile=false", "bench.iters=2", "bench.warmup=1", "bench.repeats=2"]
    result = run_bench(bench_cfg, as_json=True, with_baseline=False)
    # warm-up 1 + 2 repeats x 2 timed iterations, through TrainStep.__call__; the pure step is
    # TrainStep.update alone (1 warm-up + 2 x 2 timed) on top of the updates inside those calls.
    assert counted_step["step"] == 1 + 2 * 2
    assert counted_step["update"] == counted_step["step"] + 1 + 2 * 2
    assert result["iters"] == 2


@pytest.mark.parametrize("channels_last", [True, False])
def test_batches_come_in_the_models_memory_layout(channels_last):
    from cnnbench.engine.parts import build_parts

    parts = build_parts(_compose(*TINY, f"trainer.channels_last={str(channels_last).lower()}"))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    images, _ = parts.batches.next()
    batch = parts.augment(images)
    assert batch.is_contiguous(memory_format=fmt)
    assert parts.augment.normalize(images).is_contiguous(memory_format=fmt)
    conv = next(m for m in parts.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=fmt)
    if not channels_last:  # NCHW strides, not merely "also contiguous" for an ambiguous shape
        assert not batch.is_contiguous(memory_format=torch.channels_last)


def test_compile_fallback_is_scoped_to_the_run():
    import torch._dynamo

    from cnnbench.engine.parts import build_parts

    parts = build_parts(_compose(*TINY))  # compile=auto: eager for a 20-iteration CPU run
    assert parts.cfg.trainer.compile == "auto" and not parts.fast_path.compile
    before = torch._dynamo.config.suppress_errors
    compiled = dataclasses.replace(parts.fast_path, compile=True)
    auto_compiled = dataclasses.replace(parts, fast_path=compiled)  # as compile=auto chooses on a GPU
    with auto_compiled.compile_fallback():
        assert torch._dynamo.config.suppress_errors is True
    assert torch._dynamo.config.suppress_errors == before
    # Not compiled, or compile asked for explicitly (trainer.compile=true): failures must show.
    asked = dataclasses.replace(parts, fast_path=compiled, cfg=_compose(*TINY, "trainer.compile=true"))
    for unchanged in (parts, asked):
        with unchanged.compile_fallback():
            assert torch._dynamo.config.suppress_errors == before


# ----- import structure -----------------------------------------------------------------------------
def _modules() -> list[str]:
    """Every module of the package and of its Hydra plugins except ``__main__`` (the `python -m cnnbench`
    entry point runs the CLI)."""
    names = []
    for path in [*sorted(PACKAGE.rglob("*.py")), *sorted(PLUGINS.rglob("*.py"))]:
        if path.name == "__main__.py":
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _imports(module: str) -> set[str]:
    """cnnbench modules ``module`` imports anywhere (top level or inside functions)."""
    is_package = (PACKAGE.parent / module.replace(".", "/") / "__init__.py").is_file()
    path = PACKAGE.parent / (module.replace(".", "/") + ("/__init__.py" if is_package else ".py"))
    known = set(_modules())
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    # A package's own __init__ importing its submodules is how families register; the other direction
    # (a submodule importing its package's __init__) is what makes a cycle.
    return {m for m in found if m in known and m != module}


def test_no_import_cycles():
    graph = {m: _imports(m) for m in _modules()}
    # Importing `a.b` runs `a/__init__` first: an edge from a submodule to its own package is a cycle
    # whenever that __init__ imports the submodule; the DFS below sees it as one.
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


# The package's layers, bottom up (docs/design.md, "Where things live"): a module imports modules of its
# own layer and of the layers below it, never one above (an engine module never reaches up to a command).
LAYERS = (
    ("cnnbench.version", "cnnbench.errors", "cnnbench.core"),
    ("cnnbench.data", "cnnbench.models", "cnnbench.update"),
    ("cnnbench.rundir", "cnnbench.launchers"),  # launchers: a sweep job's GPU, which the engine asks for
    ("cnnbench.engine", "cnnbench.fastpath"),
    # The list launcher plugin sits beside the commands (commands/launch.py registers it) and imports
    # none of them (test below): it checks jobs with rundir/validate, as the app does.
    ("cnnbench.commands", "cnnbench.reporting", "cnnbench.diagnostics", LIST_LAUNCHER),
    ("cnnbench", "cnnbench.cli", "cnnbench.api", "cnnbench.__main__"),  # `cnnbench`: the API, lazily
)


def _layer(module: str) -> int:
    matches = [
        (len(prefix), level)
        for level, prefixes in enumerate(LAYERS)
        for prefix in prefixes
        if module == prefix or module.startswith(prefix + ".")
    ]
    assert matches, f"{module} belongs to no layer: add it to LAYERS (and to docs/design.md)"
    return max(matches)[1]


def test_no_module_imports_a_layer_above_its_own():
    upward = [
        f"{module} (layer {_layer(module)}) -> {target} (layer {_layer(target)})"
        for module in _modules()
        for target in sorted(_imports(module))
        if _layer(target) > _layer(module)
    ]
    assert not upward, "imports reaching up a layer: " + "; ".join(upward)


def test_the_faces_reach_the_engine_only_through_the_commands():
    # The CLI and the API are options and calls into a command's body (cnnbench/commands/, reporting/,
    # diagnostics/): neither reaches past them into the engine or the fast path.
    direct = [
        f"{module} -> {target}"
        for module in _modules()
        if _layer(module) == len(LAYERS) - 1
        for target in sorted(_imports(module))
        if target.startswith(("cnnbench.engine", "cnnbench.fastpath"))
    ]
    assert not direct, "faces reaching into the engine: " + "; ".join(direct)


def test_the_fast_path_imports_nothing_of_the_engine():
    # Same layer, one direction: the engine builds its parts through the fast path, never the reverse
    # (the update both share lives below them, in cnnbench.update).
    backward = [
        f"{module} -> {target}"
        for module in _modules()
        if module.startswith("cnnbench.fastpath")
        for target in sorted(_imports(module))
        if target == "cnnbench.engine" or target.startswith("cnnbench.engine.")
    ]
    assert not backward, "the fast path imports the engine: " + "; ".join(backward)


def test_the_list_launcher_plugin_imports_no_command():
    # Hydra loads the plugin inside the app's process; reaching back into commands/ would tie the
    # launcher to the command that registers it (a cycle through commands/launch.py).
    plugin = [m for m in _modules() if m.startswith("hydra_plugins.")]
    assert f"{LIST_LAUNCHER}.list_launcher" in plugin
    reach = [f"{m} -> {t}" for m in plugin for t in sorted(_imports(m)) if t.startswith("cnnbench.commands")]
    assert not reach, "the list launcher imports a command: " + "; ".join(reach)


def test_the_layers_test_sees_an_upward_import():
    # The check above can fail: a command module is above every engine module.
    commands, engine, rundir = "cnnbench.commands.app", "cnnbench.engine.trainer", "cnnbench.rundir.files"
    assert _layer(commands) > _layer(engine) > _layer(rundir)
    assert "cnnbench.engine.trainer" in _imports("cnnbench.commands.app")


def test_every_module_imports_alone():
    # One fresh interpreter; each module imported after dropping every cnnbench module loaded before it.
    code = (
        "import importlib, sys\n"
        f"for name in {_modules()!r}:\n"
        "    for loaded in [m for m in sys.modules if m == 'cnnbench' or m.startswith('cnnbench.')]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


# ----- an experiment that carries a sweep ------------------------------------------------------------
def test_a_sweep_experiment_without_multirun_is_refused(cli, tmp_path):
    result = cli("train", "experiment=degradation_quick", "trainer.max_iters=2")
    assert result.exit_code == 2
    assert "is a sweep" in result.output and "cnnbench train -m experiment=degradation_quick" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "outputs").exists()  # refused before Hydra wrote anything


def test_one_job_of_a_sweep_experiment_trains_when_its_swept_keys_are_set(cli, tmp_path):
    result = cli(
        "train",
        "experiment=degradation_quick",
        "model=plain",
        "depth=8",
        "trainer.max_iters=2",
        "trainer.eval_every=2",
        "hydra.run.dir=run",
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "metrics.json").is_file()
