"""The ``causal`` family: left-to-right language models (GPT-2, GPT, Llama, any *ForCausalLM)."""

from __future__ import annotations

from typing import Any

from lmctl.families.base import Family, FamilyOptions, LossOutput
from lmctl.hookspecs import hookimpl


def next_token_batch(input_ids: Any, attention_mask: Any = None, generator: Any = None) -> dict:
    """A causal batch: ``labels`` are the tokens (Hugging Face convention: position t predicts
    ``labels[t + 1]``, see :mod:`lmctl.losses`).

    Packed rows (no attention mask) carry :attr:`CausalFamily.block_lookahead` = 1 token past the
    block: the model reads the first T and all T positions have a target.  Padded rows (line by
    line) are the input itself; padding is labelled -100 and the last real token predicts nothing.
    """
    if attention_mask is None:
        return {"input_ids": input_ids[:, :-1], "labels": input_ids}
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


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
    block_lookahead = 1  # T inputs + the token after them: every position has a target

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
        return next_token_batch

    def compute_loss(self, model: Any, batch: dict, options: FamilyOptions) -> LossOutput:
        from lmctl.losses import causal_lm_loss

        inputs = {k: v for k, v in batch.items() if k != "labels"}
        loss, tokens = causal_lm_loss(model, inputs, batch["labels"], options.label_smoothing)
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
