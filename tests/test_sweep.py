"""Sweeps through Hydra's own multirun and launchers: job folders, the report, TensorBoard, GPUs per job.

The sweeps are real `python -m cnnbench train -m ...` processes on scikit-learn's digits with depth 8/14
nets (one or two blocks per stage) and 10 iterations: seconds per job on a CPU. Torch gets one thread
per process (OMP_NUM_THREADS=1): on a busy 2-core machine, two OpenMP threads per process can make a
training step a hundred times slower.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cnnbench.cli import app
from cnnbench.core.config import conf_dir
from cnnbench.launchers import slots

MAX_ITERS = 10
# Everything but model/depth/seed: kept in a test experiment (experiment= is left out of folder names).
TINY_SETTINGS = {
    "max_iters": MAX_ITERS,
    "batch_size": 32,
    "log_every": 5,
    "eval_every": 5,
    "ckpt_every": 5,
}
TINY_OVERRIDES = ["data=digits", *(f"trainer.{k}={v}" for k, v in TINY_SETTINGS.items())]
MODELS, DEPTHS = ("plain", "resnet"), (8, 14)


# ---- helpers ---------------------------------------------------------------------------------------------


def write_test_experiments(root: Path) -> Path:
    """A config folder for hydra.searchpath with two experiments: `tiny` (settings only) and
    `tiny_sweep` (which also carries its sweep, like conf/experiment/degradation*.yaml)."""
    experiments = root / "experiment"
    experiments.mkdir(parents=True)
    (experiments / "tiny.yaml").write_text(
        "# @package _global_\n"
        + yaml.safe_dump({"defaults": [{"override /data": "digits"}], "trainer": TINY_SETTINGS})
    )
    (experiments / "tiny_sweep.yaml").write_text(
        "# @package _global_\n"
        + yaml.safe_dump(
            {"defaults": ["tiny"], "hydra": {"sweeper": {"params": {"model": "plain,resnet", "depth": "8"}}}}
        )
    )
    return root


def searchpath(conf: Path) -> str:
    return f"hydra.searchpath=['file://{conf}']"


class Launch:
    """`python -m cnnbench ARGS` started in ``cwd`` (not waited for: the sweeps of this file run at the
    same time, the single-process one beside the parallel ones); ``result()`` waits for it."""

    def __init__(self, args: list[str], cwd: Path, timeout: float = 400) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.args, self.timeout = args, timeout
        self.log = cwd / "cnnbench.out"
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cnnbench", *args], cwd=cwd, env=env, stdout=out, stderr=out
            )
        self.pid = self.proc.pid  # the launcher's process: jobs of parallel launchers run elsewhere

    def result(self) -> Launch:
        """Wait for the command; fail the test with its output unless it exited 0."""
        command = f"cnnbench {' '.join(self.args)}"
        try:
            self.proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"`{command}` timed out after {self.timeout} s:\n{self.output[-5000:]}")
        assert self.proc.returncode == 0, f"`{command}` exited {self.proc.returncode}:\n{self.output[-5000:]}"
        return self

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def job_dirs(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))


def metrics_of(job: Path) -> dict:
    return json.loads((job / "metrics.json").read_text())


def hydra_record(job: Path) -> dict:
    return yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())["hydra"]


def event_pids(job: Path) -> set[int]:
    """PIDs of the processes that wrote the TensorBoard files (events.out.tfevents.<t>.<host>.<pid>.<n>)."""
    return {int(p.name.split(".")[-2]) for p in job.glob("events.out.tfevents.*")}


def assert_completed(job: Path) -> dict:
    metrics = metrics_of(job)
    assert metrics["status"] == "completed", (job.name, metrics)
    assert metrics["iteration"] == metrics["max_iters"] == MAX_ITERS
    for name in (".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", "checkpoint.pt"):
        assert (job / name).is_file(), f"{job.name}: no {name}"
    return metrics


def name_from_hparams(hparams) -> str:
    """The job folder name a TensorBoard hparams record (model/depth) belongs to: what the basic sweep
    varies (its seed is one value, so not in the name)."""
    values = {k: v.string_value or v.number_value for k, v in hparams.items()}
    return f"depth={values['depth']:.0f},model={values['model']}"


def expected_name(overrides: list[str], varying: tuple[str, ...]) -> str:
    """The job's overrides of the keys the sweep varies, sorted by key (cnnbench/rundir/names.py)."""
    kept = [o for o in overrides if o.split("=", 1)[0] in varying]
    return ",".join(sorted(kept, key=lambda o: o.split("=", 1)[0]))


# ---- the basic launcher: a 4-job CLI sweep, read back by the report and TensorBoard ------------------------


def has_plugin(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


JOBLIB = "hydra_plugins.hydra_joblib_launcher"
SUBMITIT = "hydra_plugins.hydra_submitit_launcher"


@pytest.fixture(scope="module")
def launches(tmp_path_factory):
    """The three sweeps of this file, started together; each test waits for the one it reads."""
    started: dict[str, tuple[Launch, Path]] = {}

    if has_plugin(SUBMITIT):
        # Without an experiment file: constant overrides are left out of the job folder names too.
        root = tmp_path_factory.mktemp("submitit")
        sweep_args = [*TINY_OVERRIDES, "model=plain,resnet", "depth=8"]
        launcher_args = [
            "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=5",
            "hydra.launcher.cpus_per_task=1",
        ]
        started["submitit"] = (
            Launch(
                ["train", "-m", *sweep_args, *launcher_args, f"hydra.sweep.dir={root / 'multirun'}"], root
            ),
            root / "multirun",
        )

    if has_plugin(JOBLIB):
        # `-m experiment=tiny_sweep` alone: the experiment file carries the sweep.
        root = tmp_path_factory.mktemp("joblib")
        conf = write_test_experiments(root / "conf")
        launcher_args = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
        started["joblib"] = (
            Launch(
                ["train", "-m", "experiment=tiny_sweep", searchpath(conf), *launcher_args,
                 f"hydra.sweep.dir={root / 'multirun'}"],
                root,
            ),
            root / "multirun",
        )  # fmt: skip

    # The basic launcher (jobs one after the other in this process): 4 jobs named by what varies (not
    # seed=0, one value).
    root = tmp_path_factory.mktemp("basic")
    conf = write_test_experiments(root / "conf")
    models, depths = "model=" + ",".join(MODELS), "depth=" + ",".join(map(str, DEPTHS))
    started["basic"] = (
        Launch(
            ["train", "-m", "experiment=tiny", models, depths, "seed=0", searchpath(conf),
             f"hydra.sweep.dir={root / 'multirun'}"],
            root,
        ),
        root / "multirun",
    )  # fmt: skip
    yield started
    for launch, _ in started.values():
        launch.stop()


@pytest.fixture(scope="module")
def sweep(launches) -> Path:
    """`cnnbench train -m experiment=tiny model=plain,resnet depth=8,14 seed=0`: 4 jobs, one process."""
    launch, sweep_dir = launches["basic"]
    launch.result()
    return sweep_dir


def test_sweep_jobs_are_named_by_their_overrides(sweep):
    combos = list(itertools.product(MODELS, DEPTHS))
    names = {f"depth={d},model={m}" for m, d in combos}
    assert {p.name for p in job_dirs(sweep)} == names  # one folder per job: no collision
    assert (sweep / "multirun.yaml").is_file()
    nums = set()
    for job in job_dirs(sweep):
        metrics = assert_completed(job)
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        assert "experiment=tiny" in overrides and expected_name(overrides, ("depth", "model")) == job.name
        config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        # The folder name, the saved config and what was trained agree.
        assert job.name == f"depth={config['depth']},model={config['model']['name']}" and config["seed"] == 0
        assert (metrics["model"], metrics["depth"], metrics["seed"]) == (
            config["model"]["name"],
            config["depth"],
            config["seed"],
        )
        assert config["data"]["name"] == "digits" and config["trainer"]["max_iters"] == MAX_ITERS
        record = hydra_record(job)
        assert (
            record["mode"] == "MULTIRUN" and Path(record["runtime"]["output_dir"]).resolve() == job.resolve()
        )
        nums.add(record["job"]["num"])
    assert nums == {0, 1, 2, 3}


def test_sweeping_again_into_the_same_folder_is_refused(sweep, tmp_path, monkeypatch):
    """A second sweep into a folder holding results stops before any job and changes nothing."""
    before = {job.name: (job / "metrics.json").stat().st_mtime_ns for job in job_dirs(sweep)}
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        app,
        ["train", "-m", *TINY_OVERRIDES, "model=plain,resnet", "depth=8", f"hydra.sweep.dir={sweep}"],
    )
    assert result.exit_code != 0
    assert "already holds" in result.output and "cnnbench resume" in result.output
    assert {job.name: (job / "metrics.json").stat().st_mtime_ns for job in job_dirs(sweep)} == before


def test_report_on_the_sweep(sweep, tmp_path):
    from matplotlib.image import imread

    from cnnbench.reporting import CSV_COLUMNS

    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["report", str(sweep), "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "plain" in result.output and "resnet" in result.output

    image = imread(out / "report.png")  # decodable PNG
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
    assert image.std() > 0  # not a blank canvas

    with (out / "report.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == list(CSV_COLUMNS)
    assert len(rows) == 4
    assert {(r["model"], int(r["depth"])) for r in rows} == set(itertools.product(MODELS, DEPTHS))
    for row in rows:
        assert (row["data"], row["status"], row["n_seeds"], row["seeds"]) == ("digits", "completed", "1", "0")
        assert int(row["iteration"]) == int(row["max_iters"]) == MAX_ITERS
        # Options are the network's (block, shortcut...), not the config's default_depth.
        assert "default_depth" not in row["options"] and "block=basic" in row["options"]
        (job,) = [Path(p) for p in row["runs"].split(";")]
        assert job.parent == sweep
        metrics = metrics_of(job)
        assert float(row["train_error_pct"]) == pytest.approx(100 * metrics["train_error"], abs=1e-3)
        assert float(row["test_error_pct"]) == pytest.approx(100 * metrics["test_error"], abs=1e-3)

    md = (out / "report.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| model | depth")
    assert len(table) == 1 + 4  # the header and one row per job
    assert "report.png" in md


def test_tensorboard_runs_and_hparams_per_job(sweep):
    """`tensorboard --logdir SWEEP`: each job folder is a run (named by its overrides) holding its own
    scalars and its own hparams summary with its model, depth and seed."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    for job in job_dirs(sweep):
        assert len(list(job.glob("events.out.tfevents.*"))) == 1, job.name  # one run per job folder
        acc = EventAccumulator(str(job), size_guidance={"scalars": 0})
        acc.Reload()
        metrics = metrics_of(job)
        assert {"error/test", "error/train"} <= set(acc.Tags()["scalars"])
        for tag, key in (("error/test", "test_error"), ("error/train", "train_error")):
            last = acc.Scalars(tag)[-1]
            assert last.step == MAX_ITERS and last.value == pytest.approx(metrics[key], abs=1e-6)

        content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
        assert job.name == name_from_hparams(start.hparams)
        assert start.hparams["data"].string_value == "digits"
        assert start.hparams["max_iters"].number_value == MAX_ITERS


def test_tensorboard_hparams_tab_lists_every_job(sweep):
    """What TensorBoard's HParams tab shows for `--logdir SWEEP`, computed by its own backend."""
    pytest.importorskip("tensorboard.plugins.hparams.list_session_groups")
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, get_experiment, list_session_groups

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(sweep))
    multiplexer.Reload()
    tb = base_plugin.TBContext(
        logdir=str(sweep),
        multiplexer=multiplexer,
        data_provider=data_provider.MultiplexerDataProvider(multiplexer, str(sweep)),
    )
    backend = backend_context.Context(tb)
    ctx = context.RequestContext()

    experiment = get_experiment.Handler(ctx, backend, "", api_pb2.GetExperimentRequest()).run()
    assert {"model", "depth", "seed", "data"} <= {h.name for h in experiment.hparam_infos}
    assert {"error/test", "error/train"} <= {m.name.tag for m in experiment.metric_infos}

    request = api_pb2.ListSessionGroupsRequest(
        start_index=0,
        slice_size=100,
        allowed_statuses=[
            api_pb2.STATUS_UNKNOWN,
            api_pb2.STATUS_SUCCESS,
            api_pb2.STATUS_FAILURE,
            api_pb2.STATUS_RUNNING,
        ],
    )
    groups = list_session_groups.Handler(ctx, backend, "", request).run().session_groups
    assert sorted(g.name for g in groups) == sorted(job.name for job in job_dirs(sweep))
    for group in groups:
        assert group.name == name_from_hparams(group.hparams)
        values = {m.name.tag: m.value for m in group.metric_values}
        metrics = metrics_of(sweep / group.name)
        assert values["error/test"] == pytest.approx(metrics["test_error"], abs=1e-6)
        assert values["error/train"] == pytest.approx(metrics["train_error"], abs=1e-6)


# ---- experiments carry their sweep; joblib runs jobs at once ---------------------------------------------


def test_experiment_sweep_through_the_joblib_launcher(launches):
    """`-m experiment=tiny_sweep` alone launches the sweep the file carries; joblib runs 2 jobs at once."""
    pytest.importorskip(JOBLIB)
    launch, sweep = launches["joblib"]
    result = launch.result()
    assert [p.name for p in job_dirs(sweep)] == ["model=plain", "model=resnet"]  # depth: one value
    nums = set()
    for job in job_dirs(sweep):
        assert_completed(job)
        record = hydra_record(job)
        assert record["launcher"]["_target_"].endswith("JoblibLauncher")
        nums.add(record["job"]["num"])
        # Trained in a joblib worker process, not in the launching one.
        assert event_pids(job) and result.pid not in event_pids(job)
    assert nums == {0, 1}


def test_shipped_experiments_carry_valid_sweeps():
    """Every job of every experiment's own sweep composes into a config the trainer accepts."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from cnnbench.rundir.validate import check_config

    parser = OverridesParser.create()
    swept = {}
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        for path in sorted((conf_dir() / "experiment").glob("*.yaml")):
            experiment = f"experiment={path.stem}"
            cfg = compose("config", overrides=[experiment], return_hydra_config=True)
            params = cfg.hydra.sweeper.get("params") or {}
            if not params:
                continue
            parsed = parser.parse_overrides([f"{key}={value}" for key, value in params.items()])
            axes = {o.key_or_group: list(o.sweep_string_iterator()) for o in parsed}
            swept[path.stem] = len(list(itertools.product(*axes.values())))
            assert swept[path.stem] >= 2
            # Config groups (model=...) need composing; plain values (depth, seed) are set on the result.
            groups = [k for k in axes if (conf_dir() / k).is_dir()]
            for choice in itertools.product(*(axes[k] for k in groups)):
                chosen = [f"{k}={v}" for k, v in zip(groups, choice, strict=True)]
                base = compose("config", overrides=[experiment, *chosen])
                values = [k for k in axes if k not in groups]
                for job in itertools.product(*(axes[k] for k in values)):
                    job_cfg = base.copy()
                    for key, value in zip(values, job, strict=True):
                        OmegaConf.update(job_cfg, key, yaml.safe_load(value))
                    check_config(job_cfg)
    assert swept.get("degradation") == 8 and swept.get("degradation_quick") == 4
    assert swept.get("degradation_seeds") == 24


# ---- SLURM through submitit --------------------------------------------------------------------------------


def test_submitit_local_launcher(launches):
    """The submitit launcher runs each job as its own process (here locally; on a cluster, by SLURM)."""
    pytest.importorskip(SUBMITIT)
    launch, sweep = launches["submitit"]
    result = launch.result()
    jobs = job_dirs(sweep)
    # Only what varies is in the name; the constant overrides are not.
    assert [p.name for p in jobs] == [f"model={m}" for m in MODELS]
    for job in jobs:
        assert_completed(job)
        assert hydra_record(job)["launcher"]["_target_"].endswith("submitit_launcher.LocalLauncher")
        assert result.pid not in event_pids(job)
        assert "Job completed successfully" in (job / "train.log").read_text()
    assert list((sweep / ".submitit").glob("*/*_log.out"))


def test_slurm_launcher_config(tmp_path, monkeypatch):
    """conf/hydra/launcher/slurm.yaml extends the plugin's submitit_slurm and gives this sbatch script."""
    pytest.importorskip(SUBMITIT)
    import submitit
    from hydra import compose, initialize_config_dir
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.mem_gb=8"],
            return_hydra_config=True,
        )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert (launcher["gpus_per_node"], launcher["tasks_per_node"], launcher["max_num_timeout"]) == (1, 1, 3)
    assert launcher["partition"] == "gpu" and launcher["mem_gb"] == 8
    assert launcher["cpus_per_task"] >= 1 and launcher["timeout_min"] >= 60

    # The sbatch script submitit writes from these parameters, exactly as the launcher passes them
    # (hydra_submitit_launcher's BaseSubmititLauncher.launch). submitit only looks for `srun`.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 1\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    launcher.pop("_target_")
    launcher.update(submitit_folder=str(tmp_path / "submitit" / "%j"), name="cnnbench")
    executor = submitit.AutoExecutor(
        folder=launcher.pop("submitit_folder"),
        cluster="slurm",
        slurm_max_num_timeout=launcher.pop("max_num_timeout"),
    )
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in launcher.items()})
    script = executor._executor._make_submission_file_text("python -m cnnbench", "uid")
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --cpus-per-task={launcher['cpus_per_task']}",
        f"#SBATCH --time={launcher['timeout_min']}",
        "#SBATCH --mem=8GB",
        # submitit's requeue signal 120 s before the time limit: cnnbench checkpoints, then hands it over.
        "#SBATCH --signal=USR2@120",
    ):
        assert line in script.splitlines(), (line, script)


# ---- one GPU per job (cnnbench.launchers.slots), with monkeypatched GPU counts ----------------------------


@pytest.fixture
def gpu_machine(monkeypatch, tmp_path):
    """A machine with 4 GPUs inside sweep job 0; ``set(count=..., job=...)`` changes both."""
    import torch

    state = {"count": 4, "job": 0, "current": None}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: state["count"] > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: state["count"])
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: state.update(current=index))
    monkeypatch.setattr(slots, "sweep_job_num", lambda: state["job"])
    monkeypatch.setenv(slots.LOCK_DIR_ENV, str(tmp_path / "locks"))
    for name in ("CUDA_VISIBLE_DEVICES", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)

    class Machine:
        locks = tmp_path / "locks"

        def set(self, count: int | None = None, job: int | None = None) -> Machine:
            state.update({k: v for k, v in (("count", count), ("job", job)) if v is not None})
            return self

        @property
        def current(self) -> int | None:
            return state["current"]

        def hold(self, name: str):
            """Another process's job holding GPU ``name`` (a separate open file: flock conflicts)."""
            import fcntl

            self.locks.mkdir(parents=True, exist_ok=True)
            handle = open(self.locks / f"gpu-{name}.lock", "a+")  # noqa: SIM115
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held.append(handle)

    held: list = []
    yield Machine()
    slots.release_gpu()
    for handle in held:
        handle.close()


def test_gpu_per_job_round_robin(gpu_machine):
    assert slots.job_device("auto") == "cuda:0" and gpu_machine.current == 0
    gpu_machine.set(job=5)
    assert slots.job_device("cuda") == "cuda:1" and gpu_machine.current == 1
    gpu_machine.set(count=2, job=7)
    assert slots.job_device("auto") == "cuda:1"


@pytest.mark.parametrize("requested", ["cpu", "cuda:3", "mps"])
def test_gpu_explicit_device_is_kept(gpu_machine, requested):
    gpu_machine.set(job=1)
    assert slots.job_device(requested) == requested and gpu_machine.current is None


def test_gpu_left_alone_with_one_or_no_gpu(gpu_machine):
    gpu_machine.set(count=1, job=3)
    assert slots.job_device("auto") == "auto" and slots.job_device("cuda") == "cuda"
    gpu_machine.set(count=0)
    assert slots.job_device("auto") == "auto"
    assert gpu_machine.current is None


def test_gpu_left_alone_when_narrowed_to_one_by_the_launcher(gpu_machine, monkeypatch):
    gpu_machine.set(job=3)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")  # SLURM/submitit gave this job one GPU
    assert slots.job_device("auto") == "auto" and gpu_machine.current is None


def test_gpu_left_alone_outside_a_sweep_and_under_torchrun(gpu_machine, monkeypatch):
    monkeypatch.setattr(slots, "sweep_job_num", lambda: None)  # a single run or `cnnbench resume RUN`
    assert slots.job_device("auto") == "auto"
    monkeypatch.setattr(slots, "sweep_job_num", lambda: 3)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert slots.job_device("auto") == "auto"
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert slots.job_device("auto") == "auto"


def test_gpu_taken_by_a_running_job_is_skipped(gpu_machine):
    """Jobs end in any order: job 2 must not land on the GPU job 0 still trains on."""
    gpu_machine.hold("0")  # job 0 runs on cuda:0 in another worker; job 1 has finished
    gpu_machine.set(count=2, job=2)
    assert slots.job_device("auto") == "cuda:1"
    gpu_machine.hold("2")
    gpu_machine.hold("3")
    gpu_machine.set(count=4, job=6)
    assert slots.job_device("auto") == "cuda:1"


def test_gpu_shared_when_more_jobs_than_gpus(gpu_machine, caplog):
    gpu_machine.set(count=2, job=3)
    gpu_machine.hold("0")
    gpu_machine.hold("1")
    with caplog.at_level("WARNING", logger="cnnbench"):
        assert slots.job_device("auto") == "cuda:1"
    assert "All 2 GPUs are taken" in caplog.text


def test_gpu_released_by_the_next_job_of_the_same_worker(gpu_machine):
    gpu_machine.set(count=2, job=0)
    assert slots.job_device("auto") == "cuda:0"
    gpu_machine.set(job=2)  # the same worker process, its previous job over
    assert slots.job_device("auto") == "cuda:0"
    gpu_machine.set(job=3)
    assert slots.job_device("auto") == "cuda:1"


def test_gpu_locks_named_by_visible_device_ids(gpu_machine, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,GPU-ab/cd")
    gpu_machine.set(count=2, job=0)
    gpu_machine.hold("5")
    assert slots.job_device("auto") == "cuda:1"
    assert (gpu_machine.locks / "gpu-GPU-ab_cd.lock").read_text().strip() == str(os.getpid())


def test_gpu_round_robin_without_a_lock_folder(gpu_machine, monkeypatch, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv(slots.LOCK_DIR_ENV, str(blocker / "locks"))
    gpu_machine.set(count=4, job=6)
    assert slots.job_device("auto") == "cuda:2"


def test_sweep_job_num_reads_hydra_config():
    import copy

    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        composed = compose("config", return_hydra_config=True)

    def job(mode: RunMode, num: int):
        cfg = copy.deepcopy(composed)
        with open_dict(cfg):
            cfg.hydra.job.num = num
            cfg.hydra.mode = mode
        return cfg

    config = HydraConfig.instance()
    previous = config.cfg
    try:
        config.cfg = None
        assert slots.sweep_job_num() is None  # not inside a Hydra job
        config.set_config(job(RunMode.MULTIRUN, 3))
        assert slots.sweep_job_num() == 3
        config.set_config(job(RunMode.RUN, 0))
        assert slots.sweep_job_num() is None
    finally:
        config.cfg = previous
