"""Silence library chatter a user cannot act on.

transformers, datasets, accelerate and torch print load-time progress bars, advice meant for
library authors ("Setting pad_token_id to eos_token_id", deprecation notices of their own
internals, ...) to stderr.  lmctl shows its own progress and turns what matters into its own
one-line messages, so every command that loads these libraries calls :func:`quiet_libraries`.

Importing this module is cheap.  The function imports transformers (every caller uses it);
datasets only when already imported (it is slow to import; lmctl.readers silences it on load).
"""

from __future__ import annotations

import logging
import sys
import warnings

LIBRARY_LOGGERS = ("transformers", "accelerate", "datasets", "torch.distributed", "huggingface_hub")


def quiet_libraries() -> None:
    """Hide warnings and progress bars of transformers, datasets, accelerate and torch.

    Idempotent and cheap after the first call.  Errors are still shown (they are actionable).
    """
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - lmctl depends on transformers
        pass
    else:
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    datasets = sys.modules.get("datasets")
    if datasets is not None:
        datasets.logging.set_verbosity_error()
        datasets.disable_progress_bars()  # lmctl shows its own progress
