"""The papers' numbers (cnnbench/core/reference.yaml) against configs composed from the real conf/.

Run folders elsewhere in the tests are written by hand; here every config comes from Hydra's compose API
(as lightning-hydra-template's tests do), so a config key or value that the reference file names
differently from conf/model/*.yaml and the builders shows up as a missing paper number.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from cnnbench.core.config import conf_dir
from cnnbench.core.reference import conditions, entries, family_note, family_options, load_reference
from cnnbench.models import build_model, list_models, paper_param_count
from cnnbench.models.paper import resolved_options
from cnnbench.reporting import make_report, paper_reference

Compose = Callable[..., DictConfig]

# Families in the papers' tables that cnnbench does not build (comparison rows only).
NOT_BUILT = {"nin", "all_cnn", "dsn", "highway", "fractalnet"}

# The papers' columns as a user selects them.
DATASET_OVERRIDES = {
    "C10": ["data=cifar10", "augment=none"],
    "C10+": ["data=cifar10", "augment=standard"],
    "C100": ["data=cifar100", "augment=none"],
    "C100+": ["data=cifar100", "augment=standard"],
    "SVHN": ["data=svhn", "augment=none"],
}

# (method, depth) -> the overrides a user would type for that row's net.
ROW_OVERRIDES: dict[tuple[str, int], list[str]] = {
    ("ResNet-20", 20): ["model=resnet", "depth=20"],
    ("ResNet-32", 32): ["model=resnet", "depth=32"],
    ("ResNet-44", 44): ["model=resnet", "depth=44"],
    ("ResNet-56", 56): ["model=resnet", "depth=56"],
    ("ResNet-110", 110): ["model=resnet", "depth=110"],
    ("ResNet-1202", 1202): ["model=resnet", "depth=1202"],
    ("ResNet-164 (original units)", 164): ["model=resnet", "depth=164", "model.block=bottleneck"],
    ("ResNet-1001 (original units)", 1001): ["model=resnet", "depth=1001", "model.block=bottleneck"],
    ("ResNet [11]", 110): ["model=resnet", "depth=110"],
    ("ResNet (reported by [13])", 110): ["model=resnet", "depth=110"],
    ("ResNet with Stochastic Depth [13]", 110): ["model=resnet", "depth=110", "model.stochastic_depth=0.5"],
    ("ResNet with Stochastic Depth [13]", 1202): ["model=resnet", "depth=1202", "model.stochastic_depth=0.5"],
    ("WRN-40-1", 40): ["model=wide_resnet", "depth=40", "model.width=1"],
    ("WRN-40-2", 40): ["model=wide_resnet", "depth=40", "model.width=2"],
    ("WRN-40-4", 40): ["model=wide_resnet", "depth=40", "model.width=4"],
    ("WRN-16-8", 16): ["model=wide_resnet", "depth=16", "model.width=8"],
    ("WRN-22-8", 22): ["model=wide_resnet", "depth=22", "model.width=8"],
    ("WRN-40-8", 40): ["model=wide_resnet", "depth=40", "model.width=8"],
    ("WRN-16-10", 16): ["model=wide_resnet", "depth=16", "model.width=10"],
    ("WRN-22-10", 22): ["model=wide_resnet", "depth=22", "model.width=10"],
    ("WRN-28-10", 28): ["model=wide_resnet", "depth=28", "model.width=10"],
    ("WRN-28-12", 28): ["model=wide_resnet", "depth=28", "model.width=12"],
    # The DenseNet table's WRN rows on CIFAR are without dropout; conf/model/wide_resnet.yaml has 0.3.
    ("Wide ResNet [41] (WRN-16-8)", 16): [
        "model=wide_resnet",
        "depth=16",
        "model.width=8",
        "model.dropout=0",
    ],
    ("Wide ResNet [41] (WRN-28-10)", 28): ["model=wide_resnet", "depth=28", "model.dropout=0.0"],
    ("Wide ResNet [41] (WRN-16-4) with Dropout", 16): ["model=wide_resnet", "depth=16", "model.width=4"],
    ("ResNet (pre-activation) [12]", 164): ["model=preact_resnet", "depth=164"],
    ("ResNet (pre-activation) [12]", 1001): ["model=preact_resnet", "depth=1001"],
    ("DenseNet (k = 12)", 40): [
        "model=densenet",
        "depth=40",
        "model.growth_rate=12",
        "model.bottleneck=false",
    ],
    ("DenseNet (k = 12)", 100): ["model=densenet", "depth=100", "model.bottleneck=false"],
    ("DenseNet (k = 24)", 100): [
        "model=densenet",
        "depth=100",
        "model.growth_rate=24",
        "model.bottleneck=false",
    ],
    ("DenseNet-BC (k = 12)", 100): ["model=densenet"],  # the defaults
    ("DenseNet-BC (k = 24)", 250): ["model=densenet", "depth=250", "model.growth_rate=24"],
    ("DenseNet-BC (k = 40)", 190): ["model=densenet", "depth=190", "model.growth_rate=40"],
}


def built_entries() -> list[dict[str, Any]]:
    return [e for e in entries() if e["model"] in list_models()]


def entry_id(entry: dict[str, Any]) -> str:
    return f"{entry['method']}-{entry['depth']}"


@pytest.fixture(scope="module")
def compose_config() -> Iterator[Compose]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3", job_name="test_reference"):
        yield lambda *overrides: compose(config_name="config", overrides=list(overrides))
    GlobalHydra.instance().clear()


def lookup(cfg: DictConfig) -> dict[str, Any] | None:
    """paper_reference on the composed config, checked to agree with the config as a run folder keeps it
    (saved by Hydra without resolving, read back by the report the same way)."""
    found = paper_reference(cfg)
    saved = OmegaConf.to_container(OmegaConf.create(OmegaConf.to_yaml(cfg)), resolve=False)
    assert paper_reference(saved) == found
    return found


def model_options(cfg: DictConfig) -> dict[str, Any]:
    """The builder's options, as cnnbench.engine.trainer passes them."""
    options = OmegaConf.to_container(cfg.model, resolve=True)
    return {k: v for k, v in options.items() if k not in ("name", "default_depth")}


def count_params(cfg: DictConfig) -> int:
    with torch.device("meta"):
        model = build_model(cfg.model.name, cfg.depth, num_classes=10, **model_options(cfg))
    return sum(p.numel() for p in model.parameters())


# --- the file itself --------------------------------------------------------------------------------


def test_every_built_row_has_overrides_and_every_override_a_row() -> None:
    rows = {(e["method"], e["depth"]) for e in built_entries()}
    assert rows == set(ROW_OVERRIDES)
    assert {e["model"] for e in entries()} - set(list_models()) == NOT_BUILT


def test_dataset_columns_are_the_configs_data_and_augment(compose_config: Compose) -> None:
    for label, spec in load_reference()["datasets"].items():
        cfg = compose_config(*DATASET_OVERRIDES[label])
        assert (cfg.data.name, cfg.augment.name) == (spec["data"], spec["augment"]), label


@pytest.mark.parametrize("family", sorted(set(load_reference()["families"]) & set(list_models())))
def test_family_options_are_config_keys_and_builder_options(compose_config: Compose, family: str) -> None:
    cfg = compose_config(f"model={family}")
    builder_options = resolved_options(family)
    for option in family_options(family):
        assert option in cfg.model, f"{family}: conf/model/{family}.yaml has no {option!r}"
        assert option in builder_options, f"{family}: the builder takes no {option!r}"
    for entry in (e for e in entries() if e["model"] == family):
        assert set(conditions(entry)) == set(family_options(family)), entry_id(entry)


# --- test errors: every row is found by the config a user composes ------------------------------------


ERROR_CASES = [
    pytest.param(entry, label, id=f"{entry_id(entry)}-{label}")
    for entry in built_entries()
    for label in entry.get("errors") or {}
]


@pytest.mark.parametrize(("entry", "label"), ERROR_CASES)
def test_composed_config_finds_its_row(compose_config: Compose, entry: dict, label: str) -> None:
    cfg = compose_config(*ROW_OVERRIDES[(entry["method"], entry["depth"])], *DATASET_OVERRIDES[label])
    found = lookup(cfg)
    assert found is not None, f"{entry_id(entry)} {label}: no paper number for {OmegaConf.to_yaml(cfg.model)}"
    matches = [found, *found["also"]]
    cell = entry["errors"][label]
    expected = cell["error"] if isinstance(cell, dict) else cell
    assert any(m["method"] == entry["method"] and m["test_error"] == expected for m in matches)
    # Exactly that row: every match is the same net (primary source plus second-hand reports of it).
    same_net = {
        e["method"]
        for e in entries()
        if (e["model"], e["depth"], conditions(e)) == (entry["model"], entry["depth"], conditions(entry))
    }
    assert {m["method"] for m in matches} <= same_net
    assert all(m["dataset"] == label and m["depth"] == cfg.depth for m in matches)


# --- each family's default config ----------------------------------------------------------------------

# (method, C10+ error) a default `model=NAME data=cifar10` run is compared with, or None.
DEFAULTS = {
    "resnet": ("ResNet-20", 8.75),
    "preact_resnet": ("ResNet (pre-activation) [12]", 5.46),  # bottleneck ResNet-164
    "densenet": ("DenseNet-BC (k = 12)", 4.51),  # depth 100, k=12, bottleneck, compression null -> 0.5
    # WRN-28-10 with dropout 0.3 (the default): the DenseNet table's WRN-28-10 (4.17) is without dropout,
    # and the reference file has no row with dropout, so no number is the honest answer.
    "wide_resnet": None,
    "plain": None,  # He et al. show the plain nets only as curves (the file's note says so)
    # CIFAR variants of ImageNet nets (and LeNet-5): no paper has a CIFAR number for them.
    "vgg": None,
    "inception": None,
    "alexnet": None,
    "lenet5": None,
}


def test_defaults_table_covers_every_family() -> None:
    assert set(DEFAULTS) == set(list_models())
    assert family_note("plain")


@pytest.mark.parametrize("family", sorted(DEFAULTS))
def test_default_config_finds_its_row(compose_config: Compose, family: str) -> None:
    cfg = compose_config(f"model={family}", "data=cifar10")
    assert cfg.depth == cfg.model.default_depth
    found = lookup(cfg)
    if DEFAULTS[family] is None:
        assert found is None, found
    else:
        assert found is not None, OmegaConf.to_yaml(cfg.model)
        assert (found["method"], found["test_error"], found["dataset"]) == (*DEFAULTS[family], "C10+")


def test_wide_resnet_default_without_dropout_finds_the_densenet_tables_row(compose_config: Compose) -> None:
    found = lookup(compose_config("model=wide_resnet", "model.dropout=0"))
    assert (found["method"], found["test_error"]) == ("Wide ResNet [41] (WRN-28-10)", 4.17)


def test_stochastic_depth_is_a_survival_probability(compose_config: Compose) -> None:
    off = lookup(compose_config("model=resnet", "depth=110", "model.stochastic_depth=1.0"))
    on = lookup(compose_config("model=resnet", "depth=110", "model.stochastic_depth=0.5"))
    other = lookup(compose_config("model=resnet", "depth=110", "model.stochastic_depth=0.8"))
    assert off["test_error"] == 6.43 and on["test_error"] == 5.23
    assert other is None  # the paper's number is for p_L = 0.5 only
    assert lookup(compose_config("model=resnet", "depth=20", "model.shortcut=B")) is None  # Table 6 is A
    assert lookup(compose_config("model=preact_resnet", "model.block=basic")) is None  # 164 basic: no row


# --- the end-to-end defect: a trained run's folder, then `cnnbench report` --------------------------------


def write_run(folder: Path, cfg: DictConfig, test_error: float = 0.09) -> Path:
    """A run folder as training leaves it: .hydra/config.yaml and metrics.json (docs/design-sketch.md)."""
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")  # what Hydra saves: interpolations unresolved
    metrics = {
        "status": "completed", "model": cfg.model.name, "depth": cfg.depth, "params": count_params(cfg),
        "iteration": 100, "max_iters": 100, "train_error": 0.01, "train_loss": 0.05, "test_error": test_error,
        "test_loss": 0.3, "best_test_error": test_error, "seed": cfg.seed, "data": cfg.data.name,
    }  # fmt: skip
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def report_row(run: Path, out: Path) -> dict[str, str]:
    result = make_report([run], out=out)
    with result.csv.open(newline="") as f:
        (row,) = list(csv.DictReader(f))
    return row


@pytest.mark.parametrize(
    ("overrides", "paper"),
    [
        (["data=cifar10", "model=resnet", "depth=20"], "8.75"),
        (["model=resnet", "depth=110", "model.stochastic_depth=0.5", "augment=standard"], "5.23"),
        (["model=resnet", "depth=110", "model.stochastic_depth=1.0"], "6.43"),
        # No depth override: the saved config says `depth: ${model.default_depth}`.
        (["model=densenet", "data=cifar10"], "4.51"),
        (["model=preact_resnet", "data=cifar100"], "24.33"),
    ],
)
def test_report_of_a_composed_run_shows_the_paper_number(
    compose_config: Compose, tmp_path: Path, overrides: list[str], paper: str
) -> None:
    cfg = compose_config(*overrides)
    run = write_run(tmp_path / "run", cfg)
    if "depth=" not in " ".join(overrides):
        assert "${model.default_depth}" in (run / ".hydra" / "config.yaml").read_text()
    row = report_row(run, tmp_path / "out")
    assert row["paper_test_error_pct"] == paper, row
    assert row["depth"] == str(cfg.depth)
    assert math.isclose(float(row["diff_pct"]), 9.0 - float(row["paper_test_error_mean_pct"] or paper))


def test_report_command_on_a_default_resnet20_run(compose_config: Compose, tmp_path: Path, cli) -> None:
    run = write_run(tmp_path / "run", compose_config("data=cifar10", "model=resnet", "depth=20"))
    result = cli("report", str(run), "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert "8.75" in result.output
    assert "8.75" in (tmp_path / "out" / "report.md").read_text()


# --- parameter counts: every printed figure against the net the composed config builds ------------------


def matches_printed(params: int, millions: float) -> bool:
    """Within 5 %, or equal at the printed precision (0.27 -> 2 decimals, 1.7 -> 1)."""
    decimals = len(repr(millions).split(".")[1]) if "." in repr(millions) else 0
    return abs(params / 1e6 - millions) <= 0.05 * millions or round(params / 1e6, decimals) == millions


@pytest.mark.parametrize(
    "entry", [pytest.param(e, id=entry_id(e)) for e in entries() if e.get("params_m") is not None]
)
def test_printed_parameter_count_is_the_built_nets(compose_config: Compose, entry: dict) -> None:
    if entry["model"] not in list_models():
        assert entry["model"] in NOT_BUILT
        return
    cfg = compose_config(*ROW_OVERRIDES[(entry["method"], entry["depth"])])
    params = count_params(cfg)
    millions = entry["params_m"]
    if entry.get("params_misprinted"):
        # The note must stay true: the printed figure is not this net's, and the lookup gives the right one.
        assert not matches_printed(params, millions), f"{entry_id(entry)}: {params:,} vs {millions}M"
        figure = paper_param_count(cfg.model.name, cfg.depth, cfg.model)
        assert figure is not None and matches_printed(params, figure)
        return
    assert matches_printed(params, millions), f"{entry_id(entry)}: {params:,} vs {millions}M"
    assert paper_param_count(cfg.model.name, cfg.depth, cfg.model) == millions
