"""Devices: which one to run on and in which dtype (torch is imported inside the functions); and
whether this process is one of a launch's workers."""

from __future__ import annotations

import os
from typing import Any

from lmctl.errors import UsageError


def started_by_a_launcher() -> bool:
    """True in a worker of a launch (torchrun, ``accelerate launch``, lmctl's own ``--num-processes``):
    torch's launcher sets RANK and LOCAL_RANK for each."""
    return "LOCAL_RANK" in os.environ or "RANK" in os.environ


def pick_device(device: str = "auto") -> str:
    """``auto``: CUDA when available, then Apple MPS, else CPU; an explicit device must exist."""
    import torch

    if device in ("", "auto"):
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {device!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: no CUDA GPU is available here; use --device cpu")
    if parsed.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise UsageError(f"--device {device}: Apple MPS is not available here; use --device cpu")
    return str(parsed)


def pick_dtype(precision: str, device: str) -> Any:
    """``auto``: bfloat16 on a GPU that supports it, float32 elsewhere (CPU half precision is slow)."""
    import torch

    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        raise UsageError(f"--precision must be auto, fp32 or bf16, got {precision!r}")
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def peak_memory_bytes(device: Any) -> int | None:
    """This process's peak memory on ``device``, in bytes: the most CUDA memory torch allocated
    (``torch.cuda.max_memory_allocated``) on a GPU, the process's peak resident set size on a CPU;
    None where it cannot be read (MPS, or no ``resource`` module)."""
    import sys

    kind = getattr(device, "type", None) or str(device).split(":", 1)[0]
    if kind == "cuda":
        import torch

        return int(torch.cuda.max_memory_allocated(device))
    if kind != "cpu":
        return None
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return int(peak if sys.platform == "darwin" else peak * 1024)


def host_to_device(tensor: Any, device: Any) -> Any:
    """Copy a CPU tensor to ``device`` without making the host wait for the GPU.

    A copy from pageable memory to a CUDA device is synchronous: the host waits for the copy, and
    so for the GPU work queued before it (with gradient accumulation, the previous micro-batch's
    backward), leaving the GPU idle while the next batch is built and launched.  From pinned (page-
    locked) memory the copy is queued like a kernel.  Pinned buffers come from torch's caching host
    allocator, which keeps a block until the copies reading it are done, so the temporary is safe.
    """
    target = getattr(device, "type", None) or str(device).split(":", 1)[0]
    if target == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device, non_blocking=True)


def available_memory_bytes(device: Any) -> int | None:
    """Memory a run on ``device`` may still take, in bytes: free CUDA memory
    (``torch.cuda.mem_get_info``) on a GPU, ``MemAvailable`` of /proc/meminfo on a Linux CPU;
    None where it cannot be read."""
    kind = getattr(device, "type", None) or str(device).split(":", 1)[0]
    if kind == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if kind != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
