import pytest
import torch

from cnnbench.device import CPU_COMPILE_MIN_ITERS, resolve_compile, resolve_device, resolve_precision
from cnnbench.errors import CnnbenchError

CPU = torch.device("cpu")


def test_compile_auto_pays_off_only_for_long_cpu_runs():
    assert resolve_compile("auto", CPU, max_iters=64000) is True
    assert resolve_compile("auto", CPU, max_iters=CPU_COMPILE_MIN_ITERS - 1) is False
    assert resolve_compile("auto", torch.device("cuda"), max_iters=10) is True
    assert resolve_compile(False, CPU, max_iters=64000) is False
    assert resolve_compile(True, CPU, max_iters=1) is True
    with pytest.raises(CnnbenchError, match="auto, true or false"):
        resolve_compile("yes", CPU)


def test_precision_names_and_explicit_choices():
    assert resolve_precision("fp32", CPU) == "fp32"
    assert resolve_precision("auto", CPU) in ("fp32", "bf16")
    with pytest.raises(CnnbenchError, match="auto, fp32, bf16, fp16"):
        resolve_precision("fp8", CPU)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_without_a_gpu_is_an_error_not_a_fallback():
    with pytest.raises(CnnbenchError, match="no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("auto") == CPU
