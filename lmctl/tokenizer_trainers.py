"""Kept import path: ``lmctl.tokenizer_trainers`` is now :mod:`lmctl.data.tokenizer_trainers` (re-exported for plugins and scripts)."""

from lmctl.data.tokenizer_trainers import *  # noqa: F403
