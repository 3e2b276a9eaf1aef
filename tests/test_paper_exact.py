"""Paper-exact switches: ghost BatchNorm, the error-based warm-up rule, numerics=paper, and what runs record.

Unit tests of ``GhostBatchNorm2d`` against ``nn.BatchNorm2d`` and ``F.batch_norm`` per group, of the
warm-up rule as a function of what it observes, then short digits runs (in-process, one CPU thread, so
that an interrupted and resumed run can be compared bit for bit with the uninterrupted one).
"""

from __future__ import annotations

import copy
import json
import logging
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cnnbench.core.numerics import bn_images, describe
from cnnbench.core.schedule import LrSchedule, make_lr_schedule
from cnnbench.errors import CnnbenchError
from cnnbench.models import build_model
from cnnbench.models.ghostbn import GhostBatchNorm2d, use_ghost_bn

# ----- ghost BatchNorm --------------------------------------------------------------------------------


def _bn_pair(group: int, channels: int = 5) -> tuple[nn.BatchNorm2d, GhostBatchNorm2d]:
    """A BatchNorm2d with non-trivial affine parameters and running statistics, and its ghost twin."""
    generator = torch.Generator().manual_seed(0)
    bn = nn.BatchNorm2d(channels)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(channels, generator=generator) + 0.5)
        bn.bias.copy_(torch.randn(channels, generator=generator))
        bn.running_mean.copy_(torch.randn(channels, generator=generator))
        bn.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
    ghost = use_ghost_bn(nn.Sequential(copy.deepcopy(bn)), group)[0]
    assert isinstance(ghost, GhostBatchNorm2d) and ghost.group == group
    return bn, ghost


def _images(n: int = 8, channels: int = 5, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    # Groups with clearly different statistics, so that per-group and whole-batch normalization differ.
    x = torch.randn(n, channels, 6, 6, generator=generator)
    return x + torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1)


def _forward_backward(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    x = x.clone().requires_grad_(True)
    y = module(x)
    grad = torch.randn(y.shape, generator=torch.Generator().manual_seed(2))
    y.backward(grad)
    return y.detach(), x.grad, module.weight.grad, module.bias.grad


def test_one_group_is_batchnorm2d_bit_for_bit() -> None:
    bn, ghost = _bn_pair(group=8)
    x = _images(8)
    for theirs, ours in zip(_forward_backward(bn, x), _forward_backward(ghost, x), strict=True):
        assert torch.equal(theirs, ours)
    assert bn.state_dict().keys() == ghost.state_dict().keys()
    for name, value in bn.state_dict().items():
        assert torch.equal(value, ghost.state_dict()[name]), name


def test_two_groups_are_normalized_each_with_its_own_statistics() -> None:
    bn, ghost = _bn_pair(group=4)
    x = _images(8)
    y = ghost(x)
    halves = [F.batch_norm(h, None, None, bn.weight, bn.bias, True, 0.0, bn.eps) for h in x.split(4)]
    assert torch.equal(y, torch.cat(halves))
    # The same from first principles: each half's mean and biased variance per channel.
    for out, half in zip(y.split(4), x.split(4), strict=True):
        mean = half.mean(dim=(0, 2, 3), keepdim=True)
        var = half.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        expected = (half - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(1, -1, 1, 1) + bn.bias.view(
            1, -1, 1, 1
        )
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # ... which is not what BatchNorm over the whole batch gives.
    assert not torch.allclose(y, bn(x), atol=1e-2)


def test_two_groups_gradients_match_normalizing_each_half_separately() -> None:
    _, ghost = _bn_pair(group=4)
    x = _images(8)
    ours = _forward_backward(ghost, x)
    reference = copy.deepcopy(ghost)
    reference.weight.grad = reference.bias.grad = None
    xr = x.clone().requires_grad_(True)
    halves = [
        F.batch_norm(h, None, None, reference.weight, reference.bias, True, 0.0, ghost.eps)
        for h in xr.split(4)
    ]
    torch.cat(halves).backward(torch.randn(ours[0].shape, generator=torch.Generator().manual_seed(2)))
    torch.testing.assert_close(ours[1], xr.grad)
    torch.testing.assert_close(ours[2], reference.weight.grad)
    torch.testing.assert_close(ours[3], reference.bias.grad)


def test_running_statistics_come_from_the_first_group_only() -> None:
    """As on the paper's 2 GPUs: the statistics of GPU 0's 64 images update the kept running estimates."""
    bn, ghost = _bn_pair(group=4)
    x = _images(8)
    for _ in range(3):
        ghost(x)
        bn(x[:4])  # BatchNorm2d fed the first group alone
    assert torch.equal(ghost.running_mean, bn.running_mean)
    assert torch.equal(ghost.running_var, bn.running_var)
    assert int(ghost.num_batches_tracked) == int(bn.num_batches_tracked) == 3


def test_eval_mode_is_batchnorm2d_with_running_statistics() -> None:
    bn, ghost = _bn_pair(group=2)
    bn.eval(), ghost.eval()
    x = _images(8)
    assert torch.equal(ghost(x), bn(x))
    assert torch.equal(ghost.running_mean, bn.running_mean)  # eval never updates them


def test_channels_last_and_bf16_autocast() -> None:
    bn, ghost = _bn_pair(group=4)
    x = _images(8)
    y = ghost(x.contiguous(memory_format=torch.channels_last))
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, ghost(x), rtol=1e-5, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        xb = x.bfloat16()
        ours = ghost(xb)
        theirs = torch.cat(
            [F.batch_norm(h, None, None, bn.weight, bn.bias, True, 0.0, bn.eps) for h in xb.split(4)]
        )
    assert ours.dtype == theirs.dtype
    assert torch.equal(ours, theirs)


def test_compiles_in_one_graph() -> None:
    """No Python-side data-dependent control flow: Dynamo traces it whole (fullgraph) and agrees."""
    import torch._dynamo

    _, ghost = _bn_pair(group=4)
    eager = copy.deepcopy(ghost)
    compiled = torch.compile(ghost, backend="aot_eager", fullgraph=True)
    x = _images(8)
    torch.testing.assert_close(compiled(x), eager(x))
    torch.testing.assert_close(ghost.running_mean, eager.running_mean)
    torch._dynamo.reset()


def test_swap_keeps_initialization_and_state_dict_keys() -> None:
    torch.manual_seed(0)
    plain = build_model("resnet", depth=8, num_classes=10)
    torch.manual_seed(0)
    ghosted = build_model("resnet", depth=8, num_classes=10)
    params = list(ghosted.parameters())
    use_ghost_bn(ghosted, 16)
    assert [id(p) for p in ghosted.parameters()] == [id(p) for p in params]  # an optimizer's view holds
    bns = [m for m in ghosted.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(isinstance(m, GhostBatchNorm2d) for m in bns)
    assert list(plain.state_dict()) == list(ghosted.state_dict())
    for name, value in plain.state_dict().items():
        assert torch.equal(value, ghosted.state_dict()[name]), name
    plain.load_state_dict(ghosted.state_dict())  # checkpoints load into plain BatchNorm (eval, export)
    plain.eval(), ghosted.eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    assert torch.equal(plain(x), ghosted(x))


# ----- configuration: refusals before anything is written ---------------------------------------------


def _compose(*overrides: str) -> DictConfig:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from cnnbench.core.config import conf_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_a_group_that_does_not_divide_the_batch_is_refused(cli, tmp_path: Path) -> None:
    from cnnbench.rundir.validate import check_config

    with pytest.raises(CnnbenchError, match=r"trainer.bn_group=48 does not divide trainer.batch_size=128"):
        check_config(_compose("trainer.bn_group=48"))
    result = cli(
        "train", "data=digits", "model=plain", "depth=8", "trainer.bn_group=48", "trainer.max_iters=2"
    )
    assert result.exit_code == 2 and "trainer.bn_group=64" in result.output  # the suggested fix
    assert not (tmp_path / "outputs").exists()  # refused before Hydra's callbacks made a folder


def test_ddp_groups_are_per_process_and_exclude_sync_bn(monkeypatch: pytest.MonkeyPatch) -> None:
    from cnnbench.rundir.validate import check_config

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    check_config(_compose("trainer.bn_group=64"))  # 128 over 2 processes: 64 each, one group
    with pytest.raises(CnnbenchError, match=r"each process's 32 images"):
        check_config(_compose("trainer.bn_group=64", "trainer.batch_size=64"))
    with pytest.raises(CnnbenchError, match=r"trainer.sync_bn=true"):
        check_config(_compose("trainer.bn_group=32", "trainer.sync_bn=true"))


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["trainer.bn_group=0"], "trainer.bn_group must be a whole number of images from 1"),
        (["trainer.tf32=maybe"], "trainer.tf32 must be true, false or null"),
        (["schedule.warmup_until_error=0.8"], "needs a warm-up to end"),
        (
            ["schedule.warmup_until_error=1.5", "schedule.warmup_iters=10"],
            "must be a training error (0.8 = 80%) in (0, 1]",
        ),
        (
            ["schedule.warmup_until_error=0.8", "schedule.warmup_iters=10", "schedule.warmup=linear"],
            "the warm-up must be constant",
        ),
    ],
)
def test_bad_settings_are_one_clear_error(overrides: list[str], needle: str) -> None:
    from cnnbench.rundir.validate import check_config

    with pytest.raises(CnnbenchError) as error:
        check_config(_compose(*overrides))
    assert needle in str(error.value)


def test_numerics_group_combines_with_the_experiments() -> None:
    from cnnbench.rundir.validate import check_config

    paper = _compose("numerics=paper")
    assert (paper.trainer.precision, paper.trainer.tf32, paper.trainer.bn_group) == ("fp32", False, 64)
    fast = _compose()
    assert (fast.trainer.precision, fast.trainer.tf32, fast.trainer.bn_group) == ("auto", None, None)
    for experiment in ("degradation", "degradation_quick", "degradation_seeds"):
        cfg = _compose(f"experiment={experiment}", "numerics=paper", "model=plain", "depth=20")
        assert cfg.trainer.bn_group == 64 and cfg.trainer.precision == "fp32"
        check_config(cfg)  # every job of `-m experiment=... numerics=paper` passes the checks
    resnet110 = _compose("experiment=resnet110", "numerics=paper")
    assert resnet110.schedule.warmup_until_error == 0.8 and resnet110.trainer.bn_group == 64
    check_config(resnet110)


# ----- the warm-up rule, as a function of what it observes --------------------------------------------

RULE = {"name": "paper", "milestones": [32000, 48000], "gamma": 0.1, "warmup_lr": 0.01, "warmup": "constant"}


def test_the_rule_keeps_the_warmup_lr_until_the_error_is_below_the_threshold() -> None:
    lr = LrSchedule({**RULE, "warmup_iters": 2000, "warmup_until_error": 0.8}, 0.1, 64000)
    assert lr(0) == lr(1999) == 0.01  # undecided: the bound is the longest the warm-up may last
    assert not lr.observe(100, 0.9) and not lr.observe(200, 0.8)  # strictly below
    assert lr.observe(300, 0.75)
    assert lr(299) == 0.01 and lr(300) == 0.1 and math_close(lr(32000), 0.01)
    assert not lr.observe(400, 0.1)  # decided once
    assert lr.record() == {
        "warmup_until_error": 0.8,
        "warmup_ended_at": 300,
        "warmup_end_train_error": 0.75,
        "warmup_ended_by": "error",
    }
    assert lr.describe().startswith("warm-up ended at iteration 300 (training error 75.00% < 80%)")


def test_the_bound_ends_a_warmup_whose_error_stays_high() -> None:
    lr = LrSchedule({**RULE, "warmup_iters": 250, "warmup_until_error": 0.5}, 0.1, 64000)
    assert not lr.observe(200, 0.9)
    assert lr.observe(300, 0.4)  # past the bound: it ended at 250, whatever this window's error
    assert (lr.ended_at, lr.ended_by) == (250, "bound")
    assert lr(249) == 0.01 and lr(250) == 0.1


def test_threshold_one_ends_at_the_first_check_and_state_round_trips() -> None:
    lr = LrSchedule({**RULE, "warmup_iters": 400, "warmup_until_error": 1.0}, 0.1, 64000)
    assert lr.observe(5, 1.0)
    assert lr.ended_at == 5 and lr(4) == 0.01 and lr(5) == 0.1
    again = LrSchedule({**RULE, "warmup_iters": 400, "warmup_until_error": 1.0}, 0.1, 64000)
    again.load_state_dict(lr.state_dict())
    assert [again(i) for i in range(10)] == [lr(i) for i in range(10)] and again.record() == lr.record()


def test_without_the_rule_it_is_the_fixed_schedule() -> None:
    schedule = {**RULE, "warmup_iters": 400}
    lr, pure = LrSchedule(schedule, 0.1, 64000), make_lr_schedule(schedule, 0.1, 64000)
    assert not lr.observe(100, 0.0) and lr.record() == {}
    assert all(lr(i) == pure(i) for i in (0, 399, 400, 32000, 63999))


def test_cosine_after_the_rule_starts_where_the_warmup_ended() -> None:
    cosine = {
        "name": "cosine",
        "min_lr": 0.0,
        "warmup_lr": 0.01,
        "warmup_iters": 100,
        "warmup_until_error": 0.5,
    }
    lr = LrSchedule(cosine, 0.1, 1020)
    lr.observe(20, 0.4)
    assert lr(19) == 0.01 and lr(20) == 0.1
    assert math_close(lr(520), 0.05)  # halfway through the 1000 iterations after the warm-up


def math_close(a: float, b: float) -> bool:
    return abs(a - b) < 1e-12


# ----- digits runs: the rule, ghost BatchNorm, records and exact resume --------------------------------

ITERS = 30
DIGITS = [
    "data=digits",
    "model=plain",
    "depth=8",
    f"trainer.max_iters={ITERS}",
    "trainer.batch_size=32",
    "trainer.log_every=5",
    "trainer.eval_every=20",
    "trainer.ckpt_every=20",
    "trainer.log_grad_every=0",
    # Explicit fast path: no probe, the same arithmetic on every machine.
    "trainer.precision=fp32",
    "trainer.channels_last=false",
    "trainer.compile=false",
    "trainer.tf32=false",
    "trainer.bn_group=16",  # two groups per batch
    "schedule.warmup_lr=0.01",
    "schedule.warmup_iters=1000",
]
THRESHOLD = "schedule.warmup_until_error=0.84"


@pytest.fixture
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    cudnn_tf32, matmul_tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = cudnn_tf32, matmul_tf32


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _metrics(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    del metrics["elapsed_seconds"], metrics["attempts"]
    return metrics


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted digits run with the rule and ghost BatchNorm (one thread, in-process)."""
    from cnnbench.engine.trainer import run

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        folder = tmp_path_factory.mktemp("reference")
        run(_compose(*DIGITS, THRESHOLD), folder)
    finally:
        torch.set_num_threads(threads)
    return folder


def test_the_lr_stays_at_warmup_lr_until_the_logged_error_is_below_the_threshold(reference: Path) -> None:
    curves = _scalars(reference)
    errors, lrs = dict(curves["error/train"]), dict(curves["lr"])
    ended = json.loads((reference / "metrics.json").read_text())["warmup_ended_at"]
    first_below = min(step for step, error in errors.items() if error < 0.84)
    assert ended == first_below
    assert 5 < ended < ITERS, "the rule should decide mid-run for this test to mean something"
    # lr logged at step s is the lr of iteration s-1: warmup_lr through the window that ended it.
    assert all(lr == pytest.approx(0.01) for step, lr in lrs.items() if step <= ended)
    assert all(lr == pytest.approx(0.1) for step, lr in lrs.items() if step > ended)
    metrics = json.loads((reference / "metrics.json").read_text())
    assert metrics["warmup_ended_by"] == "error" and metrics["warmup_end_train_error"] == pytest.approx(
        errors[ended], abs=1e-6
    )


def test_records_say_which_numerics_the_run_used(reference: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    env = json.loads((reference / "env.json").read_text())
    assert env["numerics"] == {
        "name": "custom",
        "label": "custom (fp32, BN/16)",
        "precision": "fp32",
        "tf32": False,
        "bn_images": 16,
        "bn_group": 16,
    }
    events = EventAccumulator(str(reference))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hp = hparams.session_start_info.hparams
    assert hp["numerics"].string_value == "custom" and hp["bn_images"].number_value == 16
    assert hp["warmup_until_error"].number_value == pytest.approx(0.84)
    assert not torch.backends.cudnn.allow_tf32  # trainer.tf32=false, applied by the run


def test_threshold_one_ends_the_warmup_at_the_first_check(tmp_path: Path, one_thread: None, caplog) -> None:
    from cnnbench.engine.trainer import run

    caplog.set_level(logging.INFO, logger="cnnbench")
    run(_compose(*DIGITS, "schedule.warmup_until_error=1.0", "trainer.max_iters=10"), tmp_path)
    lrs = dict(_scalars(tmp_path)["lr"])
    assert lrs[5] == pytest.approx(0.01) and lrs[10] == pytest.approx(0.1)
    assert json.loads((tmp_path / "metrics.json").read_text())["warmup_ended_at"] == 5
    assert "warm-up ended at iteration 5 (training error" in caplog.text


@pytest.mark.parametrize("before_switch", [True, False])
def test_interrupted_before_or_after_the_switch_resumes_exactly(
    before_switch: bool, reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    from cnnbench.engine.step import TrainStep
    from cnnbench.engine.trainer import run
    from cnnbench.rundir.checkpoint import load_checkpoint

    ended = json.loads((reference / "metrics.json").read_text())["warmup_ended_at"]
    stop_at = ended - 3 if before_switch else ended + 2  # mid-window, either side of the switch
    step = TrainStep.__call__

    def step_with_ctrl_c(self: TrainStep, iteration: int) -> None:
        step(self, iteration)
        if iteration + 1 == stop_at:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(TrainStep, "__call__", step_with_ctrl_c)
    cfg = _compose(*DIGITS, THRESHOLD)
    with pytest.raises(SystemExit):
        run(cfg, tmp_path)
    saved = load_checkpoint(tmp_path / "checkpoint.pt")
    assert saved["iteration"] == stop_at
    assert saved["warmup"]["ended_at"] == (None if before_switch else ended)

    monkeypatch.setattr(TrainStep, "__call__", step)
    run(cfg, tmp_path, resume=True)
    assert _metrics(tmp_path) == _metrics(reference)
    ours, theirs = load_checkpoint(tmp_path / "checkpoint.pt"), load_checkpoint(reference / "checkpoint.pt")
    for name, tensor in theirs["model"].items():
        assert torch.equal(ours["model"][name], tensor), name
    assert _scalars(tmp_path) == _scalars(reference)


def test_a_config_saved_before_these_keys_still_trains(tmp_path: Path, one_thread: None) -> None:
    """Older saved configs lack trainer.bn_group/tf32 and schedule.warmup_until_error: plain numerics."""
    from cnnbench.engine.trainer import run

    base = [k for k in DIGITS if not k.startswith(("trainer.bn_group", "trainer.tf32"))]
    cfg = _compose(*base, "trainer.max_iters=4", "trainer.log_every=2")
    OmegaConf.set_struct(cfg, False)
    del cfg.trainer["bn_group"], cfg.trainer["tf32"], cfg.schedule["warmup_until_error"]
    OmegaConf.set_struct(cfg, True)
    run(cfg, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "completed" and "warmup_ended_at" not in metrics
    assert json.loads((tmp_path / "env.json").read_text())["numerics"]["label"] == "fast (fp32, BN/32)"


# ----- the report ------------------------------------------------------------------------------------


def test_numerics_labels() -> None:
    assert describe("fp32", bn_images(128, bn_group=64), bn_group=64)["label"] == "paper (fp32, BN/64)"
    assert describe("bf16", bn_images(128))["label"] == "fast (bf16, BN/128)"
    assert describe("fp32", bn_images(128), tf32=True)["label"] == "fast (tf32, BN/128)"
    assert describe("fp32", bn_images(64))["name"] == "paper"  # batch 64 on one device: the same numerics
    assert bn_images(128, world_size=2) == 64 and bn_images(128, world_size=2, sync_bn=True) == 128


def test_report_shows_the_numerics(tmp_path: Path) -> None:
    from test_report import make_run, read_csv

    from cnnbench.reporting import make_report

    def with_env(folder: Path, env: dict, bn_group: int | None = None) -> None:
        (folder / "env.json").write_text(json.dumps(env))
        if bn_group:
            config = folder / ".hydra" / "config.yaml"
            cfg = OmegaConf.load(config)
            cfg.trainer.bn_group = bn_group
            OmegaConf.save(cfg, config)

    paper = {"precision": "fp32", "numerics": describe("fp32", 64, bn_group=64)}
    for seed in (0, 1):
        with_env(make_run(tmp_path / "sweep" / f"paper{seed}", seed=seed), paper, bn_group=64)
        # An older run: no numerics record, derived from its precision and batch.
        with_env(
            make_run(tmp_path / "sweep" / f"fast{seed}", seed=seed), {"precision": "bf16", "device": "cpu"}
        )
    result = make_report([tmp_path / "sweep"])
    rows = read_csv(result.csv)
    assert sorted((r["numerics"], r["n_seeds"], r["options"]) for r in rows) == [
        ("fast (bf16, BN/128)", "2", "shortcut=A, trainer.bn_group=None"),
        ("paper (fp32, BN/64)", "2", "shortcut=A, trainer.bn_group=64"),
    ]
    md = result.md.read_text()
    assert "| numerics |" in md
    assert "paper = fp32 and 64 images" in md

    alone = make_report([tmp_path / "sweep" / "fast0", tmp_path / "sweep" / "fast1"], out=tmp_path / "r")
    assert "Numerics: fast (bf16, BN/128)." in alone.md.read_text()
