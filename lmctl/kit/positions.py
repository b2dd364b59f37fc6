"""How many positions a model config accepts (shared by families, evaluation and generation)."""

from __future__ import annotations

from typing import Any

ROBERTA_LIKE = frozenset({"roberta", "camembert", "xlm-roberta", "longformer"})

# Attributes holding position-embedding sizes, in the order transformers' configs use them.
POSITION_KEYS = ("n_positions", "max_position_embeddings", "n_ctx", "max_seq_length")


def max_positions(config: Any) -> int | None:
    """The longest sequence a model config accepts, or None when it has no absolute limit."""
    for key in POSITION_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            # RoBERTa-style models reserve padding_idx + 1 positions.
            if getattr(config, "model_type", "") in ROBERTA_LIKE:
                value -= (getattr(config, "pad_token_id", 1) or 1) + 1
            return value
    return None
