"""Silence library chatter a user cannot act on.

transformers, datasets, accelerate and torch print load-time progress bars, advice meant for
library authors ("Setting pad_token_id to eos_token_id", deprecation notices of their own
internals, ...) to stderr.  lmctl shows its own progress and turns what matters into its own
one-line messages, so every command that loads these libraries calls :func:`quiet_libraries`.

Importing this module is cheap.  The function imports transformers (every caller uses it);
datasets only when already imported (it is slow to import; lmctl.data.readers silences it on load).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

LIBRARY_LOGGERS = ("transformers", "accelerate", "datasets", "torch.distributed", "huggingface_hub", "bitsandbytes")
# Loggers that their library resets to WARNING when it is imported (DeepSpeed's create_logger), so a
# level set beforehand does not last: a filter on the logger object does.  DeepSpeed is imported
# lazily by accelerate and transformers and says "Setting accelerator to CPU" on every CPU machine.
FILTERED_LOGGERS = ("DeepSpeed",)


def _error_or_worse(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


def quiet_libraries() -> None:
    """Hide warnings and progress bars of transformers, datasets, accelerate and torch.

    Idempotent and cheap after the first call.  Errors are still shown (they are actionable).
    """
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for name in FILTERED_LOGGERS:
        logger = logging.getLogger(name)
        if _error_or_worse not in logger.filters:
            logger.addFilter(_error_or_worse)
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - lmctl depends on transformers
        pass
    else:
        hf_logging.set_verbosity_error()
        # Importing transformers imports huggingface_hub, which resets its logger to WARNING: set
        # it again, or a Hub that cannot be reached prints ten "Retrying in 1s" lines.
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
        hf_logging.disable_progress_bar()  # weight-loading bars, and (below) the Hub's download bars
        # Saving: "Writing model shards: 0%|..." at every checkpoint, whatever re-enabled bars
        # (the Hub's download bars on a terminal share transformers' switch in some versions).
        if hasattr(hf_logging, "set_tqdm_hook"):
            hf_logging.set_tqdm_hook(_hide_save_bars)
        # A download can take minutes: keep its progress bars on a terminal, and only there (in a
        # log they are lines of carriage returns).  HF_HUB_DISABLE_PROGRESS_BARS=1 still wins.
        if sys.stderr.isatty() and not os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS"):
            from huggingface_hub.utils import enable_progress_bars

            enable_progress_bars()
    datasets = sys.modules.get("datasets")
    if datasets is not None:
        datasets.logging.set_verbosity_error()
        datasets.disable_progress_bars()  # lmctl shows its own progress


def _hide_save_bars(factory, args, kwargs):  # noqa: ANN001, ANN202 - transformers' tqdm hook signature
    """transformers' tqdm hook: bars of saving are never shown (lmctl says when it saved)."""
    if str(kwargs.get("desc", "")).startswith("Writing model shards"):
        kwargs = {**kwargs, "disable": True}
    return factory(*args, **kwargs)
