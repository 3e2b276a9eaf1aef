"""cnnbench eval and export on tiny trained digits runs: reproduction of the run's own numbers, TTA, best.pt,
exported models, bad inputs and sweeps."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY
from typer.testing import CliRunner

from cnnbench.rundir.files import BEST_CHECKPOINT_NAME, METRICS_NAME, SAVED_CONFIG

# fp32 for the runs most tests share; test_eval_defaults_to_the_numerics... covers bf16 runs too.
RUN = [*TINY, "trainer.max_iters=30", "trainer.eval_every=5", "trainer.precision=fp32"]
ALLOWED = {"eval.json", "confusion.png"}  # plus new TensorBoard event files (*.eval)


def _train(folder: Path, *overrides: str) -> Path:
    from cnnbench.cli import app

    result = CliRunner().invoke(app, ["train", *RUN, *overrides, f"hydra.run.dir={folder}"])
    assert result.exit_code == 0, result.output
    return folder


@pytest.fixture(scope="module")
def val_run(tmp_path_factory) -> Path:
    """A completed run with a validation split: best.pt and test_error_at_best_val."""
    return _train(tmp_path_factory.mktemp("val") / "run", "data.val_size=300")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A sweep-like folder with two runs (seeds 0 and 1), no validation split."""
    root = tmp_path_factory.mktemp("sweep") / "multirun"
    for seed in (0, 1):
        _train(root / f"seed_{seed}", f"seed={seed}", "trainer.max_iters=10")
    return root


def _copy(run: Path, dest: Path) -> Path:
    shutil.copytree(
        run, dest, ignore=shutil.ignore_patterns("eval.json", "confusion.png", "*.eval", "export")
    )
    return dest


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


def _changed(before: dict, after: dict) -> set[str]:
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def _json(result) -> list[dict]:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _metrics(run: Path) -> dict:
    return json.loads((run / METRICS_NAME).read_text())


@pytest.mark.parametrize(
    "numerics", [("bf16", "true"), ("fp32", "false")], ids=["bf16-channels_last", "fp32-nchw"]
)
def test_eval_defaults_to_the_numerics_the_run_was_evaluated_with(cli, tmp_path: Path, numerics) -> None:
    # Fixed here rather than left to `auto`, whose pick depends on the machine: eval must follow what the
    # run recorded, whatever that was (a bf16 run evaluated in fp32 gives other digits).
    precision, channels_last = numerics
    run = _train(
        tmp_path / "run",
        "trainer.max_iters=10",
        f"trainer.precision={precision}",
        f"trainer.channels_last={channels_last}",
    )
    [entry] = _json(cli("eval", str(run), "--json"))
    metrics = _metrics(run)
    assert entry["precision"] == precision
    assert entry["error"] == metrics["test_error"]
    assert entry["loss"] == pytest.approx(metrics["test_loss"], rel=1e-9)
    [explicit] = _json(cli("eval", str(run), "--precision", "fp32", "--json"))
    assert explicit["precision"] == "fp32"


def test_eval_reproduces_the_runs_final_test_error(cli, val_run: Path, tmp_path: Path) -> None:
    from cnnbench.reporting.runs import read_curves

    run = _copy(val_run, tmp_path / "run")
    curves_before = read_curves(run, ("error/test", "error/val"))
    before = _snapshot(run)
    [entry] = _json(cli("eval", str(run), "--json"))
    metrics = _metrics(run)
    assert entry["error"] == metrics["test_error"]
    assert entry["loss"] == pytest.approx(metrics["test_loss"], rel=1e-9)
    assert entry["iteration"] == metrics["iteration"] and entry["complete"] is True
    assert entry["images"] == sum(sum(row) for row in entry["confusion"]) == 360
    wrong = sum(e * sum(row) for e, row in zip(entry["per_class_error"], entry["confusion"], strict=True))
    assert wrong == pytest.approx(entry["error"] * 360)
    # Only eval.json, confusion.png and a new event file; training's curves read back unchanged.
    changed = _changed(before, _snapshot(run))
    assert {c for c in changed if not c.endswith(".eval")} == ALLOWED
    after = read_curves(run, ("error/test", "error/val"))
    for tag, curve in curves_before.items():
        assert (after[tag].steps == curve.steps).all() and (after[tag].values == curve.values).all()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run))
    acc.Reload()
    assert "eval/confusion/test" in acc.Tags()["images"]

    # Another split is another entry: the test entry stays. The val error is the run's too.
    [val] = _json(cli("eval", str(run), "--split", "val", "--json"))
    assert val["error"] == metrics["val_error"]
    entries = json.loads((run / "eval.json").read_text())["entries"]
    assert set(entries) == {entry["key"], val["key"]}
    # The table form names the run and says it is complete.
    table = cli("eval", str(run))
    assert table.exit_code == 0 and "complete" in table.stdout and "error %" in table.stdout


def test_flip_tta_equals_a_direct_computation(cli, val_run: Path, tmp_path: Path) -> None:
    from cnnbench.engine.evaluation import evaluate_images
    from cnnbench.engine.trained import load_trained

    run = _copy(val_run, tmp_path / "run")
    [entry] = _json(cli("eval", str(run), "--tta", "flip", "--json"))
    trained = load_trained(run, device="cpu")
    images, labels = trained.load_data().eval_sets["test"]
    with torch.inference_mode():
        x = trained.normalize(images)
        probs = (trained.model(x).softmax(1) + trained.model(x.flip(3)).softmax(1)) / 2
    direct_error = int((probs.argmax(1) != labels).sum()) / len(labels)
    direct_loss = -probs[torch.arange(len(labels)), labels].log().mean().item()
    assert entry["error"] == direct_error
    assert entry["loss"] == pytest.approx(direct_loss, rel=1e-5)
    # On a small batch, straight through the loop (batches of 4).
    torch.manual_seed(0)
    pick = torch.randperm(len(labels))[:16]
    evaluated = evaluate_images(
        trained.model,
        trained.normalize,
        images[pick],
        labels[pick],
        4,
        torch.no_grad,
        tta="flip",
        num_classes=10,
    )
    small = probs[pick]
    wrong = int((small.argmax(1) != labels[pick]).sum())
    assert 16 - int(evaluated.confusion.diagonal().sum()) == wrong == round(evaluated.error * 16)
    assert evaluated.loss == pytest.approx(
        -small[torch.arange(16), labels[pick]].log().mean().item(), rel=1e-5
    )


def test_best_weights_are_the_lowest_logged_val_error(cli, val_run: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from cnnbench.rundir.checkpoint import load_checkpoint

    run = _copy(val_run, tmp_path / "run")
    metrics = _metrics(run)
    [entry] = _json(cli("eval", str(run), "--weights", "best", "--json"))
    assert entry["weights"] == "best" and entry["checkpoint"] == BEST_CHECKPOINT_NAME
    assert entry["error"] == metrics["test_error_at_best_val"]
    best = load_checkpoint(run / BEST_CHECKPOINT_NAME)
    assert int(best["iteration"]) == metrics["best_val_iteration"] == entry["iteration"]
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    events = sorted(acc.Scalars("error/val"), key=lambda e: e.step)
    assert len(events) == 30 // 5
    lowest = min(e.value for e in events)
    assert next(e.step for e in events if e.value == lowest) == metrics["best_val_iteration"]


def _fixed_batch(trained, n: int = 5) -> torch.Tensor:
    images, _ = trained.load_data().eval_sets["test"]
    torch.manual_seed(0)
    return images[torch.randperm(len(images))[:n]].cpu()


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_export_torchscript_onnx_and_state_dict_give_the_runs_logits(
    cli, val_run: Path, tmp_path: Path
) -> None:
    from cnnbench.commands.export import onnx_available
    from cnnbench.engine.trained import load_trained
    from cnnbench.models import build_model

    run = _copy(val_run, tmp_path / "run")
    before = _snapshot(run)
    trained = load_trained(run, device="cpu")
    uint8 = _fixed_batch(trained)  # 5 images: not the batch size the model was traced with
    with torch.inference_mode():
        expected = trained.model(trained.normalize(uint8))

    result = cli("export", str(run))
    assert result.exit_code == 0, result.output
    ts = run / "export" / "model.ts.pt"
    scripted = torch.jit.load(str(ts))
    torch.testing.assert_close(scripted(uint8.float() / 255), expected, rtol=1e-5, atol=1e-5)
    meta = json.loads((run / "export" / "model.ts.pt.json").read_text())
    assert meta["input"]["shape"] == ["N", 3, 32, 32] and meta["num_classes"] == 10

    # Never overwritten without --force; with it, replaced.
    again = cli("export", str(run))
    assert again.exit_code == 2 and "--force" in again.output and "Traceback" not in again.output
    assert cli("export", str(run), "--force").exit_code == 0

    result = cli("export", str(run), "--format", "state_dict", "--weights", "best")
    assert result.exit_code == 0, result.output
    meta = json.loads((run / "export" / "state_dict-best.pt.json").read_text())
    model = build_model(
        meta["model"], depth=meta["depth"], num_classes=meta["num_classes"], **meta["options"]
    )
    model.load_state_dict(torch.load(run / "export" / "state_dict-best.pt", weights_only=True))
    best = load_trained(run, device="cpu", checkpoint_name=BEST_CHECKPOINT_NAME)
    mean, std = torch.tensor(meta["normalization"]["mean"]), torch.tensor(meta["normalization"]["std"])
    with torch.inference_mode():
        torch.testing.assert_close(
            model.eval()((uint8.float() / 255 - mean) / std), best.model(best.normalize(uint8))
        )

    if onnx_available() and importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        result = cli("export", str(run), "--format", "onnx")
        assert result.exit_code == 0, result.output
        session = onnxruntime.InferenceSession(str(run / "export" / "model.onnx"))
        [logits] = session.run(["logits"], {"images": (uint8.float() / 255).numpy()})
        torch.testing.assert_close(torch.from_numpy(logits), expected, rtol=1e-4, atol=1e-4)
    assert {c.split("/")[0] for c in _changed(before, _snapshot(run))} == {"export"}


def test_export_onnx_without_onnx_names_the_extra(cli, val_run: Path, monkeypatch) -> None:
    monkeypatch.setattr("cnnbench.commands.export.onnx_available", lambda: False)
    result = cli("export", str(val_run), "--format", "onnx", "--out", "elsewhere.onnx")
    assert result.exit_code == 2 and "pip install cnnbench[onnx]" in result.output


def _bad(cli, run: Path, *args: str, expect: str) -> None:
    before = _snapshot(run)
    result = cli("eval", str(run), *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    message = result.stderr.strip()
    assert message.startswith("error:") and expect in message, message
    assert "\n\n" not in message and message.count("error:") == 1
    assert _snapshot(run) == before


def test_bad_inputs_are_one_paragraph_and_leave_the_run_alone(
    cli, val_run: Path, sweep: Path, tmp_path: Path, monkeypatch
) -> None:
    run = _copy(val_run, tmp_path / "run")
    no_val = _copy(sweep / "seed_0", tmp_path / "no_val")
    # No checkpoint: the saved config and metrics only.
    empty = tmp_path / "empty"
    (empty / ".hydra").mkdir(parents=True)
    shutil.copy(run / SAVED_CONFIG, empty / SAVED_CONFIG)
    shutil.copy(run / METRICS_NAME, empty / METRICS_NAME)
    _bad(cli, empty, expect="no checkpoint.pt")
    _bad(cli, run, "--split", "holdout", expect="'holdout' is not one of 'test', 'val', 'train'")
    _bad(cli, no_val, "--split", "val", expect="without a validation split")
    _bad(cli, no_val, "--weights", "best", expect="data.val_size")
    _bad(cli, run, "--data", "data=synthetic", "--data", "num_classes=3", "--data", "train_size=8",
         "--data", "test_size=8", expect="3 classes where the model has 10 outputs")  # fmt: skip
    _bad(cli, run, "--data", "colour=red", expect="no key 'colour'")

    # Images of another size than the model was trained on (every shipped dataset is 32x32: shrink them).
    import cnnbench.engine.parts as parts

    real = parts.load_dataset

    def shrunk(*args, **kwargs):
        from dataclasses import replace

        d = real(*args, **kwargs)
        half = lambda t: t[..., ::2, ::2].contiguous()  # noqa: E731
        return replace(d, train_images=half(d.train_images), test_images=half(d.test_images))

    monkeypatch.setattr(parts, "load_dataset", shrunk)
    _bad(cli, run, "--data", "val_size=0", expect="16x16 images")


def test_incomplete_run_is_evaluated_and_marked(cli, val_run: Path, tmp_path: Path) -> None:
    run = _copy(val_run, tmp_path / "run")
    config = yaml.safe_load((run / SAVED_CONFIG).read_text())
    config["trainer"]["max_iters"] = 1000  # as if stopped at iteration 30 of 1000
    (run / SAVED_CONFIG).write_text(yaml.safe_dump(config))
    before = _snapshot(run)
    result = cli("eval", str(run))
    assert result.exit_code == 0, result.output
    assert "incomplete" in result.stdout
    [entry] = _json(cli("eval", str(run), "--json"))
    assert entry["complete"] is False and entry["max_iters"] == 1000
    assert {c for c in _changed(before, _snapshot(run)) if not c.endswith(".eval")} == ALLOWED


def test_sweep_gives_one_table_and_loads_the_data_once(cli, sweep: Path, monkeypatch) -> None:
    import cnnbench.engine.parts as parts

    calls = []
    real = parts.load_dataset

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(parts, "load_dataset", counting)
    result = cli("eval", str(sweep))
    assert result.exit_code == 0, result.output
    assert len(calls) == 1
    assert result.stdout.count("cnnbench eval (") == 1
    assert "seed_0" in result.stdout and "seed_1" in result.stdout
    for seed in (0, 1):
        entries = json.loads((sweep / f"seed_{seed}" / "eval.json").read_text())["entries"]
        [entry] = entries.values()
        assert entry["error"] == _metrics(sweep / f"seed_{seed}")["test_error"]
        assert not math.isnan(entry["loss"])


# ----- compiled runs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "record, state_key, mode",
    [
        ({"compile": True, "compile_mode": "default"}, "model", "default"),
        (
            {"compile": True, "compile_mode": "max-autotune-no-cudagraphs"},
            "model",
            "max-autotune-no-cudagraphs",
        ),
        ({"compile": True}, "model", "max-autotune-no-cudagraphs"),  # recorded before the mode was
        ({"compile": True, "compile_mode": "default"}, "ema", None),  # the average was evaluated eagerly
        ({"compile": False, "compile_mode": "default"}, "model", None),
        ({}, "model", None),
    ],
    ids=["default", "max-autotune", "no mode recorded", "ema", "eager run", "no record"],
)
def test_eval_compiles_exactly_where_the_runs_own_evaluations_were_compiled(
    record: dict, state_key: str, mode: str | None
) -> None:
    from cnnbench.commands.evaluate import run_compile_mode

    assert run_compile_mode(record, state_key) == mode


def test_eval_of_a_run_recorded_as_compiled_evaluates_through_torch_compile(
    cli, val_run: Path, tmp_path: Path, monkeypatch
) -> None:
    """The decision reaches the evaluation: the checkpoint's fast path says compiled (edited here: compiling
    for real is the slow test below), so the model goes through torch.compile, in the recorded mode, and
    eval.json says so; best.pt's weights (evaluated through the same compiled model) compile too."""
    run = _copy(val_run, tmp_path / "run")
    for name in ("checkpoint.pt", BEST_CHECKPOINT_NAME):
        checkpoint = torch.load(run / name, weights_only=True)
        checkpoint["fast_path"] = {**checkpoint["fast_path"], "compile": True, "compile_mode": "default"}
        torch.save(checkpoint, run / name)
    compiled = []

    def spy(model, **kwargs):
        compiled.append(kwargs)
        return model  # eager underneath: the numbers stay the run's

    monkeypatch.setattr(torch, "compile", spy)
    [entry] = _json(cli("eval", str(run), "--json"))
    assert compiled == [{}] and entry["compiled"] is True  # mode "default": torch.compile's own default
    assert entry["error"] == _metrics(run)["test_error"]
    [best] = _json(cli("eval", str(run), "--weights", "best", "--json"))
    assert len(compiled) == 2 and best["compiled"] is True
    assert json.loads((run / "eval.json").read_text())["entries"][entry["key"]]["compiled"] is True


@pytest.mark.slow
def test_eval_reproduces_a_compiled_runs_test_error(cli, tmp_path: Path) -> None:
    """A run trained and evaluated with torch.compile on the CPU (about a minute of compiling here)."""
    run = _train(
        tmp_path / "run", "trainer.max_iters=10", "trainer.compile=true", "trainer.compile_mode=default"
    )
    metrics = _metrics(run)
    [entry] = _json(cli("eval", str(run), "--json"))
    assert entry["compiled"] is True
    assert entry["error"] == metrics["test_error"]
    assert entry["loss"] == pytest.approx(metrics["test_loss"], rel=1e-9)
