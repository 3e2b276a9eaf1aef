"""Shared helpers: a tiny, fast training configuration, an in-process CLI runner, and the suite's device.

Which device the suite sees is decided here, once, before any test module is imported:

- The default suite (``-m 'not slow and not cuda'``) and every selection without cuda-marked tests run
  on the CPU even on a machine with a GPU: ``CUDA_VISIBLE_DEVICES`` is emptied before torch can look
  for one, and the subprocesses the tests start inherit it. Otherwise ``trainer.device=auto`` would
  train on the GPU and change the numbers and timings the tests compare.
- A selection with cuda-marked tests (``pytest -m cuda``) sees the GPUs, with cuBLAS's fixed workspace
  (``CUBLAS_WORKSPACE_CONFIG``) set before CUDA starts, so that deterministic comparisons are
  bitwise-repeatable, in this process and in its subprocesses.
- A cuda-marked test skips without a GPU, or fails when ``CNNBENCH_REQUIRE_CUDA=1`` (the GPU check sets
  it: a machine that should have a GPU must not pass by skipping): ``pytest_runtest_setup`` below, for
  every test file, so no file can forget it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile

import pytest
from typer.testing import CliRunner

# The fast-path probe's cache (trainer.precision/channels_last=auto): one per test session, never the
# user's own, inherited by the subprocesses the tests start. The probe itself runs once per session.
os.environ["CNNBENCH_CACHE"] = tempfile.mkdtemp(prefix="cnnbench-test-cache-")

REQUIRE_CUDA_ENV = "CNNBENCH_REQUIRE_CUDA"
# cuBLAS's documented settings for deterministic results; the first is set unless the user chose one.
CUBLAS_DETERMINISTIC = (":4096:8", ":16:8")

# depth 8 = one block per stage: a full run of tens of iterations takes seconds on a CPU.
TINY = [
    "data=digits",
    "model=plain",
    "depth=8",
    "trainer.max_iters=20",
    "trainer.batch_size=32",
    "trainer.log_every=5",
    "trainer.eval_every=10",
    "trainer.ckpt_every=10",
]


def selects_cuda(markexpr: str) -> bool:
    """Whether ``-m markexpr`` selects the cuda-marked tests (they carry no other mark that -m names)."""
    from _pytest.mark.expression import Expression

    if not markexpr.strip():
        return True  # no -m at all: every test, the cuda ones too
    return Expression.compile(markexpr).evaluate(lambda name, /, **kwargs: name == "cuda")


def pytest_configure(config: pytest.Config) -> None:
    # Before collection: test modules call torch.cuda at import time (skipif conditions), and CUDA reads
    # these variables once, when it starts.
    if selects_cuda(config.option.markexpr or ""):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC[0])
        return
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise pytest.UsageError("CUDA started before tests/conftest.py could hide the GPUs from the suite")
    os.environ["CUDA_VISIBLE_DEVICES"] = ""


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("cuda") is None or cuda_available():
        return
    if os.environ.get(REQUIRE_CUDA_ENV) == "1":
        pytest.fail(
            f"{REQUIRE_CUDA_ENV}=1 but torch sees no CUDA GPU (CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')!r}): this cuda test must run, not skip",
            pytrace=False,
        )
    pytest.skip(f"needs an NVIDIA GPU (with {REQUIRE_CUDA_ENV}=1 this fails instead)")


@pytest.fixture
def cli(monkeypatch, tmp_path):
    """Run `cnnbench ARGS` in-process with tmp_path as the working directory."""
    from cnnbench.cli import app

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def invoke(*args: str):
        with logging_kept():  # a command run in-process stands for a process of its own
            return runner.invoke(app, list(args), catch_exceptions=False)

    return invoke


@contextlib.contextmanager
def logging_kept():
    """The root and cnnbench loggers as they were: the handlers a command or a test attaches (Hydra's job
    logging on a runner's stream, closed when the call returns) go with it, or later log lines would fail
    on them and print "--- Logging error ---" with a traceback into another command's output."""
    loggers = [logging.getLogger(), logging.getLogger("cnnbench")]
    saved = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    try:
        yield
    finally:
        for lg, (handlers, level, propagate) in zip(loggers, saved, strict=True):
            for handler in lg.handlers[:]:
                if handler not in handlers:
                    handler.close()
            lg.handlers[:], lg.level, lg.propagate = handlers, level, propagate


@pytest.fixture(autouse=True)
def _logging_as_found():
    with logging_kept():
        yield
