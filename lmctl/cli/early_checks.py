"""The CLI's checks before the heavy imports (see :mod:`lmctl.workflows.preflight`), and the
choice of model in a run directory, said on stderr."""

from __future__ import annotations

import sys
from typing import Any

from lmctl.core.run_dir import resolve_model_dir
from lmctl.workflows.preflight import check_eval, check_model_reference, check_train

__all__ = ["check_eval", "check_train", "resolve_models"]


def resolve_models(models: list[str], checkpoint: str | None, *, offline: bool, stream: Any = None) -> list[str]:
    """``--model`` values as the paths to load: a run directory becomes its final model, else its
    latest checkpoint (``--checkpoint`` picks another), said on stderr; the rest are checked
    (a missing directory, an offline hub id not in the cache) before any import."""
    stream = stream or sys.stderr
    resolved = []
    for name in models:
        check_model_reference(name, offline=offline)
        choice = resolve_model_dir(name, checkpoint)
        if choice.note:
            stream.write(f"note: {choice.note}\n")
            stream.flush()
        resolved.append(str(choice.path))
    return resolved
