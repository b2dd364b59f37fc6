"""Choosing numeric precision: ``--precision auto|fp32|bf16|fp16``.

``auto`` on a CUDA GPU takes bf16 (fp16 where bf16 is missing).  On a CPU it takes bf16 only
where the hardware computes it natively *and* it is faster for this model: whether bf16 autocast
pays off on a CPU depends on the chip and the shapes (with AMX-BF16 a 4-layer/128-wide GPT-2
trained 1.65x faster, but the 0.8M-parameter nanoGPT shape got slower, casts dominating; on
AVX512-BF16-only chips training can be slower in bf16 throughout).  So training measures it:
:func:`measure_faster_precision` times a few forward/backward passes in both precisions and keeps
bf16 only when it is clearly faster.  Without a measurement (evaluation), a size rule decides.

A measurement close to the margin could go either way from one run to the next, and the two
precisions give (slightly) different numbers: so the first decision for a given CPU, software and
training shape is remembered in ``cache_root()/precision.json`` and reused, which keeps the same
command reproducible on the same machine.  Delete the file to measure again.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmctl.core.files import write_text_atomic

# Below this many parameters, bf16 autocast on a CPU costs more in casts than it saves.
CPU_BF16_MIN_PARAMETERS = 2_000_000
# Training below this size is not even measured: fp32 (the 0.8M-parameter nanoGPT shape trained
# slower in bf16 on an AMX-BF16 Xeon and no faster on an AVX512-BF16 EPYC).  Between the two
# sizes the answer depends on the chip and the shapes, so training measures it.
CPU_BF16_MEASURE_MIN_PARAMETERS = 1_000_000


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


def should_measure(name: str, device: Any, model_params: int) -> bool:
    """True when ``auto`` can only be settled by measuring: a CPU with native bf16, a model that is
    not tiny."""
    return (
        name == "auto"
        and getattr(device, "type", str(device)) == "cpu"
        and model_params >= CPU_BF16_MEASURE_MIN_PARAMETERS
        and cpu_has_native_bf16()
    )


def measure_faster_precision(
    step: Callable[[str], float], *, repeats: int = 3, margin: float = 0.9, budget_s: float = 2.0
) -> tuple[str, dict[str, float]]:
    """Time ``step(precision)`` (one forward/backward, returning seconds) in fp32 and bf16.

    Each precision gets one warm-up call, then ``repeats`` timed calls, interleaved; bf16 wins
    only when its median time is below ``margin`` x fp32's.  A model whose fp32 step takes longer
    than ``budget_s`` is not measured further: big models gain from bf16 on chips that have it.
    """
    import statistics

    first = step("fp32")
    if first > budget_s:
        return "bf16", {"fp32": first}
    step("bf16")
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(repeats):
        for precision in times:
            times[precision].append(step(precision))
    median = {precision: statistics.median(values) for precision, values in times.items()}
    return ("bf16" if median["bf16"] < margin * median["fp32"] else "fp32"), median


def decision_key(shape: dict[str, Any]) -> str:
    """What a measured choice depends on: the CPU, torch, the thread count and the training shape."""
    import torch

    cpu = "unknown cpu"
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    parts = [cpu, f"{os.cpu_count()} cpus", f"torch {torch.__version__}", f"{torch.get_num_threads()} threads"]
    parts += [f"{k}={shape[k]}" for k in sorted(shape)]
    return "; ".join(parts)


def _decisions_path() -> Path:
    from lmctl.core.files import cache_root  # noqa: I001

    return cache_root() / "precision.json"


def remembered_precision(key: str) -> dict[str, Any] | None:
    """The decision recorded for ``key`` by an earlier run on this machine, if any."""
    try:
        entry = json.loads(_decisions_path().read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    return entry if isinstance(entry, dict) and entry.get("precision") in ("fp32", "bf16") else None


def remember_precision(key: str, precision: str, timings: dict[str, float]) -> None:
    """Record a measured decision (best effort: a read-only cache only costs a new measurement)."""
    path = _decisions_path()
    with contextlib.suppress(OSError, ValueError):
        try:
            decisions = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):  # none yet, or damaged: start afresh
            decisions = {}
        if not isinstance(decisions, dict):
            decisions = {}
        decisions[key] = {"precision": precision, "timings_s": timings}
        # Written to a temporary file and renamed: concurrent runs never see half a file.
        write_text_atomic(path, json.dumps(decisions, indent=1, sort_keys=True))


def autocast_context(precision: str, device: Any) -> Any:
    """A context manager running the forward pass in ``precision`` (a no-op for fp32)."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=getattr(device, "type", str(device)), dtype=dtype)
