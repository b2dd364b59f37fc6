"""Named model-size presets for ``--from-scratch`` (``--preset tiny``), per architecture.

``tiny`` is for tests and smoke runs (2 layers, hidden 32: trains in seconds on a CPU);
``small`` is the nanoGPT shakespeare-char shape (4 layers, 4 heads, 128 wide).
``--model-config KEY=VALUE`` overrides still apply on top of a preset.
"""

from __future__ import annotations

from typing import Any

_BERT_LIKE = {
    "tiny": {"num_hidden_layers": 2, "num_attention_heads": 2, "hidden_size": 32, "intermediate_size": 64},
    "small": {"num_hidden_layers": 4, "num_attention_heads": 4, "hidden_size": 128, "intermediate_size": 512},
}

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "gpt2": {
        "tiny": {"n_layer": 2, "n_head": 2, "n_embd": 32},
        "small": {"n_layer": 4, "n_head": 4, "n_embd": 128},
    },
    "openai-gpt": {
        "tiny": {"n_layer": 2, "n_head": 2, "n_embd": 32},
        "small": {"n_layer": 4, "n_head": 4, "n_embd": 128},
    },
    "llama": {
        "tiny": {"num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2, "hidden_size": 32, "intermediate_size": 64},
        "small": {"num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4, "hidden_size": 128, "intermediate_size": 384},
    },
    "bert": _BERT_LIKE,
    "roberta": _BERT_LIKE,
    "camembert": _BERT_LIKE,
    "longformer": {size: {**values, "attention_window": 16} for size, values in _BERT_LIKE.items()},
    "distilbert": {
        "tiny": {"n_layers": 2, "n_heads": 2, "dim": 32, "hidden_dim": 64},
        "small": {"n_layers": 4, "n_heads": 4, "dim": 128, "hidden_dim": 512},
    },
    "albert": {size: {**values, "embedding_size": values["hidden_size"] // 2} for size, values in _BERT_LIKE.items()},
    "electra": {size: {**values, "embedding_size": values["hidden_size"]} for size, values in _BERT_LIKE.items()},
    "xlnet": {
        "tiny": {"n_layer": 2, "n_head": 2, "d_model": 32, "d_inner": 64},
        "small": {"n_layer": 4, "n_head": 4, "d_model": 128, "d_inner": 512},
    },
}


def preset_overrides(architecture: str, preset: str | None) -> dict[str, Any]:
    """The config overrides of ``preset`` for ``architecture`` ({} for no preset)."""
    from lmctl.errors import UsageError

    if not preset:
        return {}
    sizes = PRESETS.get(architecture)
    if sizes is None or preset not in sizes:
        known = sorted(sizes) if sizes else []
        raise UsageError(f"no preset '{preset}' for '{architecture}'" + (f"; known: {', '.join(known)}" if known else ""))
    return dict(sizes[preset])
