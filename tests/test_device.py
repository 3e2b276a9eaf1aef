import pytest
import torch

from cnnbench.core.device import resolve_device, resolve_precision
from cnnbench.errors import CnnbenchError

CPU = torch.device("cpu")


def test_precision_names_and_explicit_choices():
    assert resolve_precision("fp32", CPU) == "fp32"
    assert resolve_precision("auto", CPU) == "fp32"  # training measures instead (test_fastpath.py)
    with pytest.raises(CnnbenchError, match="auto, fp32, bf16, fp16"):
        resolve_precision("fp8", CPU)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_without_a_gpu_is_an_error_not_a_fallback():
    with pytest.raises(CnnbenchError, match="no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("auto") == CPU
