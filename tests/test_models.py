"""Model families: parameter counts against the papers, shapes, stochastic depth, error messages.

Parameter counts are taken on the meta device (no memory, no init cost), so even WRN-28-10 is cheap;
forward passes use small depths.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from cnnbench.core.reference import conditions, entries
from cnnbench.errors import CnnbenchError
from cnnbench.models import build_model, get_model_spec, list_models, paper_param_count
from cnnbench.models.common import ResidualBlock, linear_decay
from cnnbench.models.paper import paper_params
from cnnbench.models.preact_resnet import PreActBasicBlock, PreActBottleneck
from cnnbench.models.resnet import BasicBlock, Bottleneck

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "model"
FAMILIES = [
    "alexnet",
    "densenet",
    "inception",
    "lenet5",
    "plain",
    "preact_resnet",
    "resnet",
    "vgg",
    "wide_resnet",
]


def count(name: str, depth: int, num_classes: int = 10, **options: object) -> int:
    with torch.device("meta"):
        model = build_model(name, depth, num_classes, **options)
    return sum(p.numel() for p in model.parameters())


def matches_paper(params: int, millions: float) -> bool:
    """Within 2%, or equal when rounded to the printed precision (0.27 -> 2 decimals, 1.7 -> 1)."""
    decimals = len(repr(millions).split(".")[1]) if "." in repr(millions) else 0
    return abs(params / 1e6 - millions) <= 0.02 * millions or round(params / 1e6, decimals) == millions


# --- parameter counts ---------------------------------------------------------------------------


def test_resnet20_count_is_unchanged() -> None:
    assert count("resnet", 20) == 269_722


@pytest.mark.parametrize(
    ("depth", "millions"), [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85), (110, 1.7), (1202, 19.4)]
)
@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_resnet_table6(depth: int, millions: float, shortcut: str) -> None:
    assert matches_paper(count("resnet", depth, shortcut=shortcut), millions)
    assert paper_param_count("resnet", depth, {"shortcut": shortcut}) == millions


# Every figure in reference.yaml for a family cnnbench builds, built with exactly the options it is for
# (a range such as `dropout: {gt: 0}` does not change the count; the builder's default is used).
ALL_FIGURES = [
    (
        entry["model"],
        entry["depth"],
        {k: v for k, v in conditions(entry).items() if not isinstance(v, dict)},
        entry["params_m"],
    )
    for entry in entries()
    if entry["model"] in FAMILIES and entry.get("params_m") is not None and not entry.get("params_misprinted")
]


@pytest.mark.parametrize(("name", "depth", "options", "millions"), ALL_FIGURES)
def test_every_paper_figure_matches(name: str, depth: int, options: dict, millions: float) -> None:
    params = count(name, depth, **options)
    assert matches_paper(params, millions), f"{name}-{depth} {options}: {params:,} vs {millions}M"
    assert paper_param_count(name, depth, options) == millions


@pytest.mark.parametrize(
    ("name", "depth", "options", "millions"),
    [
        ("resnet", 164, {"block": "bottleneck"}, 1.7),
        ("resnet", 164, {"block": "bottleneck", "shortcut": "B"}, 1.7),
        ("resnet", 1001, {"block": "bottleneck", "shortcut": "B"}, 10.2),
        ("preact_resnet", 164, {}, 1.7),
        ("preact_resnet", 1001, {}, 10.2),
        ("resnet", 110, {"stochastic_depth": 0.5}, 1.7),
        ("resnet", 1202, {"stochastic_depth": 0.5}, 19.4),  # not the DenseNet table's misprinted 10.2
        ("wide_resnet", 16, {"width": 8}, 11.0),
        ("wide_resnet", 28, {}, 36.5),
        ("wide_resnet", 40, {"width": 4}, 8.9),
        ("wide_resnet", 28, {"dropout": 0.0}, 36.5),
        ("densenet", 40, {"bottleneck": False}, 1.0),
        ("densenet", 100, {"bottleneck": False}, 7.0),
        ("densenet", 100, {}, 0.8),
        ("densenet", 250, {"growth_rate": 24}, 15.3),
        ("densenet", 190, {"growth_rate": 40}, 25.6),
    ],
)
def test_briefed_figures(name: str, depth: int, options: dict, millions: float) -> None:
    assert matches_paper(count(name, depth, **options), millions)
    assert paper_param_count(name, depth, options) == millions


@pytest.mark.parametrize(
    ("depth", "block", "max_extra"),
    [
        (20, "basic", 0.02),
        (56, "basic", 0.01),
        (110, "basic", 0.01),
        (29, "bottleneck", 0.2),
        (164, "bottleneck", 0.03),
    ],
)
def test_plain_equals_option_a_resnet(depth: int, block: str, max_extra: float) -> None:
    plain = count("plain", depth, block=block)
    assert plain == count("resnet", depth, block=block, shortcut="A")
    # Option B adds the projections (3 with bottleneck blocks, whose first one widens 16 -> 64).
    option_b = count("resnet", depth, block=block, shortcut="B")
    assert plain < option_b < plain * (1 + max_extra)


def test_stochastic_depth_adds_no_parameters() -> None:
    assert count("resnet", 110, stochastic_depth=0.5) == count("resnet", 110) == 1_727_962
    assert count("preact_resnet", 164, stochastic_depth=0.5) == count("preact_resnet", 164)


def test_paper_params_are_the_defaults_figures() -> None:
    for name in list_models():
        depths = {e["depth"] for e in entries() if e["model"] == name}
        default_figures = {
            depth: paper_param_count(name, depth)
            for depth in depths
            if paper_param_count(name, depth) is not None
        }
        assert paper_params(name) == default_figures, name
    assert paper_params("resnet") == {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7, 1202: 19.4}
    assert paper_params("preact_resnet") == {164: 1.7, 1001: 10.2}
    assert paper_params("wide_resnet") == {16: 17.1, 22: 26.8, 28: 36.5}
    assert paper_params("densenet") == {100: 0.8}
    assert paper_params("plain") == paper_params("vgg") == {}


def test_paper_param_count_none_where_no_paper_prints_one() -> None:
    assert paper_param_count("plain", 20, {}) is None
    assert paper_param_count("vgg", 16, {}) is None
    assert paper_param_count("resnet", 26, {}) is None
    assert paper_param_count("resnet", 20, {"block": "bottleneck"}) is None
    assert paper_param_count("wide_resnet", 28, {"width": 3}) is None
    assert paper_param_count("densenet", 100, {"bottleneck": True, "compression": 1.0}) is None
    assert paper_param_count("resnet", 20, {}, num_classes=100) is None
    # Options as the Hydra config gives them (DictConfig, with `name`); compression null picks by bottleneck.
    assert paper_param_count("wide_resnet", 40, OmegaConf.create({"name": "wide_resnet", "width": 4})) == 8.9
    assert paper_param_count("densenet", 40, {"bottleneck": False, "compression": None}) == 1.0
    with pytest.raises(CnnbenchError, match="Available models"):
        paper_param_count("resnext", 29, {})


# --- configs --------------------------------------------------------------------------------------


def test_every_family_has_a_config_with_the_builders_defaults() -> None:
    import inspect

    assert set(FAMILIES) <= set(list_models())
    for name in FAMILIES:
        conf = OmegaConf.to_container(OmegaConf.load(CONF_DIR / f"{name}.yaml"))
        assert conf.pop("name") == name
        spec = get_model_spec(name)
        assert spec.is_valid_depth(conf.pop("default_depth")), f"{name}.yaml: default_depth"
        params = inspect.signature(spec.builder).parameters
        for key, value in conf.items():
            assert key in params, f"{name}.yaml: {key}"
            assert params[key].default == value, f"{name}.yaml: {key}"


# --- forward passes -------------------------------------------------------------------------------

FORWARD_CASES = [
    ("resnet", 8, {}),
    ("resnet", 14, {"shortcut": "B"}),
    ("resnet", 11, {"block": "bottleneck"}),
    ("resnet", 20, {"block": "bottleneck", "stochastic_depth": 0.5}),
    ("plain", 8, {}),
    ("plain", 11, {"block": "bottleneck"}),
    ("preact_resnet", 11, {}),
    ("preact_resnet", 8, {"block": "basic", "stochastic_depth": 0.5}),
    ("wide_resnet", 10, {"width": 1}),
    ("wide_resnet", 16, {"width": 2, "stochastic_depth": 0.8}),
    ("densenet", 10, {"growth_rate": 4}),
    ("densenet", 13, {"growth_rate": 4, "bottleneck": False}),
    ("densenet", 16, {"growth_rate": 6, "compression": 0.7}),
    ("vgg", 11, {}),
    ("vgg", 13, {}),
    ("inception", 22, {}),
    ("lenet5", 5, {}),
    ("alexnet", 8, {}),
]


@pytest.mark.parametrize(("name", "depth", "options"), FORWARD_CASES)
@pytest.mark.parametrize("train", [True, False])
def test_forward_shape(name: str, depth: int, options: dict, train: bool) -> None:
    torch.manual_seed(0)
    model = build_model(name, depth, num_classes=7, **options).train(train)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


# --- stochastic depth ---------------------------------------------------------------------------


def residual_blocks(model: nn.Module) -> list[ResidualBlock]:
    return [m for m in model.modules() if isinstance(m, ResidualBlock)]


def randomize_bn(model: nn.Module) -> None:
    """Non-trivial BN statistics and affine parameters, so eval-mode checks mean something."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)


def test_linear_decay() -> None:
    probs = linear_decay(9, 0.5)
    assert probs[-1] == pytest.approx(0.5)
    assert probs[0] == pytest.approx(1 - 0.5 / 9)
    assert all(a > b for a, b in zip(probs, probs[1:], strict=False))
    model = build_model("resnet", 20, stochastic_depth=0.5)
    assert [b.survival_prob for b in residual_blocks(model)] == pytest.approx(probs)
    assert all(b.survival_prob == 1.0 for b in residual_blocks(build_model("resnet", 20)))


@pytest.mark.parametrize(
    ("name", "depth", "options"),
    [
        ("resnet", 20, {}),
        ("resnet", 20, {"block": "bottleneck"}),
        ("preact_resnet", 20, {"block": "basic"}),
        ("preact_resnet", 20, {}),
        ("wide_resnet", 16, {"width": 1}),
    ],
)
def test_training_drops_whole_branches(name: str, depth: int, options: dict) -> None:
    torch.manual_seed(0)
    model = build_model(name, depth, stochastic_depth=0.2, **options).train()
    blocks = residual_blocks(model)
    calls = [0]
    for block in blocks:  # conv1 runs exactly when the block's residual branch runs
        block.conv1.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(1)
    with torch.no_grad():
        outputs = [model(x) for _ in range(5)]
    assert 0 < calls[0] < 5 * len(blocks)
    assert any(not torch.equal(outputs[0], o) for o in outputs[1:])


def test_stochastic_depth_off_draws_no_random_numbers() -> None:
    # resnet/plain behave exactly as before stochastic depth existed: same outputs, same RNG stream.
    model = build_model("resnet", 14).train()
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(3)
    with torch.no_grad():
        model(x)
    after = torch.rand(1)
    torch.manual_seed(3)
    assert torch.equal(after, torch.rand(1))


def test_dropped_block_is_its_shortcut() -> None:
    x = torch.randn(2, 16, 8, 8)
    block = BasicBlock(16, 32, 2, residual=True, shortcut="B").train()
    block.survival_prob = 0.0
    with torch.no_grad():
        assert torch.equal(block(x), torch.relu(block.shortcut(x)))
    preact = PreActBasicBlock(16, 16, 1).train()
    preact.survival_prob = 0.0
    with torch.no_grad():
        assert torch.equal(preact(x), x)


def test_eval_scales_the_branch_by_its_survival_probability() -> None:
    torch.manual_seed(0)
    block = BasicBlock(16, 16, 1, residual=True, shortcut="A")
    randomize_bn(block)
    block.survival_prob = 0.3
    block.eval()
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        branch = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x)))))
        expected = torch.relu(0.3 * branch + x)
        assert torch.allclose(block(x), expected, atol=1e-6)
        assert torch.equal(block(x), block(x))


def _fold_survival_into_last_layer(model: nn.Module) -> nn.Module:
    """A copy whose branches end with weights scaled by p_l and stochastic depth off."""
    folded = copy.deepcopy(model)
    for block in residual_blocks(folded):
        p = block.survival_prob
        if isinstance(block, BasicBlock):
            # Eval BN is affine: p * BN(y) is BN(y) with gamma and beta scaled by p.
            last = [block.bn2.weight, block.bn2.bias]
        elif isinstance(block, Bottleneck):
            last = [block.bn3.weight, block.bn3.bias]
        elif isinstance(block, PreActBasicBlock):
            last = [block.conv2.weight]
        else:
            assert isinstance(block, PreActBottleneck)
            last = [block.conv3.weight]
        with torch.no_grad():
            for t in last:
                t.mul_(p)
        block.survival_prob = 1.0
    return folded


@pytest.mark.parametrize(
    ("name", "depth", "options"),
    [
        ("resnet", 14, {}),
        ("resnet", 14, {"shortcut": "B"}),
        ("resnet", 11, {"block": "bottleneck"}),
        ("preact_resnet", 11, {}),
        ("wide_resnet", 10, {"width": 1, "dropout": 0.3}),
    ],
)
def test_eval_equals_expected_scaling(name: str, depth: int, options: dict) -> None:
    torch.manual_seed(0)
    model = build_model(name, depth, stochastic_depth=0.5, **options)
    randomize_bn(model)
    model.eval()
    reference = _fold_survival_into_last_layer(model).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        assert torch.equal(out, model(x))  # deterministic
        assert torch.allclose(out, reference(x), rtol=1e-4, atol=1e-5)
        # ...and differs from ignoring the survival probabilities.
        unscaled = copy.deepcopy(model)
        for block in residual_blocks(unscaled):
            block.survival_prob = 1.0
        assert not torch.allclose(out, unscaled(x), rtol=1e-4, atol=1e-5)


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "depth", "options", "expected"),
    [
        # The chosen block's rule only: 29 (9n+2) is not suggested to a basic-block net.
        ("resnet", 21, {}, ["6n+2 for block=basic", "14, 20, 26, 32;"]),
        ("resnet", 32, {"block": "bottleneck"}, ["9n+2", "29", "38"]),
        ("plain", 26, {"block": "bottleneck"}, ["9n+2", "20", "29"]),
        ("resnet", 29, {}, ["6n+2", "26", "32"]),
        ("preact_resnet", 26, {}, ["9n+2", "20", "29"]),
        ("preact_resnet", 29, {"block": "basic"}, ["6n+2", "26", "32"]),
        ("wide_resnet", 20, {}, ["6n+4", "16", "22"]),
        ("densenet", 43, {}, ["6n+4", "40", "46"]),
        ("densenet", 41, {"bottleneck": False}, ["3n+4", "40", "43"]),
        ("vgg", 12, {}, ["11", "13", "16", "19"]),
        ("inception", 20, {}, ["22"]),
        ("lenet5", 6, {}, ["5"]),
        ("alexnet", 7, {}, ["8"]),
    ],
)
def test_invalid_depth_lists_valid_ones(name: str, depth: int, options: dict, expected: list[str]) -> None:
    with pytest.raises(CnnbenchError) as info:
        build_model(name, depth, **options)
    message = str(info.value)
    assert f"depth={depth}" in message
    for text in expected:
        assert text in message, (text, message)


@pytest.mark.parametrize(
    ("name", "depth", "options", "expected"),
    [
        ("resnet", 20, {"block": "wide"}, ["model.block", "basic", "bottleneck"]),
        ("preact_resnet", 164, {"block": "basic_block"}, ["model.block", "basic", "bottleneck"]),
        ("resnet", 20, {"shortcut": "C"}, ["A", "B"]),
        ("resnet", 20, {"stochastic_depth": 1.5}, ["model.stochastic_depth", "[0, 1]"]),
        ("plain", 20, {"stochastic_depth": 0.5}, ["model.stochastic_depth", "model=resnet", "1.0"]),
        ("wide_resnet", 28, {"width": 0}, ["model.width", ">= 1"]),
        ("wide_resnet", 28, {"width": 2.5}, ["model.width", "integer"]),
        ("wide_resnet", 28, {"dropout": 1.0}, ["model.dropout", "[0, 1)"]),
        ("densenet", 100, {"growth_rate": 0}, ["model.growth_rate", ">= 1"]),
        ("densenet", 100, {"compression": 0.0}, ["model.compression", "(0, 1]"]),
        ("densenet", 100, {"compression": 1.5}, ["model.compression", "(0, 1]"]),
        ("densenet", 100, {"bottleneck": "yes"}, ["model.bottleneck", "true", "false"]),
        ("inception", 22, {"dropout": -0.1}, ["model.dropout"]),
        ("vgg", 16, {"width": 2}, ["no option width", "(none)"]),
        ("wide_resnet", 28, {"growth_rate": 12}, ["no option growth_rate", "width", "dropout"]),
    ],
)
def test_invalid_options_list_valid_ones(name: str, depth: int, options: dict, expected: list[str]) -> None:
    with pytest.raises(CnnbenchError) as info:
        count(name, depth, **options)
    for text in expected:
        assert text in str(info.value), (text, str(info.value))


def test_unknown_model_lists_available_names() -> None:
    with pytest.raises(CnnbenchError) as info:
        build_model("resnext", 29)
    for name in FAMILIES:
        assert name in str(info.value)


def test_he_init_on_convs() -> None:
    torch.manual_seed(0)
    model = build_model("vgg", 11)
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d) and m.in_channels == 64)
    fan_out = conv.out_channels * 9
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.1)


def test_stochastic_depth_trains() -> None:
    # A dropped branch just gets no gradient this step; the loss still backpropagates through the shortcut.
    torch.manual_seed(0)
    model = build_model("resnet", 8, stochastic_depth=0.5).train()
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    assert model.conv1.weight.grad is not None and model.fc.weight.grad is not None
