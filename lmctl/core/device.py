"""Devices: which one to run on and in which dtype (torch is imported inside the functions)."""

from __future__ import annotations

from typing import Any

from lmctl.errors import UsageError


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
