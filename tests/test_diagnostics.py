"""cnnbench analyze / landscape on tiny digits runs: values against direct computations, resume, errors."""

from __future__ import annotations

import copy
import csv
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY
from torch import nn
from typer.testing import CliRunner

from cnnbench.cli import app
from cnnbench.diagnostics import landscape as landscape_mod
from cnnbench.diagnostics.landscape_grid import filter_normalized_direction
from cnnbench.diagnostics.responses import is_conv3x3, response_layers
from cnnbench.engine.trained import load_trained
from cnnbench.models import build_model

SAMPLES = 16


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A plain-8 and a ResNet-8 digits run (seconds each), shared by the module's tests."""
    root = tmp_path_factory.mktemp("diag_runs")
    made = {}
    for model in ("plain", "resnet"):
        folder = root / model
        result = invoke("train", *TINY, f"model={model}", f"hydra.run.dir={folder}")
        assert result.exit_code == 0, result.output
        made[model] = folder
    return made


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def png_decodes(path: Path) -> None:
    from matplotlib.image import imread

    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


# ---------------------------------------------------------------------------------------------- analyze


def test_analysis_matches_direct_hooks(runs, tmp_path):
    out = tmp_path / "a"
    result = invoke("analyze", runs["plain"], "--samples", SAMPLES, "--at-init", "--out", out)
    assert result.exit_code == 0, result.output
    rows = read_csv(out / "analysis.csv")
    trained = load_trained(runs["plain"], device="cpu")
    model = trained.model
    convs = [name for name, m in model.named_modules() if is_conv3x3(m)]
    assert [r["layer"] for r in rows] == convs and len(rows) == 7  # depth 8: stem + 2 per stage
    assert {r["measured_at"] for r in rows} == {"bn_output"}

    # Responses: hooks on each conv's BN (named bnK next to convK in these nets) over the first test images.
    modules = dict(model.named_modules())
    seen: dict[str, torch.Tensor] = {}
    handles = [
        modules[name.replace("conv", "bn")].register_forward_hook(
            lambda m, a, o, name=name: seen.__setitem__(name, o.detach())
        )
        for name in convs
    ]
    test_x, _ = trained.load_data().eval_sets["test"]
    with torch.no_grad():
        model(trained.normalize(test_x[:SAMPLES]))
    for h in handles:
        h.remove()
    for row, name in zip(rows, convs, strict=True):
        direct = seen[name].double().std(correction=0).item()
        assert float(row["response_std"]) == pytest.approx(direct, rel=1e-6)

    # Gradient norms: the seeded fixed batch, BN in train mode, on a copy of the model.
    data = trained.load_data()
    n = int(trained.cfg.trainer.batch_size)
    index = (
        torch.randperm(len(data.train_labels), generator=torch.Generator().manual_seed(0))[:n].sort().values
    )
    work = copy.deepcopy(model).train()
    torch.manual_seed(int(trained.cfg.seed))
    F.cross_entropy(work(trained.normalize(data.train_images[index])), data.train_labels[index]).backward()
    work_modules = dict(work.named_modules())
    for row, name in zip(rows, convs, strict=True):
        assert float(row["grad_norm"]) == pytest.approx(
            work_modules[name].weight.grad.norm().item(), rel=1e-5
        )
        assert float(row["grad_norm_init"]) > 0 and row["block"]
    png_decodes(out / "analysis.png")


def test_analyze_two_runs_default_out_is_cwd(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("analyze", runs["plain"], runs["resnet"], "--samples", 8)
    assert result.exit_code == 0, result.output
    assert {r["run"] for r in read_csv(tmp_path / "analysis.csv")} == {"plain-8", "resnet-8"}
    png_decodes(tmp_path / "analysis.png")


@pytest.mark.parametrize(
    ("name", "options", "layers", "where"),
    [
        ("resnet", {"block": "bottleneck"}, 4, "bn_output"),  # stem + one 3x3 per bottleneck
        ("preact_resnet", {"block": "basic"}, 7, "conv_output"),  # BN before the conv: conv outputs
        ("plain", {}, 7, "bn_output"),
    ],
)
def test_response_layers_per_family(name, options, layers, where):
    depth = 11 if options.get("block") == "bottleneck" else 8
    model = build_model(name, depth=depth, num_classes=10, **options)
    found = response_layers(model, torch.randn(2, 3, 32, 32))
    assert len(found) == layers == sum(is_conv3x3(m) for m in model.modules())
    assert {layer.measured_at for layer in found} == {where}


# -------------------------------------------------------------------------------------------- landscape


def test_filter_normalization_by_hand():
    conv = nn.Conv2d(1, 2, 3, bias=True)
    linear = nn.Linear(3, 2)
    model = nn.Sequential(conv, nn.BatchNorm2d(2), nn.Flatten(), linear)
    with torch.no_grad():
        conv.weight[0].fill_(1.0)  # ||filter 0|| = sqrt(9 * 1) = 3
        conv.weight[1].fill_(2.0)  # ||filter 1|| = sqrt(9 * 4) = 6
        linear.weight.copy_(torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 5.0]]))  # row norms 5 and 5
    d = filter_normalized_direction(model, torch.Generator().manual_seed(7))
    shapes = [p.shape for p in model.parameters()]
    assert [t.shape for t in d] == shapes
    conv_w, conv_b, bn_w, bn_b, lin_w, lin_b = d
    assert conv_w[0].norm().item() == pytest.approx(3.0, rel=1e-5)
    assert conv_w[1].norm().item() == pytest.approx(6.0, rel=1e-5)
    assert lin_w.norm(dim=1).tolist() == pytest.approx([5.0, 5.0], rel=1e-5)
    for zero in (conv_b, bn_w, bn_b, lin_b):  # --xignore biasbn
        assert not zero.any()
    again = filter_normalized_direction(model, torch.Generator().manual_seed(7))
    assert all(torch.equal(a, b) for a, b in zip(d, again, strict=True))


def test_landscape_center_equals_direct_loss(runs, tmp_path):
    out = tmp_path / "l"
    args = ["landscape", runs["resnet"], "--resolution", 3, "--samples", 64, "--out", out, "--seed", 3]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    rows = read_csv(out / "landscape.csv")
    assert [(r["i"], r["alpha"]) for r in rows] == [("0", "-1.0"), ("1", "0.0"), ("2", "1.0")]
    trained = load_trained(runs["resnet"], device="cpu")
    data = trained.load_data()
    index = (
        torch.randperm(len(data.train_labels), generator=torch.Generator().manual_seed(3))[:64].sort().values
    )
    with torch.no_grad():
        logits = trained.model.eval()(trained.normalize(data.train_images[index]))
    labels = data.train_labels[index]
    center = rows[1]
    assert float(center["loss"]) == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    assert float(center["error"]) == pytest.approx((logits.argmax(1) != labels).float().mean().item())
    assert float(rows[0]["loss"]) != float(center["loss"])
    png_decodes(out / "landscape.png")
    # Seeded: the same command elsewhere gives the same numbers.
    again = invoke(*args[:-4], "--out", tmp_path / "again", "--seed", 3)
    assert again.exit_code == 0, again.output
    assert (tmp_path / "again" / "landscape.csv").read_text() == (out / "landscape.csv").read_text()


def test_landscape_2d_two_runs_and_tensorboard(runs, tmp_path):
    before = {p.name for p in runs["plain"].iterdir()}
    out = tmp_path / "two"
    grid = ["--dims", 2, "--resolution", 2, "--samples", 16]
    result = invoke("landscape", runs["plain"], runs["resnet"], *grid, "--out", out)
    assert result.exit_code == 0, result.output
    rows = read_csv(out / "landscape.csv")
    assert len(rows) == 2 * 2 * 2 and {r["run"] for r in rows} == {"plain-8", "resnet-8"}
    png_decodes(out / "landscape.png")
    added = {p.name for p in runs["plain"].iterdir()} - before
    assert len(added) == 1 and next(iter(added)).endswith(".landscape")  # an events file of its own


def test_landscape_interrupted_resumes_to_the_same_csv(runs, tmp_path, monkeypatch):
    common = ["--resolution", 5, "--samples", 32]
    whole = invoke("landscape", runs["plain"], runs["resnet"], *common, "--out", tmp_path / "whole")
    assert whole.exit_code == 0, whole.output

    real, calls = landscape_mod.evaluate_point, []

    def interrupted(evaluator, coords):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(coords)
        return real(evaluator, coords)

    monkeypatch.setattr(landscape_mod, "evaluate_point", interrupted)
    part = tmp_path / "part"
    stopped = invoke("landscape", runs["plain"], runs["resnet"], *common, "--out", part)
    assert stopped.exit_code == 130
    assert len(read_csv(part / "landscape.csv")) == 3 and not (part / "landscape.png").exists()
    monkeypatch.setattr(landscape_mod, "evaluate_point", real)

    other = invoke(
        "landscape", runs["plain"], runs["resnet"], "--resolution", 7, "--samples", 32, "--out", part
    )
    assert other.exit_code == 2 and "other settings" in other.output
    assert len(read_csv(part / "landscape.csv")) == 3

    resumed = invoke("landscape", runs["plain"], runs["resnet"], *common, "--out", part)
    assert resumed.exit_code == 0, resumed.output
    assert "3 already in" in " ".join(resumed.output.split())
    assert (part / "landscape.csv").read_text() == (tmp_path / "whole" / "landscape.csv").read_text()
    png_decodes(part / "landscape.png")


# ------------------------------------------------------------------------------------------ bad input


def _broken_copies(runs, root: Path) -> dict[str, Path]:
    empty = root / "empty"
    empty.mkdir()
    no_ckpt = root / "no_ckpt"
    shutil.copytree(runs["plain"], no_ckpt)
    (no_ckpt / "checkpoint.pt").unlink()
    corrupt = root / "corrupt"
    shutil.copytree(runs["plain"], corrupt)
    (corrupt / "checkpoint.pt").write_bytes(b"not a checkpoint")
    other_data = root / "other_data"
    shutil.copytree(runs["resnet"], other_data)
    config = other_data / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("name: digits", "name: cifar10", 1))
    return {"empty": empty, "no_ckpt": no_ckpt, "corrupt": corrupt, "other_data": other_data}


@pytest.mark.parametrize("command", ["landscape", "analyze"])
def test_bad_input_is_one_message_and_nothing_written(runs, tmp_path, command):
    bad = _broken_copies(runs, tmp_path)
    out = tmp_path / "out"
    cases = [
        ([bad["empty"]], "not a cnnbench run folder"),
        ([bad["no_ckpt"]], "No checkpoint"),
        ([bad["corrupt"]], "cannot be read"),
        ([runs["plain"], bad["other_data"]], "different data"),
        ([runs["plain"], "--samples", 100000], "more than the"),
    ]
    if command == "landscape":
        cases += [
            ([runs["plain"], "--resolution", 0], "--resolution 0"),
            ([runs["plain"], "--dims", 2, "--resolution", 200], "--yes"),
        ]
    for args, message in cases:
        result = invoke(command, *args, "--out", out)
        assert result.exit_code == 2, (args, result.output)
        assert message in " ".join(result.output.split()), (args, result.output)
        assert "Traceback" not in result.output
        assert not out.exists(), args
    assert not any(p.name.startswith(("landscape", "analysis")) for p in runs["plain"].iterdir())
