"""The fast-path probe under noise: scripted rounds and loads (the decision, the retries, provisional and
stale answers, the run's steady-state check), and one real probe beside a process spinning on a core."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import TINY
from fastpath_requests import resolve

from cnnbench.core import cache, cpuload, timing
from cnnbench.fastpath import choice, probe, steady, workload

CPU = torch.device("cpu")
AUTO = {"precision": "auto", "channels_last": "auto", "compile": "auto", "max_iters": 100}
CL, NCHW = "bf16/channels_last", "bf16/nchw"


class Load(cpuload.OtherLoad):
    """``OtherLoad`` with a set reading: other processes at ``PCT`` % of a core over 10 s windows."""

    PCT = 0.0

    def start(self) -> None:
        self.available = True

    def stop(self) -> float:
        self.other += self.PCT / 10.0
        self.wall += 10.0
        return self.PCT


class Quiet(Load):
    PCT = 1.0


class Busy(Load):
    PCT = 34.0  # a third of a core: under the earlier 50% threshold, over BUSY_PCT


def other_load(monkeypatch, load: type[Load]) -> None:
    """Other processes' load as ``load`` reads it, for the probe and for a run's steady-state check."""
    monkeypatch.setattr(probe, "OtherLoad", load)
    monkeypatch.setattr(steady, "OtherLoad", load)


class Step:
    """A candidate's stand-in workload: nothing runs; ``timing.ms_per_call`` reads its timings by name."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self) -> None:  # the warm-up call
        pass


def no_waiting(monkeypatch, clock=time.perf_counter) -> None:
    """The probe module's clock (``clock``) and an idle check that does not wait (its load is faked)."""
    monkeypatch.setattr(probe, "time", SimpleNamespace(perf_counter=clock, sleep=lambda seconds: None))


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """A probe whose timed function returns scripted ms per step: ``script[name]`` is consumed one value a
    timing, the estimate step first (nothing is built or run); the load reads as ``Quiet``."""
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    state = {"script": {}, "timed": 0}

    def timed(step, calls, device):
        state["timed"] += 1
        return state["script"][step.name].pop(0)

    monkeypatch.setattr(workload, "candidates", lambda device: [CL, NCHW])
    monkeypatch.setattr(
        workload, "workload", lambda device, precision, layout: Step(choice.candidate_name(precision, layout))
    )
    monkeypatch.setattr(timing, "ms_per_call", timed)
    other_load(monkeypatch, Quiet)
    no_waiting(monkeypatch)
    return state


def one_try(cl: list[float], nchw: list[float]) -> dict[str, list[float]]:
    """A try's script: the estimate step (150 ms each: 5 rounds fit the budget), then the rounds."""
    return {CL: [150.0, *cl], NCHW: [150.0, *nchw]}


def script(*tries: dict[str, list[float]]) -> dict[str, list[float]]:
    return {name: [ms for t in tries for ms in t[name]] for name in (CL, NCHW)}


def cached_entry() -> dict:
    data = json.loads((cache.cache_dir() / choice.CACHE_FILE).read_text())
    (entry,) = data["entries"].values()
    return entry


# ----- the decision on scripted rounds ------------------------------------------------------------------
def test_round_stats_and_the_noise_rules():
    stats = choice.round_stats([180.0, 327.0, 330.0])
    assert (stats["fastest_ms"], stats["median_ms"], stats["rounds"]) == (180.0, 327.0, 3)
    assert stats["spread_pct"] == pytest.approx(81.67, abs=0.01)
    assert choice.round_stats([141.0])["spread_pct"] is None  # one round: nothing to compare
    clean = {CL: choice.round_stats([141.0, 150.0]), NCHW: choice.round_stats([156.0, 157.0])}
    assert choice.noise_reasons(clean, 3.0, busy=False) == []
    assert choice.noise_reasons(clean, 34.0, busy=True) == ["other processes used 34% of a core"]
    noisy = {**clean, CL: choice.round_stats([141.0, 157.0])}  # 11% apart
    assert choice.noise_reasons(noisy, None, busy=False) == [f"{CL}'s two fastest rounds differ by 11%"]
    assert choice.largest_spread(noisy) == (CL, pytest.approx(11.35, abs=0.01))
    assert choice.steady_state_off(150.0, 141.0) is False
    assert choice.steady_state_off(327.0, 141.0) is True and choice.steady_state_off(80.0, 141.0) is True


def test_one_disturbed_round_does_not_change_the_answer(machine):
    # channels-last's first round ran beside a burst (327 ms): the fastest of the rounds still decides.
    machine["script"] = script(
        one_try([327.0, 141.0, 142.0, 141.5, 143.0], [156.0, 157.0, 156.5, 158.0, 157.0])
    )
    result = probe.probe(CPU)
    assert (result["choice"], result["provisional"], len(result["tries"])) == (CL, False, 1)
    assert result["timings_ms"] == {CL: 141.0, NCHW: 156.0}
    assert result["stats"][CL]["median_ms"] == 142.0 and result["stats"][CL]["spread_pct"] == 0.4
    assert result["rounds_ms"][CL] == [327.0, 141.0, 142.0, 141.5, 143.0]  # every round kept


def test_a_disturbed_try_that_ranks_wrongly_is_measured_again_and_the_clean_try_is_cached(machine):
    # The first try: channels-last disturbed in every round, unevenly (the spread shows it), so NCHW looks
    # fastest; the second try is clean and channels-last is 6% faster.
    disturbed = one_try([327.0, 180.0, 330.0, 329.0, 331.0], [156.0, 158.0, 157.0, 156.0, 159.0])
    clean = one_try([141.0, 142.0, 141.5, 143.0, 142.0], [150.0, 151.0, 150.5, 152.0, 151.0])
    machine["script"] = script(disturbed, clean)
    chosen = resolve(AUTO, CPU)
    assert (chosen.precision, chosen.channels_last, chosen.chosen_by) == ("bf16", True, "probe")
    assert chosen.probe_record["provisional"] is False
    entry = cached_entry()
    assert entry["choice"] == CL and entry["provisional"] is False and entry["timings_ms"][CL] == 141.0
    first, second = entry["tries"]
    assert first["noisy"] == [f"{CL}'s two fastest rounds differ by 82%"] and first["spread_pct"] == 81.7
    assert second["noisy"] == [] and entry["spread_pct"] == second["spread_pct"] == 0.4
    assert entry["thresholds"] == {"busy_pct": cpuload.BUSY_PCT, "spread_pct": choice.SPREAD_MAX_PCT}
    # Final: the next run uses it without measuring (the script is used up: a timing would fail).
    timed = machine["timed"]
    again = resolve(AUTO, CPU)
    assert again.chosen_by == "cache" and again.channels_last and machine["timed"] == timed


@pytest.fixture
def fake_measure(monkeypatch, tmp_path):
    """``probe.measure`` returning the same clean rounds each try (channels-last fastest), each try taking
    ``try_s`` seconds of the probe's clock; counts the tries."""
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    state = {"measured": 0, "now": 0.0, "try_s": 0.0}
    no_waiting(monkeypatch, clock=lambda: state["now"])

    def measure(device, budget_s, rounds, **kwargs):
        state["measured"] += 1
        state["now"] += state["try_s"]
        rounds.update({CL: [141.0, 142.0, 143.0], NCHW: [150.0, 151.0, 152.0]})
        return {name: min(values) for name, values in rounds.items()}

    monkeypatch.setattr(probe, "measure", measure)
    return state


def test_a_probe_beside_load_is_provisional_and_measured_again_at_the_next_idle_start(
    fake_measure, monkeypatch, caplog
):
    other_load(monkeypatch, Busy)
    with caplog.at_level("WARNING", logger="cnnbench"):
        chosen = resolve(AUTO, CPU)
    # Measured again (bounded: PROBE_TRIES in all), still busy: used for this run, marked provisional.
    assert fake_measure["measured"] == choice.PROBE_TRIES == 3
    assert chosen.channels_last and chosen.probe_record == {
        "measured_at": chosen.probe_record["measured_at"],
        "provisional": True,
        "other_cpu_pct": 34.0,
        "spread_pct": 0.7,
    }
    entry = cached_entry()
    assert entry["provisional"] is True and entry["other_cpu_pct"] == 34.0
    assert [t["noisy"] for t in entry["tries"]] == [["other processes used 34% of a core"]] * 3
    (said,) = [r.getMessage() for r in caplog.records if "Provisional" in r.getMessage()]
    assert said.startswith(
        f"Provisional fast-path choice {CL}: measured under load 34% of a core / spread 1%"
    )
    assert "measuring again at the next start" in said
    # The next start finds the machine still busy: the provisional answer again, said again, no probe.
    caplog.clear()
    with caplog.at_level("WARNING", logger="cnnbench"):
        again = resolve(AUTO, CPU)
    assert again.chosen_by == "cache" and again.probe_record["provisional"] and fake_measure["measured"] == 3
    assert any("Provisional" in r.getMessage() for r in caplog.records)
    # A start that finds the machine idle measures again: one clean try, cached as final.
    other_load(monkeypatch, Quiet)
    idle = resolve(AUTO, CPU)
    assert idle.chosen_by == "probe" and fake_measure["measured"] == 4
    assert cached_entry()["provisional"] is False and cached_entry()["other_cpu_pct"] == 1.0
    assert resolve(AUTO, CPU).chosen_by == "cache" and fake_measure["measured"] == 4


def test_retries_stop_at_the_time_budget(fake_measure, monkeypatch):
    other_load(monkeypatch, Busy)
    fake_measure["try_s"] = 14.0  # a busy machine's try overruns its budget (the warm-up is not in it)
    entry = probe.probe(CPU)
    # Tries start at 0 and 14 s; a third would start at 28 s and could end after PROBE_TOTAL_S (30 s).
    assert fake_measure["measured"] == 2 and entry["provisional"] is True
    assert [t["seconds"] for t in entry["tries"]] == [14.0, 14.0] and entry["probe_seconds"] == 28.0


def test_a_cached_answer_of_the_previous_version_is_measured_again(fake_measure, monkeypatch):
    other_load(monkeypatch, Quiet)
    old_key = {**probe.machine_key(CPU), "probe": 1}
    path = cache.cache_dir() / choice.CACHE_FILE
    path.parent.mkdir(parents=True)
    # An answer of the earlier probe measured beside load: channels-last disturbed, NCHW chosen, no rounds.
    old = {"machine": old_key, "timings_ms": {CL: 327.0, NCHW: 156.0}, "choice": NCHW, "other_cpu_pct": 34.0}
    path.write_text(json.dumps({"entries": {json.dumps(old_key, sort_keys=True): old}}))
    assert resolve(AUTO, CPU).channels_last and fake_measure["measured"] == 1


# ----- the run's steady state against the prediction ----------------------------------------------------
def reference_parts(fast_path, **changes):
    cfg = {
        "model": {"name": "resnet", "shortcut": "A", "block": "basic", "stochastic_depth": 1.0},
        "depth": 20,
    }
    cfg.update(changes.pop("cfg", {}))
    from omegaconf import OmegaConf

    return SimpleNamespace(
        fast_path=fast_path,
        cfg=OmegaConf.create(cfg),
        device=CPU,
        batch_size=changes.pop("batch_size", 128),
        dist=SimpleNamespace(world_size=1),
        data=SimpleNamespace(train_images=torch.zeros(1, 3, 32, 32, dtype=torch.uint8)),
    )


def warnings_in(caplog) -> list[str]:
    """The warnings logged: the INFO lines of the probe itself reach caplog too when an earlier test left
    the cnnbench logger propagating at INFO."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def windows(check: steady.SteadyState, step_ms: float, every: int = 100, count: int = 6) -> None:
    for iteration in range(every, every * (count + 1), every):
        check.window(iteration, 1e3 * 128 / step_ms)


def test_a_run_far_slower_than_predicted_marks_the_probe_stale_once(fake_measure, monkeypatch, caplog):
    other_load(monkeypatch, Quiet)
    chosen = resolve(AUTO, CPU)  # bf16/channels_last at 141 ms, cached as final
    check = steady.SteadyState.for_run(reference_parts(chosen))
    assert check is not None and check.predicted_ms == 141.0
    with caplog.at_level("WARNING", logger="cnnbench"):
        windows(check, 330.0)
    (said,) = warnings_in(caplog)
    assert said.startswith(
        "The training step takes 330 ms in steady state (median of 3 logging windows), 2.34x"
    )
    assert "it measures again at the next start" in said
    assert "2.34x" in cached_entry()["stale"]["reason"]
    # The next start measures again (the stale mark is gone with the new answer).
    assert resolve(AUTO, CPU).chosen_by == "probe" and fake_measure["measured"] == 2
    assert "stale" not in cached_entry()


def test_a_run_near_its_prediction_or_slowed_by_load_leaves_the_probe_alone(
    fake_measure, monkeypatch, caplog
):
    other_load(monkeypatch, Quiet)
    chosen = resolve(AUTO, CPU)
    with caplog.at_level("WARNING", logger="cnnbench"):
        windows(steady.SteadyState.for_run(reference_parts(chosen)), 155.0)  # the loop's usual +10%
    assert warnings_in(caplog) == [] and "stale" not in cached_entry()
    other_load(monkeypatch, Busy)  # the run's own windows beside another job
    with caplog.at_level("WARNING", logger="cnnbench"):
        windows(steady.SteadyState.for_run(reference_parts(chosen)), 330.0)
    (said,) = warnings_in(caplog)
    assert "other processes used 34% of a core meanwhile" in said and "stale" not in cached_entry()


def test_the_steady_state_check_is_for_the_probes_own_workload_only(fake_measure, monkeypatch):
    import dataclasses

    other_load(monkeypatch, Quiet)
    chosen = resolve(AUTO, CPU)
    assert steady.SteadyState.for_run(reference_parts(chosen)) is not None
    assert steady.SteadyState.for_run(reference_parts(chosen, cfg={"depth": 56})) is None
    assert steady.SteadyState.for_run(reference_parts(chosen, batch_size=256)) is None
    recorded = dataclasses.replace(chosen, chosen_by="recorded")  # a resume: no probe answer read
    assert steady.SteadyState.for_run(reference_parts(recorded)) is None
    # The warm-up windows are left out: nothing is judged before 3 windows and 50 steps after it.
    check = steady.SteadyState.for_run(reference_parts(chosen))
    windows(check, 330.0, every=10, count=6)
    assert not check.done and len(check.windows) == 4 and check.steps == 40


def test_a_training_run_feeds_its_logging_windows_to_the_check(fake_measure, monkeypatch, tmp_path, caplog):
    """The wiring: the trainer's logging windows reach the check through the run's records (a tiny model
    stands in for the reference workload, with an impossible prediction, judged after a short warm-up)."""
    from cnnbench.commands.bench import compose_config
    from cnnbench.engine.trainer import run

    other_load(monkeypatch, Quiet)
    monkeypatch.setattr(steady, "STEADY_SKIP_ITERS", 5)
    monkeypatch.setattr(steady, "STEADY_STEPS", 10)
    fed = []

    def for_run(parts):
        fp = parts.fast_path
        check = steady.SteadyState(parts.device, "fp32/channels_last", 1e-3, fp.probe_record["measured_at"])
        real = check.window
        check.window = lambda iteration, img_per_s: (fed.append(iteration), real(iteration, img_per_s))
        return check

    monkeypatch.setattr(steady.SteadyState, "for_run", staticmethod(for_run))
    # fp32 fixed, the layout measured (the probe's answer is read): windows of 5 iterations up to 20.
    cfg = compose_config([*TINY, "trainer.precision=fp32", "trainer.eval_every=20", "trainer.ckpt_every=20"])
    with caplog.at_level("WARNING", logger="cnnbench"):
        run(cfg, tmp_path / "run")
    assert fed == [5, 10, 15, 20]  # every logging window, none of the evaluations
    said = [r.getMessage() for r in caplog.records if "steady state" in r.getMessage()]
    assert len(said) == 1 and "median of 3 logging windows" in said[0]
    assert "the probe's timings look wrong" in said[0] and cached_entry()["stale"]


# ----- a real probe beside a busy process ----------------------------------------------------------------
SPINNER = """
import os, sys, threading
threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
print("spinning", flush=True)
while True:
    pass
"""


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the probe's steps stay short beside the spinning core
    yield
    torch.set_num_threads(threads)


@pytest.mark.skipif(not Path("/proc/stat").is_file(), reason="other processes' load is read from /proc/stat")
def test_a_real_probe_beside_a_spinning_process_sees_the_load_and_caches_no_final_answer(
    monkeypatch, tmp_path, one_thread
):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    # One short try of two candidates: what is tested is the load reading (the retries are scripted above).
    monkeypatch.setattr(workload, "candidates", lambda device: ["fp32/channels_last", "fp32/nchw"])
    monkeypatch.setattr(probe, "PROBE_BUDGET_S", 2.0)  # a window long enough to judge (MIN_WINDOW_S)
    monkeypatch.setattr(probe, "PROBE_TRIES", 1)
    spinner = subprocess.Popen([sys.executable, "-c", SPINNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert spinner.stdout.readline() == b"spinning\n"
        entry = probe.probe(CPU)
    finally:
        spinner.stdin.close()  # the spinner exits when its stdin closes
        spinner.wait(timeout=30)
    assert spinner.returncode == 0
    assert all(t["seconds"] >= cpuload.MIN_WINDOW_S for t in entry["tries"])  # long enough to judge
    # The spinner alone keeps a core busy: every try saw it.
    assert all(t["other_cpu_pct"] > cpuload.BUSY_PCT for t in entry["tries"]), entry["tries"]
    assert all(t["noisy"][0].startswith("other processes used") for t in entry["tries"])
    assert len(entry["tries"]) == 1 and entry["provisional"] is True
    assert cached_entry()["provisional"] is True
    assert set(entry["timings_ms"]) == {"fp32/channels_last", "fp32/nchw"}
