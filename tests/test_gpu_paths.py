"""The GPU code paths that can be checked on a CPU: the per-step finiteness check (fp16 loss
scaling), peak-memory reporting and host-to-device copies.  tests/test_gpu.py runs them on CUDA."""

from __future__ import annotations

import math

import pytest


def test_a_non_finite_step_never_reaches_the_weights():
    import torch

    from lmctl.workflows.train.trainer import step_is_finite

    one, nan, inf = torch.tensor(1.0), torch.tensor(math.nan), torch.tensor(math.inf)
    assert step_is_finite(one, one)
    assert not step_is_finite(nan, one) and not step_is_finite(one, nan) and not step_is_finite(one, inf)


def test_under_fp16_loss_scaling_only_the_loss_is_checked():
    """An overflowing gradient under fp16 is the loss scaler's to skip (it lowers its scale);
    a non-finite loss is still a NaN step."""
    import torch

    from lmctl.workflows.train.trainer import step_is_finite

    one, nan, inf = torch.tensor(1.0), torch.tensor(math.nan), torch.tensor(math.inf)
    assert step_is_finite(one, inf, loss_scaled=True) and step_is_finite(one, nan, loss_scaled=True)
    assert not step_is_finite(nan, one, loss_scaled=True) and not step_is_finite(inf, one, loss_scaled=True)


@pytest.mark.skipif("not __import__('sys').platform.startswith('linux')")
def test_peak_memory_on_cpu_is_the_process_peak_rss():
    import os
    import resource

    from lmctl.core.device import peak_memory_bytes

    assert peak_memory_bytes("cpu") == resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with open("/proc/self/statm") as handle:
        resident = int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    block = bytearray(200 * 2**20)
    block[::4096] = b"x" * len(block[::4096])  # touch every page: 200 MiB more resident
    assert peak_memory_bytes("cpu") >= resident + 190 * 2**20
    del block
    assert peak_memory_bytes("mps") is None


def test_host_to_device_copies_values_and_keeps_cpu_tensors_on_cpu():
    import torch

    from lmctl.core.device import host_to_device

    x = torch.arange(12).reshape(3, 4)
    y = host_to_device(x, torch.device("cpu"))
    assert y.device.type == "cpu" and torch.equal(x, y)


@pytest.mark.skipif("not __import__('torch').cuda.is_available()")
def test_host_to_device_pins_for_cuda():  # also runs, marked, in tests/test_gpu.py's environment
    import torch

    from lmctl.core.device import host_to_device

    x = torch.arange(12)
    y = host_to_device(x, "cuda")
    assert y.device.type == "cuda" and torch.equal(y.cpu(), x)
