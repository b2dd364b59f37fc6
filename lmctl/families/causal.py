"""The ``causal`` family: left-to-right language models (GPT-2, GPT, Llama, any *ForCausalLM)."""

from __future__ import annotations

from typing import Any

from lmctl.families.base import Family, FamilyOptions, LossOutput
from lmctl.hookspecs import hookimpl


def shifted_cross_entropy(logits: Any, labels: Any, label_smoothing: float = 0.0) -> tuple[Any, Any]:
    """Next-token loss: position t predicts labels[t + 1].  Returns (mean loss, predicted tokens).

    The labels are shifted instead of the logits, which avoids copying the [B, T, V] logits.
    The mean divides by the number of predicted tokens (never padding), without a host sync.
    """
    import torch
    import torch.nn.functional as F

    shifted = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=-100)
    total = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        shifted.reshape(-1),
        ignore_index=-100,
        reduction="sum",
        label_smoothing=label_smoothing,
    )
    tokens = (shifted != -100).sum()
    return total / tokens.clamp(min=1), tokens


class CausalFamily(Family):
    name = "causal"
    aliases = ("clm", "gpt")
    description = "Causal (left-to-right) language modelling: GPT-2, GPT, Llama and any AutoModelForCausalLM."
    model_types = (
        "gpt2", "openai-gpt", "llama", "mistral", "qwen2", "qwen3", "gpt_neo", "gpt_neox", "gptj",
        "opt", "bloom", "falcon", "phi", "phi3", "gemma", "gemma2", "olmo", "codegen", "ctrl",
    )  # fmt: skip
    architecture_suffixes = ("ForCausalLM", "LMHeadModel")
    scratch_architectures = ("gpt2", "openai-gpt", "llama")
    auto_class = "AutoModelForCausalLM"
    generate_kind = "text"
    pipeline_tag = "text-generation"
    tokenizer_kind = "bytelevel-bpe"

    def special_tokens(self) -> dict[str, str]:
        return {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}

    def build_config(self, architecture: str, **kwargs: Any) -> Any:
        overrides = dict(kwargs.pop("overrides", None) or {})
        if architecture == "gpt2":
            # GPT-2's "gelu_new" is the tanh GELU written as five elementwise ops; PyTorch's fused
            # kernel computes the same function in one (about 15% of a small model's step on CPU).
            overrides.setdefault("activation_function", "gelu_pytorch_tanh")
        return super().build_config(architecture, overrides=overrides, **kwargs)

    def make_collator(self, tokenizer: Any, options: FamilyOptions) -> Any:
        def collate(input_ids: Any, attention_mask: Any = None, generator: Any = None) -> dict:
            labels = input_ids if attention_mask is None else input_ids.masked_fill(attention_mask == 0, -100)
            batch = {"input_ids": input_ids, "labels": labels}
            if attention_mask is not None:
                batch["attention_mask"] = attention_mask
            return batch

        return collate

    def compute_loss(self, model: Any, batch: dict, options: FamilyOptions) -> LossOutput:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = model(**inputs, use_cache=False).logits
        loss, tokens = shifted_cross_entropy(logits, batch["labels"], options.label_smoothing)
        return LossOutput(loss=loss, tokens=tokens)

    def evaluate(self, model: Any, tokenizer: Any, split: Any, settings: Any) -> dict:
        """Next-token NLL of every token once, with sliding windows (see :mod:`lmctl.evaluate`)."""
        from lmctl.evaluate import evaluate_causal

        return evaluate_causal(self, model, tokenizer, split, settings)

    def save(self, model: Any, tokenizer: Any, out_dir: Any, *, safe_serialization: bool = True) -> None:
        super().save(model, tokenizer, out_dir, safe_serialization=safe_serialization)
        # generation_config.json: sampling defaults that `lmctl generate` and pipelines pick up.
        generation_config = getattr(model, "generation_config", None)
        if generation_config is not None and tokenizer is not None:
            if generation_config.pad_token_id is None:
                generation_config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
            generation_config.save_pretrained(out_dir)


@hookimpl
def register_families(register: Any) -> None:
    register(CausalFamily())
