"""report.png draws every curve its legend names: a run evaluated once shows its test error as a marker."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from cnnbench.reporting.plot import FEW_POINTS, lone_points, report_figure
from cnnbench.reporting.runs import read_record
from cnnbench.reporting.summary import build_rows


def make_run(folder: Path, model: str, train: dict[int, float], test: dict[int, float]) -> Path:
    """A finished run folder: metrics.json, the saved config and the two error curves in TensorBoard."""
    from torch.utils.tensorboard import SummaryWriter

    folder.mkdir(parents=True)
    last = max(train)
    metrics = {
        "status": "completed", "model": model, "depth": 20, "seed": 0, "iteration": last, "max_iters": last,
        "train_error": train[last], "test_error": test[max(test)], "data": "digits",
    }  # fmt: skip
    (folder / "metrics.json").write_text(json.dumps(metrics))
    config = {
        "model": {"name": model}, "depth": 20, "seed": 0, "data": {"name": "digits"},
        "augment": {"name": "standard"}, "trainer": {"max_iters": last, "batch_size": 32},
    }  # fmt: skip
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    writer = SummaryWriter(log_dir=str(folder))
    for tag, curve in (("error/train", train), ("error/test", test)):
        for step, value in curve.items():
            writer.add_scalar(tag, value, step)
    writer.close()
    return folder


def drawn_lines(*folders: Path) -> dict[tuple[str, str], object]:
    """{(panel title, "train"|"test"): Line2D} of the report figure for these runs."""
    figure = report_figure(build_rows([read_record(f) for f in folders]))
    lines = {}
    for ax in figure.axes:
        for line in ax.get_lines():
            kind = "test" if line.get_linestyle() == "-" else "train"
            assert (ax.get_title(), kind) not in lines
            lines[(ax.get_title(), kind)] = line
    return lines


def shows_every_point(line) -> bool:
    marked = line.get_markevery()
    return line.get_marker() not in (None, "None", "", " ") and (marked is None or marked == 1)


def test_a_single_test_evaluation_is_drawn_with_a_marker(tmp_path: Path) -> None:
    train = {step: 0.9 - step / 250 for step in range(10, 210, 10)}  # 20 logging points
    once = make_run(tmp_path / "once", "plain", train, test={200: 0.3})
    often = make_run(tmp_path / "often", "resnet", train, test={s: 0.8 - s / 400 for s in range(40, 240, 40)})
    lines = drawn_lines(once, often)

    single = lines[("plain", "test")]
    assert len(single.get_xdata()) == 1
    assert shows_every_point(single), "a lone point without a marker is invisible"
    # Curves of many points keep their plain line (no marker for the first configuration of a depth).
    assert lines[("plain", "train")].get_marker() in (None, "None")
    assert lines[("resnet", "test")].get_marker() in (None, "None")
    assert lines[("resnet", "train")].get_marker() in (None, "None")


def test_curves_of_a_few_points_mark_each_point(tmp_path: Path) -> None:
    few = {100: 0.5, 200: 0.4, 300: 0.3}
    assert len(few) == FEW_POINTS
    lines = drawn_lines(make_run(tmp_path / "run", "plain", train=few, test=few))
    assert shows_every_point(lines[("plain", "train")]) and shows_every_point(lines[("plain", "test")])


@pytest.mark.parametrize(
    ("values", "lone"),
    [
        ([0.3], [0]),
        ([0.3, 0.2], []),
        ([0.5, np.nan, 0.4, 0.3, np.nan, 0.2], [0, 5]),  # points NaN (a diverged run) cut off
        ([np.nan, np.nan], []),
    ],
)
def test_lone_points(values: list[float], lone: list[int]) -> None:
    assert lone_points(np.array(values)) == lone
