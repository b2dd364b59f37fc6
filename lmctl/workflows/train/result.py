"""What a training run returns (and run.json records as ``result``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrainResult:
    """What :func:`train` returns (and ``run.json`` records)."""

    out: Path
    steps: int
    total_steps: int
    final_train_loss: float | None = None
    final_eval: dict[str, Any] | None = None
    best_eval_loss: float | None = None
    best_checkpoint: str | None = None
    interrupted: str | None = None  # "SIGINT" / "SIGTERM" / "nan" / "early-stopping"
    wall_seconds: float = 0.0
    tokens_per_s: float | None = None
    peak_memory_bytes: int | None = None
    """Peak memory of the (main) process: CUDA max allocated on a GPU, max RSS on a CPU."""
    estimated_peak_memory_bytes: int | None = None
    """The plan's estimate of that peak (:mod:`lmctl.core.memory_plan`)."""
    final_files: list[str] | None = None  # the final model's files in OUT (what --overwrite removes)
    metrics: list[dict[str, Any]] = field(default_factory=list)
