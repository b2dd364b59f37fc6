"""``lmctl train``: settings (:mod:`.config`), data order (:mod:`.data`), the trainer (:mod:`.trainer`),
launching processes (:mod:`.launch`) and the model card (:mod:`.card`).

Light on import: the heavy modules load when :func:`train` runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lmctl.workflows.train.config import TrainConfig

if TYPE_CHECKING:  # pragma: no cover
    from lmctl.workflows.train.trainer import TrainResult


def train(config: TrainConfig, **kwargs: Any) -> TrainResult:
    """Train a model as ``config`` says; see :func:`lmctl.workflows.train.trainer.train`."""
    from lmctl.workflows.train.trainer import train as run

    return run(config, **kwargs)


__all__ = ["TrainConfig", "train"]
