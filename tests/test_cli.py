"""End to end through the CLI: a tiny run on digits, its folder, its TensorBoard events, bad input."""

from __future__ import annotations

import json
import pickle

import pytest
from conftest import TINY
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2


def _events(run_dir):
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_train_writes_a_complete_run_folder(cli, tmp_path):
    result = cli("train", *TINY, "hydra.run.dir=run")
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    for name in (
        ".hydra/config.yaml",
        ".hydra/overrides.yaml",
        "metrics.json",
        "checkpoint.pt",
        "env.json",
        "train.log",
    ):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert (metrics["model"], metrics["depth"], metrics["iteration"], metrics["max_iters"]) == (
        "plain",
        8,
        20,
        20,
    )
    from cnnbench.models import build_model

    assert metrics["params"] == sum(p.numel() for p in build_model("plain", depth=8).parameters())
    for key in ("train_error", "test_error", "best_test_error"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["best_test_error"] <= metrics["test_error"]
    env = json.loads((run / "env.json").read_text())
    assert env["precision"] in ("fp32", "bf16") and env["device"] == "cpu" and env["torch"]
    assert "Done" in (run / "train.log").read_text()

    events = _events(run)
    tags = set(events.Tags()["scalars"])
    assert {"error/train", "error/test", "loss/train", "loss/test", "lr"} <= tags
    assert [e.step for e in events.Scalars("loss/train")] == [5, 10, 15, 20]
    assert [e.step for e in events.Scalars("error/test")] == [10, 20]
    assert events.Scalars("error/test")[-1].value == pytest.approx(metrics["test_error"])
    assert events.Scalars("error/train")[-1].value == pytest.approx(metrics["train_error"])

    # The hparams summary is in the same run as the scalars, with the run's settings.
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["model"].string_value == "plain"
    assert hparams["depth"].number_value == 8
    assert hparams["batch_size"].number_value == 32
    assert "_hparams_/experiment" not in content, "TensorBoard infers the sweep's columns from all runs"
    assert "custom_scalars__config__" in events.Tags()["tensors"]


def test_default_run_folder_is_named_by_model_and_time(cli, tmp_path):
    assert cli("train", *TINY, "trainer.max_iters=2", "trainer.eval_every=1").exit_code == 0
    assert cli("train", *TINY, "trainer.max_iters=2", "trainer.eval_every=1").exit_code == 0
    runs = sorted((tmp_path / "outputs" / "plain8").iterdir())
    assert len(runs) == 2, "two runs never share a folder"
    assert all((r / "metrics.json").is_file() for r in runs)


def test_augment_none_and_val_split_log_val_error(cli, tmp_path):
    result = cli("train", *TINY, "augment=none", "data.val_size=200", "hydra.run.dir=run")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0 <= metrics["val_error"] <= 1
    assert "error/val" in _events(tmp_path / "run").Tags()["scalars"]


def test_config_command_prints_the_paper_recipe(cli):
    result = cli("config")
    assert result.exit_code == 0
    for line in (
        "lr: 0.1",
        "momentum: 0.9",
        "weight_decay: 0.0001",
        "batch_size: 128",
        "max_iters: 64000",
        "- 32000",
        "- 48000",
        "padding: 4",
        "flip: true",
        "shortcut: A",
        "normalize: pixel_mean",
    ):
        assert line in result.output, line
    assert "depth: 56" in cli("config", "model=plain", "depth=56").output


def test_models_command_lists_paper_parameters(cli):
    result = cli("models", "--depths", "20,56", "--model", "resnet")
    assert result.exit_code == 0
    assert "0.27M" in result.output and "0.85M" in result.output
    assert "0.270M" in result.output and "0.853M" in result.output


def test_help_for_every_command(cli):
    for command in ("train", "resume", "report", "models", "bench", "config"):
        result = cli(command, "--help")
        assert result.exit_code == 0
        assert "Example" in result.output or "example" in result.output.lower()


def _write_bad_cifar(root):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps({"data": [1, 2, 3]})[:5])


BAD_INPUTS = [
    (["depth=21"], ["depth=21", "6n+2", "20", "26"]),
    (["model=resnett"], ["resnett", "resnet", "plain"]),
    (["data=cifar11"], ["cifar11", "cifar10", "digits"]),
    (["optimizer=sgdd"], ["sgdd", "sgd", "adam"]),
    (["schedule=linear"], ["linear", "paper", "cosine"]),
    (["data=cifar10", "data.download=false", "data.root=nowhere"], ["nowhere", "data.download=true"]),
    (["trainer.batch_size=0"], ["trainer.batch_size"]),
    (["trainer.max_iters=-5"], ["trainer.max_iters"]),
    (["optimizer.lr=0"], ["optimizer.lr"]),
    (["trainer.device=cuda"], ["cuda", "trainer.device=cpu"]),
]


@pytest.mark.parametrize(("overrides", "expected"), BAD_INPUTS, ids=[" ".join(o) for o, _ in BAD_INPUTS])
def test_bad_input_is_a_clear_error(cli, overrides, expected):
    result = cli("train", *TINY, *overrides)
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    for text in expected:
        assert text in result.output, (text, result.output)


def test_corrupt_dataset_file_is_a_clear_error(cli, tmp_path):
    _write_bad_cifar(tmp_path / "data")
    result = cli("train", *TINY, "data=cifar10", f"data.root={tmp_path / 'data'}", "data.download=false")
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert "data_batch_1" in result.output


def test_cifar_format_folder_trains(cli, tmp_path):
    from data_fixtures import write_cifar10

    write_cifar10(tmp_path / "data", n_per_batch=40, n_test=40)
    result = cli(
        "train",
        *TINY,
        "data=cifar10",
        f"data.root={tmp_path / 'data'}",
        "data.download=false",
        "hydra.run.dir=run",
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["data"] == "cifar10"
