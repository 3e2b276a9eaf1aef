"""k jobs per GPU (cnnbench.launchers): lock slots, hydra/launcher=gpus's n_jobs, the measured k, MPS.

GPU counts are faked (monkeypatched torch.cuda), so this runs on any CPU machine; the one-job-per-GPU
behaviour (one slot) is tested in test_sweep.py.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

from cnnbench.core.config import conf_dir
from cnnbench.errors import CnnbenchError
from cnnbench.launchers import measured, mps, resolvers, slots


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """``count`` faked GPUs inside sweep job ``job``; ``launcher_jobs`` jobs at once (None: not said)."""
    import torch

    state = {"count": 2, "job": 0, "current": None, "n_jobs": None}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: state["count"] > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: state["count"])
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: state.update(current=index))
    monkeypatch.setattr(slots, "sweep_job_num", lambda: state["job"])
    monkeypatch.setattr(slots, "launcher_jobs", lambda: state["n_jobs"])
    monkeypatch.setattr(mps, "mps_running", lambda: False)
    monkeypatch.setenv(slots.LOCK_DIR_ENV, str(tmp_path / "locks"))
    for name in ("CUDA_VISIBLE_DEVICES", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    held: dict[int, object] = {}

    def start(job: int) -> str:
        """Sweep job ``job`` starts in a worker process of its own and keeps its slot while it trains."""
        state["job"] = job
        device = slots.job_device("auto")
        if slots._held is not None:  # another process's lock: the next claim must not release it
            held[job], slots._held = slots._held, None
        return device

    def finish(job: int) -> None:
        held.pop(job).close()

    yield state, start, finish
    slots.release_gpu()
    for handle in held.values():
        handle.close()


def test_jobs_fill_every_gpus_first_slot_before_any_second(machine, tmp_path):
    state, start, _ = machine
    state.update(count=2, n_jobs=4)  # 2 jobs per GPU
    assert [start(job) for job in range(4)] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    locks = sorted(p.name for p in (tmp_path / "locks").iterdir())
    assert locks == ["gpu-0-1.lock", "gpu-0.lock", "gpu-1-1.lock", "gpu-1.lock"]
    assert (tmp_path / "locks" / "gpu-1-1.lock").read_text().strip() == str(os.getpid())
    assert slots.sharing_record() == {"jobs_per_gpu": 2, "gpus": 2, "slot": 1, "mps": False}


def test_a_freed_slot_goes_to_the_next_job_whatever_order_jobs_finish_in(machine):
    state, start, finish = machine
    state.update(count=3, n_jobs=6)
    assert [start(job) for job in range(6)] == ["cuda:0", "cuda:1", "cuda:2"] * 2
    finish(4)  # cuda:1's second job ends first
    assert start(6) == "cuda:1"  # job 6 would try cuda:0 first: both its slots are busy
    finish(0)
    finish(2)
    assert start(7) == "cuda:2" and start(8) == "cuda:0"


def test_more_jobs_than_slots_share_round_robin_with_a_warning(machine, caplog):
    state, start, _ = machine
    state.update(count=2, n_jobs=4)
    for job in range(4):
        start(job)
    with caplog.at_level("WARNING", logger="cnnbench"):
        assert start(5) == "cuda:1"
    assert "All 2 GPUs are taken" in caplog.text and "2 job(s) per GPU" in caplog.text
    assert slots.sharing_record()["slot"] is None


def test_one_gpu_shared_by_k_jobs_needs_no_lock_but_is_recorded(machine, tmp_path):
    state, start, _ = machine
    state.update(count=1, n_jobs=4)
    assert start(3) == "auto"  # every job trains on the one GPU
    assert not (tmp_path / "locks").exists()
    assert slots.sharing_record() == {"jobs_per_gpu": 4, "gpus": 1, "slot": None, "mps": False}


def test_no_sharing_record_outside_a_sweep_or_without_a_gpu(machine, monkeypatch):
    state, start, _ = machine
    state.update(count=0)
    assert start(0) == "auto" and slots.sharing_record() is None
    state.update(count=2)
    monkeypatch.setattr(slots, "sweep_job_num", lambda: None)
    assert slots.job_device("auto") == "auto" and slots.sharing_record() is None


@pytest.mark.parametrize(
    ("n_jobs", "count", "per_gpu"), [(None, 2, 1), (1, 4, 1), (4, 4, 1), (5, 4, 2), (8, 1, 8)]
)
def test_slots_per_gpu_spread_the_launchers_jobs(monkeypatch, n_jobs, count, per_gpu):
    monkeypatch.setattr(slots, "launcher_jobs", lambda: n_jobs)
    assert slots.slots_per_gpu(count) == per_gpu


# ----- hydra/launcher=gpus: n_jobs = k x GPUs ----------------------------------------------------------
@pytest.fixture
def cache(monkeypatch, tmp_path):
    """An empty cnnbench cache, and this machine's GPU model faked as ``NVIDIA H200``."""
    monkeypatch.setenv("CNNBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(measured, "_nvidia_smi_name", lambda: "NVIDIA H200")
    monkeypatch.setattr(mps, "mps_running", lambda: False)
    return tmp_path / "cache"


def test_k_is_a_number_or_auto(cache):
    assert resolvers.jobs_per_gpu("3") == 3 and resolvers.jobs_per_gpu(" 1 ") == 1
    assert resolvers.jobs_per_gpu("auto") == 1  # nothing measured on this machine
    for bad in ("0", "-2", "two", "1.5"):
        with pytest.raises(CnnbenchError, match="CNNBENCH_JOBS_PER_GPU"):
            resolvers.jobs_per_gpu(bad)


def test_auto_is_the_measured_k_of_this_gpu_model_and_mps_when_it_runs(cache, monkeypatch):
    measured.write_jobs_record("NVIDIA H200", {"processes": {"jobs_per_gpu": 4}, "mps": {"jobs_per_gpu": 8}})
    measured.write_jobs_record("NVIDIA A100-SXM4-80GB", {"processes": {"jobs_per_gpu": 2}})
    assert resolvers.jobs_per_gpu("auto") == 4
    monkeypatch.setattr(mps, "mps_running", lambda: True)
    assert resolvers.jobs_per_gpu("auto") == 8
    monkeypatch.setattr(measured, "_nvidia_smi_name", lambda: "NVIDIA A100-SXM4-80GB")
    assert resolvers.jobs_per_gpu("auto") == 2  # no MPS measurement there: the processes' k
    record = json.loads((cache / measured.JOBS_CACHE_FILE).read_text())
    assert record["entries"]["NVIDIA H200"]["measured_at"]


def test_sweep_jobs_is_k_per_visible_gpu(cache, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert resolvers.sweep_jobs("2") == 8
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolvers.sweep_jobs("2") == 2  # no GPU: k jobs at once on the CPU
    assert resolvers.sweep_jobs("auto") == 1


def _compose_sweep_job(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.job.num = 5
        cfg.hydra.mode = RunMode.MULTIRUN
    return cfg


def test_the_gpus_launcher_config_gives_the_jobs_their_slots(cache, monkeypatch):
    """conf/hydra/launcher/gpus.yaml composes over the joblib plugin's schema; a job of such a sweep
    reads n_jobs back (the resolver runs in its process too) and spreads over the GPUs."""
    import torch
    from hydra.core.hydra_config import HydraConfig

    resolvers.register_resolvers()  # as importing cnnbench.commands.app does, in launching and job processes
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv(resolvers.JOBS_PER_GPU_ENV, "3")
    cfg = _compose_sweep_job(["hydra/launcher=gpus"])
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher")
    assert cfg.hydra.launcher.n_jobs == 6
    config = HydraConfig.instance()
    previous = config.cfg
    try:
        config.set_config(copy.deepcopy(cfg))
        assert slots.launcher_jobs() == 6 and slots.slots_per_gpu(2) == 3
        config.set_config(_compose_sweep_job([]))  # the basic launcher: one job at a time
        assert slots.launcher_jobs() is None and slots.slots_per_gpu(2) == 1
    finally:
        config.cfg = previous


def test_device_model_falls_back_to_cpu_without_a_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(measured, "_nvidia_smi_name", lambda: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert measured.device_model() == "cpu"


# ----- NVIDIA MPS -------------------------------------------------------------------------------------
def _fake_proc(root: Path, names: dict[str, str]) -> Path:
    for pid, comm in names.items():
        (root / pid).mkdir(parents=True)
        (root / pid / "comm").write_text(comm + "\n")
    (root / "self").mkdir()
    return root


def test_mps_daemon_found_by_process_name_or_control_pipe(tmp_path, monkeypatch):
    monkeypatch.setenv(mps.MPS_PIPE_ENV, str(tmp_path / "pipe"))
    assert not mps.mps_running(_fake_proc(tmp_path / "a", {"1": "systemd", "77": "python3"}))
    # comm keeps 15 characters of nvidia-cuda-mps-control / nvidia-cuda-mps-server
    assert mps.mps_running(_fake_proc(tmp_path / "b", {"1": "init", "42": "nvidia-cuda-mps"}))
    (tmp_path / "pipe").mkdir()
    (tmp_path / "pipe" / "control").write_text("")  # a container that shows no other processes
    assert mps.mps_running(_fake_proc(tmp_path / "c", {"1": "bash"}))


# ----- the lock folder is the user's own ----------------------------------------------------------------
def _claim(lock_dir: Path) -> int:
    try:
        return slots.claim_gpu(0, 2, lock_dir=lock_dir)
    finally:
        slots.release_gpu()


def test_the_lock_folder_is_made_private_and_the_lock_file_keeps_a_held_slot(tmp_path):
    lock_dir = tmp_path / "locks"
    assert _claim(lock_dir) == 0
    assert oct(lock_dir.stat().st_mode & 0o777) == oct(0o700)
    other = slots._lock(lock_dir / "gpu-0.lock")  # a job of another process holds slot 0 ...
    assert other is not None
    try:
        before = (lock_dir / "gpu-0.lock").read_text()
        assert slots.claim_gpu(1, 2, lock_dir=lock_dir) == 1  # ... so this job takes GPU 1, and the held
        assert (lock_dir / "gpu-0.lock").read_text() == before  # file was opened without truncating it
    finally:
        slots.release_gpu()
        other.close()


def test_a_lock_folder_of_another_user_is_refused(tmp_path):
    lock_dir = tmp_path / "locks"
    lock_dir.mkdir(mode=0o700)
    os.chown(lock_dir, 4321, 4321)  # as another user would have made it (the tests may run as root)
    if lock_dir.stat().st_uid == os.getuid():
        pytest.skip("cannot give a folder to another user here")
    with pytest.raises(CnnbenchError, match=r"belongs to another user \(uid 4321\).*CNNBENCH_GPU_LOCK_DIR"):
        _claim(lock_dir)
    assert not list(lock_dir.iterdir())


def test_a_symlinked_lock_folder_is_refused_and_nothing_is_written_through_it(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    (tmp_path / "locks").symlink_to(target)
    with pytest.raises(CnnbenchError, match="is a symbolic link"):
        _claim(tmp_path / "locks")
    assert not list(target.iterdir())
    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    with pytest.raises(CnnbenchError, match="is a symbolic link"):
        _claim(tmp_path / "dangling")
    assert not (tmp_path / "missing").exists()


def test_a_lock_folder_others_can_write_is_refused(tmp_path):
    lock_dir = tmp_path / "locks"
    lock_dir.mkdir()
    lock_dir.chmod(0o777)
    with pytest.raises(CnnbenchError, match=r"can be written by other users \(mode 0o777\).*chmod 700"):
        _claim(lock_dir)
    lock_dir.chmod(0o700)
    assert _claim(lock_dir) == 0


def test_a_symlinked_lock_file_is_refused_and_its_target_untouched(tmp_path):
    lock_dir = tmp_path / "locks"
    lock_dir.mkdir(mode=0o700)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (lock_dir / "gpu-0.lock").symlink_to(victim)
    with pytest.raises(CnnbenchError, match="gpu-0.lock is a symbolic link"):
        _claim(lock_dir)
    assert victim.read_text() == "precious\n"


def test_a_hard_linked_lock_file_is_refused(tmp_path):
    lock_dir = tmp_path / "locks"
    lock_dir.mkdir(mode=0o700)
    victim = lock_dir / "notes.txt"
    victim.write_text("precious\n")
    os.link(victim, lock_dir / "gpu-0.lock")
    with pytest.raises(CnnbenchError, match=r"2 link\(s\)"):
        _claim(lock_dir)
    assert victim.read_text() == "precious\n"
