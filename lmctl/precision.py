"""Choosing numeric precision: ``--precision auto|fp32|bf16|fp16``.

``auto`` picks bf16 where the hardware computes it natively *and* the model is big enough for it
to pay off; otherwise fp32.  On CPUs with AMX-BF16, bf16 autocast made a 4-layer/128-wide GPT-2
1.65x faster, but made the 0.8M-parameter nanoGPT shape slower (casts dominate), so small models
stay in fp32.  CUDA GPUs with bf16 support always take bf16.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

# Below this many parameters, bf16 autocast on a CPU costs more in casts than it saves.
CPU_BF16_MIN_PARAMETERS = 2_000_000


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when the CPU has AMX-BF16 or AVX512-BF16 (Linux: read from /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(name: str, device: Any, model_params: int) -> str:
    """Turn ``auto`` into fp32/bf16/fp16 for ``device`` and a model of ``model_params`` parameters."""
    import torch

    from lmctl.errors import UsageError

    kind = getattr(device, "type", str(device))
    if name == "fp32":
        return "fp32"
    if name == "bf16":
        if kind == "cuda" and not torch.cuda.is_bf16_supported():
            raise UsageError("--precision bf16: this GPU has no bf16 support; use fp16 or fp32")
        return "bf16"
    if name == "fp16":
        if kind != "cuda":
            raise UsageError("--precision fp16 needs a CUDA GPU; on CPU use bf16 or fp32")
        return "fp16"
    if kind == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if kind == "cpu" and cpu_has_native_bf16() and model_params >= CPU_BF16_MIN_PARAMETERS:
        return "bf16"
    return "fp32"


def autocast_context(precision: str, device: Any) -> Any:
    """A context manager running the forward pass in ``precision`` (a no-op for fp32)."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=getattr(device, "type", str(device)), dtype=dtype)
