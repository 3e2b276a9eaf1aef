"""examples/degradation.ipynb executed headless (nbclient, a real Jupyter kernel), its outputs asserted.

The default suite runs it at reduced size (24 iterations per run, set by injecting a cell after the
notebook's ``parameters`` cell, as papermill does); ``-m slow`` runs it as shipped (500 iterations).
"""

from __future__ import annotations

import base64
from pathlib import Path

import nbformat
import pytest
from data_fixtures import write_cifar10
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell

import cnnbench

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "degradation.ipynb"
LABELS = ("plain-20", "plain-56", "resnet-20", "resnet-56")
REDUCED_ITERS = 24
# Digits, the quick experiment's batch of 64 and lr 0.1, the precision `auto` picks (the suite's probe
# is cached by then). At 24 iterations plain-20 is near 70% training error, plain-56 still at chance
# (~90%): the degradation in its crudest form, with a margin no precision or CPU kernel closes.
REDUCED = {
    "EXTRA": [
        f"trainer.max_iters={REDUCED_ITERS}",
        "trainer.log_every=8",
        "trainer.log_grad_every=8",
        f"trainer.eval_every={REDUCED_ITERS}",
        f"trainer.ckpt_every={REDUCED_ITERS}",
        "schedule.milestones=[18,22]",
    ],
    "ANALYZE": {"at_init": True, "samples": 64},
    "LANDSCAPE": {"resolution": 3, "samples": 64},
}


def execute(tmp_path: Path, parameters: dict) -> tuple[nbformat.NotebookNode, Path]:
    """Run the notebook in a fresh kernel in ``tmp_path``, with ``parameters`` injected."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    at = next(i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", []))
    sweep_dir = tmp_path / "sweep"
    values = {**parameters, "SWEEP_DIR": str(sweep_dir), "TENSORBOARD": False}
    injected = "\n".join(f"{name} = {value!r}" for name, value in values.items())
    nb.cells.insert(at + 1, new_code_cell(injected, metadata={"tags": ["injected-parameters"]}))
    NotebookClient(
        nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    return nb, sweep_dir


def cell(nb: nbformat.NotebookNode, starts: str) -> nbformat.NotebookNode:
    (found,) = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith(starts)]
    return found


def shown_png(code_cell: nbformat.NotebookNode) -> bytes:
    (result,) = [o for o in code_cell.outputs if o.output_type == "execute_result"]
    return base64.b64decode(result.data["image/png"])


def check_outputs(nb: nbformat.NotebookNode, sweep_dir: Path, iters: int) -> None:
    # The runs on disk: four completed runs, and the degradation.
    runs = {f"{r.metrics['model']}-{r.metrics['depth']}": r for r in cnnbench.load(sweep_dir)}
    assert sorted(runs) == sorted(LABELS)
    assert all(r.status == "completed" and r.metrics["iteration"] == iters for r in runs.values())
    assert runs["plain-56"].metrics["train_error"] > runs["plain-20"].metrics["train_error"]

    # Progress: one bar per run, updated in place to its end; no scroll of progress lines.
    sweep_cell = cell(nb, "sweep = cnnbench.sweep(")
    # (The sweep's report, printed when it ends, shows as HTML too: not a bar.)
    bars = [
        o
        for o in sweep_cell.outputs
        if o.output_type == "display_data" and "<progress" in o.data.get("text/html", "")
    ]
    assert [b.data["text/plain"].split(" on ")[0] for b in bars] == list(LABELS)
    for bar in bars:
        assert f"{iters}/{iters}" in bar.data["text/plain"] and "<progress" in bar.data["text/html"]
    streamed = "".join(o.get("text", "") for o in sweep_cell.outputs if o.output_type == "stream")
    assert "| ETA" not in streamed and streamed.count("Done: train error") == 4

    # The figures show inline (PNG), the table has the four rows, the printed comparison agrees.
    for starts in ("report = ", "analysis = ", "# The gradient flow", "landscape = "):
        assert shown_png(cell(nb, starts)).startswith(b"\x89PNG\r\n\x1a\n"), starts
    (table,) = [o for o in cell(nb, "table = ").outputs if o.output_type == "execute_result"]
    body = table.data["text/html"].split("<tbody>")[1]
    assert body.count("<tr>") == 4 and all(f"<td>{m}</td>" in body for m in ("plain", "resnet"))
    printed = "".join(o.get("text", "") for o in cell(nb, "train_error = ").outputs)
    assert "degradation (plain-56 trains worse than plain-20): True" in printed
    assert (sweep_dir / "landscape.csv").is_file() and (sweep_dir / "landscape.png").is_file()


def test_the_notebook_runs_the_degradation_experiment_at_reduced_size(tmp_path: Path) -> None:
    nb, sweep_dir = execute(tmp_path, REDUCED)
    check_outputs(nb, sweep_dir, REDUCED_ITERS)


@pytest.mark.slow
def test_the_notebook_as_shipped(tmp_path: Path) -> None:
    nb, sweep_dir = execute(tmp_path, {})
    check_outputs(nb, sweep_dir, 500)


@pytest.mark.slow
def test_the_parameters_cell_switches_to_the_papers_cifar10_experiment(tmp_path: Path, monkeypatch) -> None:
    # A small CIFAR-format folder where the data root defaults to ($CNNBENCH_DATA): only EXPERIMENT
    # changes, and the reduced size (CIFAR-10's 64k iterations are a GPU's job).
    write_cifar10(tmp_path / "data", n_per_batch=40, n_test=40)
    monkeypatch.setenv("CNNBENCH_DATA", str(tmp_path / "data"))
    iters = 4
    nb, sweep_dir = execute(
        tmp_path,
        {
            "EXPERIMENT": "degradation",
            "EXTRA": [f"trainer.max_iters={iters}", "trainer.batch_size=32", "schedule.milestones=[2,3]",
                      f"trainer.eval_every={iters}", "trainer.log_every=2", "trainer.log_grad_every=2"],
            "ANALYZE": {"samples": 16},
            "LANDSCAPE": {"resolution": 3, "samples": 32},
        },
    )  # fmt: skip
    runs = list(cnnbench.load(sweep_dir))
    assert len(runs) == 4 and all(r.status == "completed" and r.config.data.name == "cifar10" for r in runs)
    assert all(r.metrics["iteration"] == iters for r in runs)
    (table,) = [o for o in cell(nb, "table = ").outputs if o.output_type == "execute_result"]
    assert "8.75" in table.data["text/html"] and "6.97" in table.data["text/html"]  # Table 6: ResNet-20/56
    for starts in ("report = ", "analysis = ", "# The gradient flow", "landscape = "):
        assert shown_png(cell(nb, starts)).startswith(b"\x89PNG\r\n\x1a\n"), starts
