"""cnnbench report: run folders fabricated in tmp_path -> report.png/.md/.csv and paper numbers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from cnnbench.errors import CnnbenchError
from cnnbench.reporting import CSV_COLUMNS, make_report, paper_reference, print_report
from cnnbench.reporting.plot import mean_curve
from cnnbench.reporting.runs import Curve

MAX_ITERS = 1000


def make_run(
    folder: Path,
    *,
    model: str = "resnet",
    depth: int = 20,
    seed: int = 0,
    status: str = "completed",
    train_error: float | None = 0.05,
    test_error: float | None = 0.10,
    best_test_error: float | None = None,
    message: str | None = None,
    augment: str = "standard",
    lr: float = 0.1,
    device: str = "cpu",
    max_iters: int = MAX_ITERS,
    with_config: bool = True,
    with_tb: bool = False,
) -> Path:
    """A run folder as the trainer writes it: metrics.json, .hydra/config.yaml, TensorBoard scalars."""
    folder.mkdir(parents=True)
    iteration = MAX_ITERS if status == "completed" else MAX_ITERS // 2
    metrics = {
        "status": status, "model": model, "depth": depth, "params": 269722, "iteration": iteration,
        "max_iters": MAX_ITERS, "train_error": train_error, "train_loss": 0.4, "test_error": test_error,
        "test_loss": 0.5, "best_test_error": best_test_error if best_test_error is not None else test_error,
        "best_iteration": iteration, "seed": seed, "data": "cifar10",
    }  # fmt: skip
    if message:
        metrics["message"] = message
    (folder / "metrics.json").write_text(json.dumps(metrics))
    if with_config:
        config = {
            "model": {"name": model, "shortcut": "A"}, "depth": depth, "seed": seed,
            "data": {"name": "cifar10", "root": str(folder / "data"), "download": True, "val_size": 0},
            "augment": {"name": augment, "padding": 4 if augment == "standard" else 0},
            "optimizer": {"name": "sgd", "lr": lr, "momentum": 0.9, "weight_decay": 1e-4},
            "schedule": {"name": "paper", "milestones": [500, 750], "gamma": 0.1},
            "trainer": {"max_iters": max_iters, "batch_size": 128, "device": device, "precision": "auto"},
        }  # fmt: skip
        (folder / ".hydra").mkdir()
        (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    if with_tb:
        write_scalars(folder, iteration, train_error or 0.5, test_error or 0.5)
    return folder


def write_scalars(folder: Path, last: int, final_train: float, final_test: float) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(folder))
    for step in range(0, last + 1, 100):
        decay = 1.0 - step / max(last, 1)  # from 90% error down to the final value
        writer.add_scalar("error/train", final_train + (0.9 - final_train) * decay, step)
        writer.add_scalar("error/test", final_test + (0.9 - final_test) * decay, step)
        writer.add_scalar("lr", 0.1, step)
    writer.close()


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_sweep_of_four_jobs_writes_figure_csv_and_markdown(tmp_path: Path) -> None:
    sweep = tmp_path / "multirun" / "2025-01-01_00-00-00"
    for model in ("plain", "resnet"):
        for depth in (20, 56):
            make_run(sweep / f"depth={depth},model={model},seed=0", model=model, depth=depth, with_tb=True)

    result = make_report([sweep])

    assert result.out == sweep  # one path given: the report goes into it
    from PIL import Image

    with Image.open(result.png) as image:
        image.load()
        width, height = image.size
    assert (width, height) == (2 * 6 * 150, int(4.5 * 150))  # two panels (plain, resnet)
    rows = read_csv(result.csv)
    assert len(rows) == 4
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    assert [(r["model"], r["depth"]) for r in rows] == [
        ("plain", "20"), ("plain", "56"), ("resnet", "20"), ("resnet", "56"),
    ]  # fmt: skip
    md = result.md.read_text()
    assert "| model | depth |" in md and "|---|" in md
    assert "![" in md and "report.png" in md
    assert "plain: He et al. 2016 show the plain nets only as training curves" in md


def test_mean_and_std_over_three_seeds_and_paper_difference(tmp_path: Path) -> None:
    for seed, (train, test) in enumerate([(0.01, 0.08), (0.02, 0.09), (0.03, 0.10)]):
        make_run(
            tmp_path / "sweep" / f"seed={seed}", seed=seed, train_error=train, test_error=test, with_tb=True
        )

    result = make_report([tmp_path / "sweep"], out=tmp_path / "out")

    (row,) = read_csv(result.csv)
    assert row["n_seeds"] == "3" and row["seeds"] == "0 1 2" and row["status"] == "completed"
    assert float(row["test_error_pct"]) == pytest.approx(9.0)
    assert float(row["test_error_pct_std"]) == pytest.approx(1.0)  # sample std of 8, 9, 10
    assert float(row["train_error_pct"]) == pytest.approx(2.0)
    assert float(row["best_test_error_pct"]) == pytest.approx(8.0)
    assert float(row["paper_test_error_pct"]) == 8.75
    assert float(row["diff_pct"]) == pytest.approx(0.25)
    assert float(row["paper_params_m"]) == 0.27
    assert "He" in row["paper_source"] and "Table 6" in row["paper_source"]
    md = result.md.read_text()
    assert "9.00 ± 1.00" in md and "| 8.75 |" in md and "+0.25" in md


def test_single_seed_has_no_std(tmp_path: Path) -> None:
    make_run(tmp_path / "run", test_error=0.0875)
    (row,) = read_csv(make_report([tmp_path / "run"]).csv)
    assert row["test_error_pct_std"] == "" and float(row["diff_pct"]) == pytest.approx(0.0)


def test_diverged_and_interrupted_runs_get_their_own_rows(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    make_run(sweep / "seed=0", depth=56, seed=0, test_error=0.07)
    make_run(sweep / "seed=1", depth=56, seed=1, test_error=0.08)
    make_run(sweep / "seed=2", depth=56, seed=2, status="diverged", test_error=None, message="loss is NaN")
    make_run(sweep / "seed=3", depth=56, seed=3, status="interrupted", test_error=0.50)

    result = make_report([sweep])

    rows = {r["status"]: r for r in read_csv(result.csv)}
    assert set(rows) == {"completed", "diverged", "interrupted"}
    done = rows["completed"]
    assert done["n_seeds"] == "2" and float(done["test_error_pct"]) == pytest.approx(7.5)
    assert float(done["diff_pct"]) == pytest.approx(7.5 - 6.97)
    assert rows["interrupted"]["seeds"] == "3" and float(rows["interrupted"]["test_error_pct"]) == 50.0
    assert rows["interrupted"]["diff_pct"] == ""  # unfinished runs are not compared with the paper
    assert rows["diverged"]["test_error_pct"] == "" and "loss is NaN" in rows["diverged"]["message"]
    assert all(r["config_status"] == "2 completed, 1 interrupted, 1 diverged" for r in rows.values())
    md = result.md.read_text()
    assert "| diverged (also 2 completed, 1 interrupted) |" in md
    assert "500 / 1,000" in md and "loss is NaN" in md


def test_grouping_ignores_trainer_settings_but_not_optimizer(tmp_path: Path) -> None:
    make_run(tmp_path / "a", seed=0, device="cpu")
    make_run(tmp_path / "b", seed=1, device="cuda")
    make_run(tmp_path / "c", seed=0, lr=0.01)
    make_run(tmp_path / "d", seed=0, max_iters=2000)  # a shorter budget is another experiment

    rows = read_csv(make_report([tmp_path]).csv)

    assert sorted((r["options"], r["n_seeds"]) for r in rows) == [
        ("shortcut=A, optimizer.lr=0.01, trainer.max_iters=1000", "1"),
        ("shortcut=A, optimizer.lr=0.1, trainer.max_iters=1000", "2"),
        ("shortcut=A, optimizer.lr=0.1, trainer.max_iters=2000", "1"),
    ]


def test_run_without_config_uses_metrics_only(tmp_path: Path) -> None:
    make_run(tmp_path / "run", model="resnet", depth=20, with_config=False)
    result = make_report([tmp_path / "run"])
    (row,) = read_csv(result.csv)
    assert (row["model"], row["depth"], row["data"]) == ("resnet", "20", "cifar10")
    assert row["paper_test_error_pct"] == ""  # augmentation unknown: C10 or C10+?
    assert "no .hydra/config.yaml" in result.md.read_text()


def test_unreadable_metrics_is_skipped_with_a_warning(tmp_path: Path) -> None:
    make_run(tmp_path / "good")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metrics.json").write_text('{"status": "runn')
    result = make_report([tmp_path])
    assert len(result.runs) == 1
    assert any("bad" in w and "unreadable" in w for w in result.warnings)


def test_several_paths_default_to_report_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_run(tmp_path / "sweep1" / "job", depth=20)
    make_run(tmp_path / "sweep2" / "job", depth=32)
    monkeypatch.chdir(tmp_path)
    result = make_report([Path("sweep1"), Path("sweep2")])
    assert result.out == Path("report") and (tmp_path / "report" / "report.csv").is_file()
    assert len(read_csv(result.csv)) == 2


def test_no_runs_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CnnbenchError, match="No runs found under .*empty.*metrics.json"):
        make_report([tmp_path / "empty"])
    with pytest.raises(CnnbenchError, match="no such file or folder"):
        make_report([tmp_path / "missing"])


def test_print_report_shows_the_table(tmp_path: Path) -> None:
    from rich.console import Console

    make_run(tmp_path / "run")
    console = Console(record=True, width=250)
    print_report(make_report([tmp_path / "run"]), console)
    text = console.export_text()
    assert "resnet" in text and "8.75" in text and "report.png" in text


def config(
    model: str | dict, depth: int | None, data: str = "cifar10", augment: str | None = "standard"
) -> dict:
    section = model if isinstance(model, dict) else {"name": model}
    return {"model": section, "depth": depth, "data": {"name": data}, "augment": {"name": augment}}


def test_paper_reference_he_table_6() -> None:
    ref = paper_reference(config({"name": "resnet", "shortcut": "A"}, 20))
    assert ref["test_error"] == 8.75 and ref["params_m"] == 0.27 and ref["dataset"] == "C10+"
    # The model section as conf/model/resnet.yaml composes it: stochastic_depth 1.0 is a survival
    # probability (off), not "on".
    composed = {
        "name": "resnet",
        "shortcut": "A",
        "default_depth": 20,
        "block": "basic",
        "stochastic_depth": 1.0,
    }
    assert paper_reference(config(composed, 20))["test_error"] == 8.75
    ref110 = paper_reference(config("resnet", 110))
    assert (ref110["test_error"], ref110["test_error_mean"], ref110["test_error_std"]) == (6.43, 6.61, 0.16)
    assert [a["test_error"] for a in ref110["also"]] == [6.61, 6.41]  # second-hand, from the DenseNet table
    assert paper_reference(config("resnet", 1202))["params_m"] == 19.4
    assert paper_reference(config({"name": "resnet", "shortcut": "B"}, 20)) is None  # Table 6 is option A
    assert paper_reference(config("resnet", 20, augment="none")) is None  # no C10 number for ResNet-20
    assert paper_reference(config("plain", 20)) is None
    assert paper_reference(config("resnet", 20, augment=None)) is None


def test_paper_reference_densenet_table() -> None:
    sd = paper_reference(config({"name": "resnet", "stochastic_depth": 0.5}, 110, augment="none"))
    assert sd["test_error"] == 11.66 and "Densely Connected" in sd["citation"]
    dense = {"name": "densenet", "growth_rate": 12, "bottleneck": False}  # compression null -> 1.0
    assert paper_reference(config(dense, 100, data="cifar100"))["test_error"] == 20.20
    bc = {**dense, "bottleneck": True, "compression": 0.5}
    assert paper_reference(config(bc, 100, data="cifar100"))["test_error"] == 22.27
    assert paper_reference(config(bc, 100, data="svhn", augment="none"))["test_error"] == 1.76
    assert (
        paper_reference(config({"name": "wide_resnet", "width": 10, "dropout": 0.0}, 28))["test_error"]
        == 4.17
    )
    assert paper_reference(config({"name": "wide_resnet", "width": 10, "dropout": 0.3}, 28)) is None
    preact = {"name": "preact_resnet", "block": "bottleneck"}
    assert paper_reference(config(preact, 164, augment="none"))["note"].startswith("*")
    assert paper_reference(config("preact_resnet", 164))["test_error"] == 5.46  # bottleneck is the default
    basic = {"name": "preact_resnet", "block": "basic"}
    assert paper_reference(config(basic, 164)) is None  # the paper's 164 is a bottleneck net
    # Misses a builder's default: densenet's defaults are DenseNet-BC (bottleneck, compression null -> 0.5).
    assert paper_reference(config("densenet", 100))["method"] == "DenseNet-BC (k = 12)"
    assert paper_reference(config("nin", None))["test_error"] == 8.81
    # Plain names work too (metrics.json style).
    assert (
        paper_reference({"model": "resnet", "depth": 56, "data": "cifar10", "augment": "standard"})
        is not None
    )


def test_mean_curve_averages_seeds_on_common_iterations() -> None:
    a = Curve(np.array([0, 100, 200, 300]), np.array([0.9, 0.5, 0.3, 0.2]))
    b = Curve(np.array([0, 200]), np.array([0.7, 0.1]))  # sparser evaluations, stopped earlier
    mean = mean_curve([a, b])
    assert list(mean.steps) == [0, 100, 200]
    assert np.allclose(mean.values, [0.8, (0.5 + 0.4) / 2, 0.2])


def test_diverged_sweep_with_nan_curves_still_plots(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    run = make_run(tmp_path / "run", model="plain", depth=110, status="diverged", test_error=None)
    writer = SummaryWriter(log_dir=str(run))
    for step, value in [(0, 0.9), (100, 0.8), (200, float("nan")), (300, float("nan"))]:
        writer.add_scalar("error/train", value, step)
        writer.add_scalar("error/test", value, step)
    writer.close()
    result = make_report([run])
    (row,) = read_csv(result.csv)
    assert row["status"] == "diverged" and row["test_error_pct"] == ""
    assert result.png.stat().st_size > 10_000


def test_corrupt_config_is_skipped_with_a_warning(tmp_path: Path) -> None:
    make_run(tmp_path / "good")
    bad = make_run(tmp_path / "bad")
    (bad / ".hydra" / "config.yaml").write_text("model: {name: resnet\n")
    result = make_report([tmp_path])
    assert [r.path.name for r in result.runs] == ["good"]
    assert any("config.yaml is unreadable" in w for w in result.warnings)
    assert "config.yaml is unreadable" in result.md.read_text()


def test_test_error_at_best_val_column_and_optimistic_best_test(tmp_path: Path) -> None:
    from cnnbench.reporting.tables import AT_BEST_VAL, BEST_TEST

    for seed, at_best_val in ((0, 0.09), (1, 0.11)):
        run = make_run(tmp_path / "sweep" / f"seed{seed}", seed=seed, test_error=0.10, best_test_error=0.08)
        metrics = json.loads((run / "metrics.json").read_text())
        metrics.update(best_val_error=0.07, best_val_iteration=800, test_error_at_best_val=at_best_val)
        (run / "metrics.json").write_text(json.dumps(metrics))
    result = make_report([tmp_path / "sweep"])
    [row] = read_csv(result.csv)
    assert float(row["test_error_at_best_val_pct"]) == pytest.approx(10.0)
    assert float(row["test_error_at_best_val_pct_std"]) == pytest.approx(1.4142, abs=1e-3)
    md = result.md.read_text()
    assert f"| {AT_BEST_VAL} |" in md and "| 10.00 ± 1.41 |" in md
    assert BEST_TEST in md and "optimistic" in BEST_TEST

    # Without a validation split the column is left out; best test stays marked as optimistic.
    plain = make_report([make_run(tmp_path / "noval", seed=0)], out=tmp_path / "out")
    md = plain.md.read_text()
    assert AT_BEST_VAL not in md.split("## Notes")[0] and BEST_TEST in md
    assert read_csv(plain.csv)[0]["test_error_at_best_val_pct"] == ""
