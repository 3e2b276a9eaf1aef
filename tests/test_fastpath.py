"""The measured fast path: the decision on faked machines, the cache, explicit settings, resume and sweeps."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY

from cnnbench import fastpath
from cnnbench.errors import CnnbenchError
from cnnbench.fastpath import choose, choose_compile, resolve

CPU = torch.device("cpu")
# Faked timings (ms per ResNet-20 update) of three kinds of machine seen by this project.
BF16_WINS = {"fp32/channels_last": 310.0, "fp32/nchw": 300.0, "bf16/channels_last": 45.0, "bf16/nchw": 60.0}
FP32_WINS = {"fp32/channels_last": 195.0, "fp32/nchw": 189.0, "bf16/channels_last": 268.0, "bf16/nchw": 262.0}
NEAR_TIE = {"fp32/channels_last": 100.0, "fp32/nchw": 98.5, "bf16/channels_last": 97.0, "bf16/nchw": 99.0}


@pytest.mark.parametrize(
    ("timings", "expected"),
    [(BF16_WINS, "bf16/channels_last"), (FP32_WINS, "fp32/nchw"), (NEAR_TIE, "fp32/nchw")],
)
def test_the_choice_is_within_5_percent_of_the_fastest_and_prefers_fp32_on_a_tie(timings, expected):
    chosen = choose(timings)
    assert chosen == expected
    assert timings[chosen] <= 1.05 * min(timings.values())


def test_compile_only_when_it_measured_faster():
    assert choose_compile(eager_ms=100.0, compiled_ms=80.0) is True
    assert choose_compile(eager_ms=100.0, compiled_ms=99.0) is False  # within noise: not worth its start-up
    assert choose_compile(eager_ms=100.0, compiled_ms=130.0) is False


@pytest.fixture
def fake_machine(monkeypatch, tmp_path):
    """A machine whose candidates take the given timings; counts the measurements."""
    monkeypatch.setenv(fastpath.CACHE_ENV, str(tmp_path / "cache"))
    state = {"timings": BF16_WINS, "measured": 0, "compile_measured": 0, "compiled_ms": 50.0}

    def measure(device, **kwargs):
        state["measured"] += 1
        return dict(state["timings"])

    def measure_compile(device, precision, channels_last, **kwargs):
        state["compile_measured"] += 1
        return {"eager_ms": 100.0, "compiled_ms": state["compiled_ms"], "compile_s": 1.0}

    monkeypatch.setattr(fastpath, "measure", measure)
    monkeypatch.setattr(fastpath, "measure_compile", measure_compile)
    return state


AUTO = {"precision": "auto", "channels_last": "auto", "compile": "auto", "max_iters": 100}


def test_auto_follows_the_measurement_and_is_cached_per_machine(fake_machine, monkeypatch):
    first = resolve(AUTO, CPU)
    assert (first.precision, first.channels_last, first.compile) == ("bf16", True, False)
    assert first.chosen_by == "probe" and fake_machine["measured"] == 1
    fake_machine["timings"] = FP32_WINS  # the same machine: the cache answers, no new measurement
    again = resolve(AUTO, CPU)
    assert (again.precision, again.chosen_by, fake_machine["measured"]) == ("bf16", "cache", 1)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 97)  # another thread count: another machine key
    other = resolve(AUTO, CPU)
    assert (other.precision, other.channels_last, fake_machine["measured"]) == ("fp32", False, 2)


def test_explicit_settings_win_and_need_no_probe(fake_machine):
    explicit = resolve({"precision": "fp32", "channels_last": False, "compile": False}, CPU)
    assert (explicit.precision, explicit.channels_last, explicit.compile) == ("fp32", False, False)
    assert explicit.chosen_by == "config" and fake_machine["measured"] == 0
    # One fixed, one auto: the fastest measured layout for the fixed precision.
    half = resolve({**AUTO, "precision": "fp32"}, CPU)
    assert (half.precision, half.channels_last) == ("fp32", False)


def test_compile_is_measured_once_and_only_for_long_cpu_runs(fake_machine):
    assert resolve(AUTO, CPU).compile is False and fake_machine["compile_measured"] == 0
    long_run = {**AUTO, "max_iters": 64000}
    assert resolve(long_run, CPU).compile is True and fake_machine["compile_measured"] == 1
    assert resolve(long_run, CPU).compile is True and fake_machine["compile_measured"] == 1  # cached


def test_a_resume_keeps_the_recorded_settings(fake_machine):
    recorded = {"precision": "fp32", "channels_last": False, "compile": False}
    kept = resolve(AUTO, CPU, recorded=recorded)
    assert (kept.precision, kept.channels_last, kept.chosen_by) == ("fp32", False, "recorded")
    assert fake_machine["measured"] == 0


def test_the_jobs_of_a_sweep_share_the_first_jobs_choice(fake_machine, tmp_path, monkeypatch):
    record = tmp_path / "sweep" / "fastpath.json"
    first = resolve(AUTO, CPU, sweep_record=record)
    assert json.loads(record.read_text())["precision"] == first.precision == "bf16"
    # Another job of the sweep on a machine (or thread count) that would choose fp32 still uses bf16.
    monkeypatch.setattr(torch, "get_num_threads", lambda: 97)
    fake_machine["timings"] = FP32_WINS
    second = resolve(AUTO, CPU, sweep_record=record)
    assert (second.precision, second.channels_last) == ("bf16", True)


def test_bad_values_are_refused():
    with pytest.raises(CnnbenchError, match="channels_last"):
        resolve({**AUTO, "channels_last": "sometimes"}, CPU)
    with pytest.raises(CnnbenchError, match="compile"):
        resolve({**AUTO, "compile": "yes"}, CPU)


def test_a_run_records_its_fast_path_and_a_resume_reuses_it(fake_machine, tmp_path):
    from cnnbench.bench import compose_config
    from cnnbench.engine.state import recorded_fast_path
    from cnnbench.train import Trainer, run

    cfg = compose_config([*TINY, "trainer.max_iters=10"])
    run(cfg, tmp_path)
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["fast_path"]["precision"] == "bf16" and env["fast_path"]["chosen_by"] == "probe"
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert recorded_fast_path(checkpoint, env)["precision"] == "bf16"
    fake_machine["timings"] = FP32_WINS
    fastpath.cache_dir().joinpath(fastpath.CACHE_FILE).unlink()  # a probe now would say fp32
    resumed = Trainer(cfg, tmp_path, resume=True)
    assert resumed.parts.precision == "bf16" and resumed.parts.fast_path.chosen_by == "recorded"
    assert fake_machine["measured"] == 1


def test_the_real_probe_measures_every_candidate_within_its_budget(monkeypatch, tmp_path):
    monkeypatch.setenv(fastpath.CACHE_ENV, str(tmp_path))
    timings = fastpath.measure(CPU, budget_s=0.0, steps=1)  # one round: the real step, the real models
    assert set(timings) == set(fastpath.candidates(CPU)) and all(ms > 0 for ms in timings.values())
    assert choose(timings) in timings
