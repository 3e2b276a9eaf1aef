"""`tensorboard --logdir SWEEP` on a real 4-job sweep, read through TensorBoard's own HTTP data API: run
names (only what varies), scalar tags, the Figure 6 custom-scalars layout and what its charts select,
HParams. Then `cnnbench resume` puts the jobs back into the same folders.

The sweep trains plain and ResNet depth-8 nets for 20 iterations on the digits, in this process (the
basic launcher), with explicit fp32/NCHW/eager settings (no fast-path probe). TensorBoard is a
subprocess on a port the OS picks, that has read every event file before it serves (``--reload_task
blocking``); it is stopped when the module's tests are done.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cnnbench.cli import app

SWEEP = [
    "data=digits",
    "model=plain,resnet",
    "depth=8",
    "seed=0,1",
    "trainer.max_iters=20",
    "trainer.batch_size=32",
    "trainer.log_every=5",
    "trainer.eval_every=10",
    "trainer.ckpt_every=20",
    "trainer.log_grad_every=10",
    "trainer.precision=fp32",
    "trainer.channels_last=false",
    "trainer.compile=false",
]
# Only model and seed vary; seed last. depth, data and trainer.* are the same in every job.
RUNS = ["model=plain,seed=0", "model=plain,seed=1", "model=resnet,seed=0", "model=resnet,seed=1"]
FAMILY = {"plain": "plain", "resnet": "residual"}
STARTUP_TIMEOUT_S = 90.0


def invoke(*args: str) -> str:
    """`cnnbench ARGS` in this process, torch on one thread (two threads per process on a busy 2-core
    machine can make a step many times slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tb")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        invoke("train", "-m", *SWEEP, f"hydra.sweep.dir={root / 'multirun'}")
    return root / "multirun"


class TensorBoardServer:
    """`tensorboard --logdir LOGDIR --port 0` as a subprocess; ``get``/``post`` its data API."""

    def __init__(self, logdir: Path, log: Path) -> None:
        args = ["--logdir", str(logdir), "--host", "127.0.0.1", "--port", "0", "--load_fast", "false"]
        args += ["--reload_interval", "0", "--reload_task", "blocking"]  # every file read before serving
        self.log = log
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tensorboard.main", *args], stdout=out, stderr=subprocess.STDOUT
            )
        # Straight to 127.0.0.1, whatever proxy the environment names.
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self.url = self._wait_for_url()

    def _wait_for_url(self) -> str:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            match = re.search(r"TensorBoard \S+ at (http://127\.0\.0\.1:\d+)/", self.log.read_text())
            if match:
                return match.group(1)
            if self.proc.poll() is not None:
                pytest.fail(f"tensorboard exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)
        self.stop()
        pytest.fail(
            f"tensorboard did not start within {STARTUP_TIMEOUT_S} s:\n{self.log.read_text()[-3000:]}"
        )

    def get(self, route: str, **params: str):
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with self.opener.open(f"{self.url}{route}{query}", timeout=30) as response:
            return json.loads(response.read())

    def post(self, route: str, body: dict):
        request = urllib.request.Request(
            f"{self.url}{route}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with self.opener.open(request, timeout=30) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def tensorboard(sweep, tmp_path_factory):
    server = TensorBoardServer(sweep, tmp_path_factory.mktemp("tensorboard") / "tensorboard.log")
    try:
        yield server
    finally:
        server.stop()


def metrics_of(job: Path) -> dict:
    return json.loads((job / "metrics.json").read_text())


def family_of(run: str) -> str:
    return FAMILY[re.search(r"model=(\w+)", run).group(1)]


def points(series: list) -> list[tuple[int, float]]:
    """[[wall_time, step, value], ...] -> [(step, value), ...]"""
    return [(int(step), value) for _, step, value in series]


# ---- runs and tags -----------------------------------------------------------------------------------------


def test_runs_are_named_by_what_varies(sweep, tensorboard):
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")) == RUNS
    assert sorted(tensorboard.get("/data/runs")) == RUNS


def test_every_run_logs_its_scalars_and_its_familys_figure6_tags(tensorboard):
    tags = tensorboard.get("/data/plugin/scalars/tags")
    assert sorted(tags) == RUNS
    for run, run_tags in tags.items():
        family, other = family_of(run), {"plain": "residual", "residual": "plain"}[family_of(run)]
        assert {"error/train", "error/test", "loss/train", "loss/test", "lr"} <= set(run_tags), run
        assert {"grad_norm/ratio_first_last", "grad_norm/stage/stem", "weight_norm/block/classifier"} <= set(
            run_tags
        )
        assert {f"figure6/train_error/{family}", f"figure6/test_error/{family}"} <= set(run_tags)
        assert not any(tag.endswith(f"/{other}") for tag in run_tags), run


def test_figure6_tags_carry_the_same_points_as_the_error_tags(sweep, tensorboard):
    for run in RUNS:
        metrics = metrics_of(sweep / run)
        for tag, figure6, steps, final in (
            ("error/train", "figure6/train_error", [5, 10, 15, 20], "train_error"),
            ("error/test", "figure6/test_error", [10, 20], "test_error"),
        ):
            series = points(tensorboard.get("/data/plugin/scalars/scalars", run=run, tag=tag))
            assert [step for step, _ in series] == steps
            assert series[-1][1] == pytest.approx(metrics[final], abs=1e-6)
            copy = f"{figure6}/{family_of(run)}"
            assert points(tensorboard.get("/data/plugin/scalars/scalars", run=run, tag=copy)) == series


# ---- the custom-scalars layout -----------------------------------------------------------------------------


def charts(layout: dict) -> dict[tuple[str, str], list[str]]:
    return {
        (category["title"], chart["title"]): chart["multiline"]["tag"]
        for category in layout["category"]
        for chart in category["chart"]
    }


def test_layout_mirrors_figure6(tensorboard):
    layout = tensorboard.get("/data/plugin/custom_scalars/layout")
    titles = [(c["title"], bool(c.get("closed"))) for c in layout["category"]]
    assert titles == [
        ("Figure 6: training error", False),
        ("Figure 6: test error", False),
        ("loss", False),
        ("learning rate", False),
        ("gradient flow", False),
        ("gradient flow per block", True),
        ("validation and EMA", True),
    ]
    by_title = charts(layout)
    for category, kind in (
        ("Figure 6: training error", "train_error"),
        ("Figure 6: test error", "test_error"),
    ):
        assert by_title[(category, "plain nets")] == [f"figure6/{kind}/plain$"]
        assert by_title[(category, "residual nets")] == [f"figure6/{kind}/residual$"]
    assert by_title[("loss", "training loss")] == ["loss/train$"]
    assert by_title[("loss", "test loss")] == ["loss/test$"]
    assert by_title[("gradient flow", "gradient norm ratio, first / last block")] == [
        "grad_norm/ratio_first_last$"
    ]


def test_figure6_charts_show_one_family_each(tensorboard):
    """What the Custom Scalars tab fetches for a chart: each run's tags matching the chart's regex."""
    by_title = charts(tensorboard.get("/data/plugin/custom_scalars/layout"))
    figure6 = {key: regexes for key, regexes in by_title.items() if key[0].startswith("Figure 6")}
    assert len(figure6) == 4
    for (category, chart), (regex,) in figure6.items():
        for run in RUNS:
            found = tensorboard.get("/data/plugin/custom_scalars/scalars", run=run, tag=regex)
            assert found["regex_valid"]
            shown = chart == f"{family_of(run)} nets"
            assert bool(found["tag_to_events"]) == shown, (category, chart, run)


def test_every_open_chart_has_curves(tensorboard):
    layout = tensorboard.get("/data/plugin/custom_scalars/layout")
    for category in layout["category"]:
        if category.get("closed"):
            continue  # validation / EMA curves exist only in runs with data.val_size / trainer.ema_decay
        for chart in category["chart"]:
            found = [
                tensorboard.get("/data/plugin/custom_scalars/scalars", run=run, tag=regex)["tag_to_events"]
                for run in RUNS
                for regex in chart["multiline"]["tag"]
            ]
            assert any(found), (category["title"], chart["title"])


def test_hparams_experiment_lists_the_swept_settings(tensorboard):
    experiment = tensorboard.post("/data/plugin/hparams/experiment", {"experimentName": ""})
    infos = {h["name"]: h for h in experiment["hparamInfos"]}
    assert sorted(infos["model"]["domainDiscrete"]) == ["plain", "resnet"]
    assert {"seed", "depth", "data", "max_iters"} <= set(infos)
    assert {"error/test", "error/train"} <= {m["name"]["tag"] for m in experiment["metricInfos"]}


# ---- cnnbench status and resume find the same folders ------------------------------------------------------


def copy_of(sweep: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "multirun"
    shutil.copytree(sweep, copy)
    return copy


def job_names(sweep: Path) -> list[str]:
    return sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))


def test_a_resumed_sweep_puts_its_jobs_back_into_their_folders(sweep, tmp_path, monkeypatch):
    """A job that never started (its folder gone) starts in the folder it would have had; the others are
    found where they are and skipped."""
    from cnnbench.commands.status import folder_status
    from cnnbench.commands.status_jobs import NOT_STARTED

    copy = copy_of(sweep, tmp_path)
    shutil.rmtree(copy / "model=resnet,seed=1")
    status = folder_status(copy)
    assert status.expected_jobs == 4 and not status.notes
    assert {j.job: j.state for j in status.jobs}["model=resnet,seed=1"] == NOT_STARTED

    monkeypatch.chdir(tmp_path)
    out = invoke("resume", str(copy))
    assert job_names(copy) == RUNS
    for name in RUNS[:3]:
        assert f"{name}: already completed, skipped" in out
    resumed = metrics_of(copy / "model=resnet,seed=1")
    assert resumed["status"] == "completed" and resumed["iteration"] == 20
    # The same configuration and seed as the original job: the same result.
    assert resumed["test_error"] == metrics_of(sweep / "model=resnet,seed=1")["test_error"]


def test_a_sweep_named_by_override_dirname_resumes_into_its_own_folders(sweep, tmp_path, monkeypatch):
    """A sweep made before folder names changed keeps its names on resume (no second set of jobs)."""
    copy = copy_of(sweep, tmp_path)
    record = yaml.safe_load((copy / "multirun.yaml").read_text())
    record["hydra"]["sweep"]["subdir"] = "${hydra.job.override_dirname}"
    (copy / "multirun.yaml").write_text(yaml.safe_dump(record))
    old_names = []
    for name in RUNS:
        overrides = yaml.safe_load((copy / name / ".hydra" / "overrides.yaml").read_text())
        old_names.append(",".join(sorted(overrides)))  # Hydra's override_dirname
        (copy / name).rename(copy / old_names[-1])
    assert old_names[0].startswith("data=digits,depth=8,model=plain,seed=0,trainer.batch_size=32,")

    monkeypatch.chdir(tmp_path)
    out = invoke("resume", str(copy))
    assert job_names(copy) == sorted(old_names)
    for name in old_names:
        assert f"{name}: already completed, skipped" in out


# ---- tb.py alone: families, the layout of another family, a resumed run's tags -----------------------------


def test_families_and_another_familys_charts():
    from cnnbench.rundir.tb import family, layout

    assert [family(m) for m in ("plain", "resnet", "preact_resnet", "wide_resnet", "densenet")] == [
        "plain",
        "residual",
        "residual",
        "residual",
        "densenet",
    ]
    figure6 = [c for c in layout("densenet").category if c.title.startswith("Figure 6")]
    assert [[chart.title for chart in c.chart] for c in figure6] == [
        ["plain nets", "residual nets", "densenet nets"]
    ] * 2
    assert figure6[1].chart[2].multiline.tag == ["figure6/test_error/densenet$"]
    assert [len(c.chart) for c in layout("resnet").category[:2]] == [2, 2]


def test_a_resumed_run_keeps_logging_its_family_tags(tmp_path):
    """A continuation never calls start(): the family comes with the model name at construction."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from cnnbench.rundir.tb import TensorBoardLog

    log = TensorBoardLog(tmp_path, resume_from=10, model="wide_resnet")
    log.scalars({"error/train": 0.25, "error/test": 0.5, "loss/train": 1.0}, step=20)
    log.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert tags == {
        "error/train",
        "error/test",
        "loss/train",
        "figure6/train_error/residual",
        "figure6/test_error/residual",
    }
    assert [(e.step, e.value) for e in events.Scalars("figure6/test_error/residual")] == [(20, 0.5)]
