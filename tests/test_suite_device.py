"""The suite's own set-up (tests/conftest.py): the device the tests see, and a cuda test without a GPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CUBLAS_DETERMINISTIC, REQUIRE_CUDA_ENV, selects_cuda

ROOT = Path(__file__).parent.parent


@pytest.mark.parametrize(
    ("markexpr", "selected"),
    [
        ("not slow and not cuda", False),  # the default suite (pyproject.toml's addopts)
        ("slow", False),
        ("not cuda", False),
        ("cuda", True),
        ("cuda and not slow", True),
        ("cuda and slow", False),  # no cuda test is slow
        ("slow or cuda", True),
        ("not slow", True),  # the cuda tests are not slow: selected
        ("", True),  # no -m: everything
    ],
)
def test_which_selections_see_the_gpus(markexpr: str, selected: bool) -> None:
    assert selects_cuda(markexpr) is selected


def test_this_session_sees_the_gpus_only_if_it_selected_cuda_tests(pytestconfig: pytest.Config) -> None:
    """In the default suite no test (and no subprocess) can train on a GPU, whatever the machine has."""
    code = "import torch; print(torch.cuda.is_available(), torch.cuda.device_count())"
    seen = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    if selects_cuda(pytestconfig.option.markexpr or ""):
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] in CUBLAS_DETERMINISTIC
        return
    import torch

    from cnnbench.core.device import resolve_device

    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
    assert seen.stdout.split() == ["False", "0"]
    assert not torch.cuda.is_available() and resolve_device("auto").type == "cpu"


def test_a_required_gpu_fails_the_cuda_tests_instead_of_skipping(tmp_path: Path) -> None:
    """One cuda test of each file that has them, in a pytest that sees no GPU: skipped, or failed with
    the reason when the GPU is required."""
    tests = [
        "tests/test_cuda.py::test_fp16_autocast_scales_the_loss",
        "tests/test_cuda_fastpath.py::test_fused_sgd_on_cuda_matches_foreach_and_takes_a_tensor_lr",
    ]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", REQUIRE_CUDA_ENV: "1"}
    args = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider"]
    required = subprocess.run([*args, *tests], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert required.returncode == 1, required.stdout
    assert "2 errors" in required.stdout and "skipped" not in required.stdout, required.stdout
    assert f"{REQUIRE_CUDA_ENV}=1 but torch sees no CUDA GPU" in required.stdout
    env[REQUIRE_CUDA_ENV] = "0"
    optional = subprocess.run([*args, *tests], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert optional.returncode == 0 and "2 skipped" in optional.stdout, optional.stdout
