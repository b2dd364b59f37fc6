"""Choosing numeric precision: ``--precision auto|fp32|bf16|fp16``.

``auto`` on a CUDA GPU takes bf16 (fp16 where bf16 is missing).  On a CPU it takes bf16 only
where the hardware computes it natively *and* it is faster for this model: whether bf16 autocast
pays off on a CPU depends on the chip and the shapes (with AMX-BF16 a 4-layer/128-wide GPT-2
trained 1.65x faster, but the 0.8M-parameter nanoGPT shape got slower, casts dominating; on
AVX512-BF16-only chips training can be slower in bf16 throughout).  So training measures it:
:func:`measure_faster_precision` times a few forward/backward passes in both precisions and keeps
bf16 only when it is clearly faster.  Without a measurement (evaluation), a size rule decides.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
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


def should_measure(name: str, device: Any) -> bool:
    """True when ``auto`` on this device can only be settled by measuring (CPU with native bf16)."""
    return name == "auto" and getattr(device, "type", str(device)) == "cpu" and cpu_has_native_bf16()


def measure_faster_precision(
    step: Callable[[str], float], *, repeats: int = 2, margin: float = 0.9, budget_s: float = 2.0
) -> tuple[str, dict[str, float]]:
    """Time ``step(precision)`` (one forward/backward, returning seconds) in fp32 and bf16.

    Each precision gets one warm-up call, then ``repeats`` timed calls, interleaved; bf16 wins
    only when its best time is below ``margin`` x fp32's.  A model whose fp32 step takes longer
    than ``budget_s`` is not measured further: big models gain from bf16 on chips that have it.
    """
    first = step("fp32")
    if first > budget_s:
        return "bf16", {"fp32": first}
    step("bf16")
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(repeats):
        for precision in times:
            times[precision].append(step(precision))
    best = {precision: min(values) for precision, values in times.items()}
    return ("bf16" if best["bf16"] < margin * best["fp32"] else "fp32"), best


def autocast_context(precision: str, device: Any) -> Any:
    """A context manager running the forward pass in ``precision`` (a no-op for fp32)."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=getattr(device, "type", str(device)), dtype=dtype)
