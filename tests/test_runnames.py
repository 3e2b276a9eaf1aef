"""Sweep job folders named by what varies (cnnbench/rundir/names.py): the rule, the resolver, resume's naming.

No training here: tests/test_tensorboard.py runs a real sweep and resumes it.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from cnnbench.rundir import names as runnames
from cnnbench.rundir.names import Naming, job_name, record_job_name, safe_folder_name, varying_keys

NAMING = Naming(frozenset({"experiment"}))
TINY = ["data=digits", "trainer.max_iters=400", "trainer.eval_every=100"]


def expand(sweep: list[str], params: dict | None = None) -> list[list[str]]:
    """The jobs' overrides, as Hydra's BasicSweeper forms them (params first, a later key replaces)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = [f"{k}={v}" for k, v in (params or {}).items()] + sweep
    final: dict[str, list[str]] = {}
    for o in OverridesParser.create().parse_overrides(args):
        key = o.get_key_element()
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        final[key] = [f"{key}={v}" for v in values]
    return [list(c) for c in itertools.product(*final.values())]


def names(sweep: list[str], params: dict | None = None) -> list[str]:
    varying = varying_keys(sweep, params)
    return [job_name(job, varying, NAMING) for job in expand(sweep, params)]


# ---- which keys vary ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sweep", "params", "expected"),
    [
        ([*TINY, "model=plain", "depth=8,20"], None, {"depth"}),
        (["depth=range(8,21,6)", "seed=choice(0,1)", "data=digits"], None, {"depth", "seed"}),
        (["depth=choice(8)", "model=plain,resnet"], None, {"model"}),  # one value is a constant
        (["lr=interval(0.01,0.1)"], None, {"lr"}),  # Optuna & co. draw a value per job
        (["model=glob(*)"], None, {"model"}),  # options known to Hydra's config loader only
        (["experiment=degradation"], {"model": "plain,resnet", "depth": "20,32,44,56"}, {"model", "depth"}),
        # A command-line key replaces the experiment's sweep of it (as BasicSweeper does).
        (["seed=0"], {"model": "plain,resnet", "seed": "0,1,2"}, {"model"}),
        (["seed=0,1"], {"model": "plain,resnet", "depth": 8}, {"model", "seed"}),
        (["+extra=a,b", "data=digits"], None, {"+extra"}),
    ],
)
def test_varying_keys(sweep: list[str], params: dict | None, expected: set[str]) -> None:
    assert varying_keys(sweep, params) == expected


# ---- job names ---------------------------------------------------------------------------------------------


def test_constants_are_left_out_and_seed_sorts_last() -> None:
    assert names(["data=digits", "model=plain", "depth=8,20", "trainer.eval_every=100"]) == [
        "depth=8",
        "depth=20",
    ]
    got = names(["experiment=degradation_quick", "trainer.max_iters=10,20", "seed=0,1"], {"model": "plain"})
    # seed after trainer.max_iters, though "s" < "t": the seeds of one configuration sort together.
    assert sorted(got) == [
        "trainer.max_iters=10,seed=0",
        "trainer.max_iters=10,seed=1",
        "trainer.max_iters=20,seed=0",
        "trainer.max_iters=20,seed=1",
    ]


def test_experiment_sweep_names() -> None:
    params = {"model": "plain,resnet", "depth": "20,56", "seed": "0,1,2"}
    got = names(["experiment=degradation_quick"], params)
    assert len(got) == len(set(got)) == 12
    assert "depth=20,model=plain,seed=1" in got
    assert all(not n.startswith("experiment") and "experiment=" not in n for n in got)


def test_nothing_varies_falls_back_to_override_dirname() -> None:
    assert names(["model=plain", "depth=8", "experiment=tiny"]) == ["depth=8,model=plain"]
    # An excluded key never names a folder, even swept (app.py refuses such sweeps before any job).
    assert names(["experiment=a,b", "model=plain"]) == ["model=plain", "model=plain"]


@pytest.mark.parametrize(
    "sweep",
    [
        ["model=plain,resnet", "depth=8,14,20", "seed=range(3)"],
        ["data.root=/a/b,/a_b,a:b", "model=plain"],  # sanitized alike, hashed apart
        ["schedule.milestones=[1,2],[3,4]", "optimizer.lr=0.1,0.01"],
    ],
)
def test_every_job_gets_its_own_valid_folder(sweep: list[str]) -> None:
    got = names(sweep)
    assert len(set(got)) == len(got) == len(expand(sweep))
    for name in got:
        assert name == safe_folder_name(name) and len(name.encode()) < 255
        assert not set(name) & set('<>:"/\\|?*') and not name.endswith((".", " "))


def test_safe_folder_name() -> None:
    assert safe_folder_name("depth=20,model=plain,seed=1") == "depth=20,model=plain,seed=1"
    slash, underscore = safe_folder_name("data.root=/a/b"), safe_folder_name("data.root=_a_b")
    assert slash.startswith("data.root=_a_b-") and underscore == "data.root=_a_b"
    long = safe_folder_name("x=" + "a" * 300)
    assert len(long) < 255 and long != safe_folder_name("x=" + "a" * 301)


# ---- the resolver, as a job resolves hydra.sweep.subdir ---------------------------------------------------


def job_config(sweep_dir: Path, job: list[str]) -> OmegaConf:
    return OmegaConf.create(
        {
            "hydra": {
                "sweep": {"dir": str(sweep_dir), "subdir": runnames.SUBDIR},
                "overrides": {"task": job},
                "job": {
                    "override_dirname": "dirname-of-hydra",
                    "config": {
                        "override_dirname": {"kv_sep": "=", "item_sep": ",", "exclude_keys": ["experiment"]}
                    },
                },
            }
        }
    )


def write_record(sweep_dir: Path, task: list[str], params: dict | None = None, subdir: str = runnames.SUBDIR):
    sweep_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "hydra": {
            "sweep": {"dir": str(sweep_dir), "subdir": subdir},
            "sweeper": {
                "_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                "params": params,
            },
            "overrides": {"hydra": [f"hydra.sweep.dir={sweep_dir}"], "task": task},
            "job": {
                "config": {
                    "override_dirname": {"kv_sep": "=", "item_sep": ",", "exclude_keys": ["experiment"]}
                }
            },
        }
    }
    (sweep_dir / "multirun.yaml").write_text(yaml.safe_dump(record))
    return record


def test_the_resolver_reads_the_sweeps_record(tmp_path: Path) -> None:
    sweep = [*TINY, "model=plain,resnet", "seed=0,1"]
    record = write_record(tmp_path, sweep, {"depth": "8,20"})
    jobs = expand(sweep, {"depth": "8,20"})
    got = [job_config(tmp_path, job).hydra.sweep.subdir for job in jobs]
    assert "depth=20,model=resnet,seed=1" in got and len(set(got)) == 8
    # cnnbench status names never-launched jobs from the same record, the same way.
    assert [record_job_name(record["hydra"], job) for job in jobs] == got


def test_the_resolver_without_a_record_is_hydras_dirname(tmp_path: Path) -> None:
    assert job_config(tmp_path / "none", ["depth=8"]).hydra.sweep.subdir == "dirname-of-hydra"


def test_record_job_name_follows_the_sweeps_own_naming(tmp_path: Path) -> None:
    job = ["model=plain", "depth=8", "data=digits"]
    old = write_record(
        tmp_path / "old",
        ["model=plain,resnet", "depth=8", "data=digits"],
        subdir="${hydra.job.override_dirname}",
    )
    assert record_job_name(old["hydra"], job) == "data=digits,depth=8,model=plain"
    new = write_record(tmp_path / "new", ["model=plain,resnet", "depth=8", "data=digits"])
    assert record_job_name(new["hydra"], job) == "model=plain"
    other = write_record(tmp_path / "other", ["model=plain,resnet"], subdir="job_${hydra.job.num}")
    assert record_job_name(other["hydra"], job) is None


def test_the_shipped_config_names_sweep_jobs_with_the_resolver() -> None:
    config = yaml.safe_load((Path(__file__).parents[1] / "conf" / "config.yaml").read_text())
    assert config["hydra"]["sweep"]["subdir"] == runnames.SUBDIR
    assert config["hydra"]["job"]["config"]["override_dirname"]["exclude_keys"] == ["experiment"]


# ---- cnnbench resume keeps a sweep's own naming -----------------------------------------------------------


@pytest.mark.parametrize(
    "subdir",
    [
        runnames.SUBDIR,
        "${hydra.job.override_dirname}",  # a sweep made before run names: its folders, not new ones
        "job_${hydra.job.num}",  # the user's own naming
    ],
)
def test_resume_relaunches_with_the_sweeps_naming(tmp_path: Path, subdir: str) -> None:
    from cnnbench.commands.resume import resume_sweep

    record = write_record(tmp_path, ["model=plain,resnet", "depth=8"], subdir=subdir)
    # As a sweep resumed once (or launched with its own hydra.sweep.subdir=...) records it: unresolved.
    record["hydra"]["overrides"]["hydra"].append(f"hydra.sweep.subdir={subdir}")
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump(record))
    args = resume_sweep(tmp_path)
    assert [a for a in args if a.startswith("hydra.sweep.subdir=")] == [f"hydra.sweep.subdir={subdir}"]
    assert args[-2:] == ["model=plain,resnet", "depth=8"]
