"""The ``permuted`` family: XLNet permutation language modelling.

The collator follows ``transformers.DataCollatorForPermutationLanguageModeling`` (spans of up to
``max_span_length`` tokens, ``plm_probability`` of the sequence predicted, a random factorisation
order), with every random draw taken from the given generator so seeds fix the result.
"""

from __future__ import annotations

from typing import Any

from lmctl.errors import UsageError
from lmctl.families.base import Family, FamilyOptions, LossOutput
from lmctl.families.masked import masked_cross_entropy
from lmctl.hookspecs import hookimpl


def permutation_batch(
    input_ids: Any,
    *,
    plm_probability: float,
    max_span_length: int,
    mask_token_id: int,
    special_ids: list[int],
    pad_token_id: int | None,
    generator: Any,
    attention_mask: Any = None,
) -> dict:
    """Inputs, perm_mask, target_mapping and labels for one XLNet batch (see module docstring)."""
    import torch

    batch_size, length = input_ids.shape
    if length % 2:
        raise UsageError(f"the permuted family needs an even block size, got {length}")
    labels = input_ids.clone()
    masked = torch.zeros(labels.shape, dtype=torch.bool)
    for i in range(batch_size):
        cur = 0
        while cur < length:
            span = int(torch.randint(1, max_span_length + 1, (1,), generator=generator))
            context = int(span / plm_probability)
            start = cur + int(torch.randint(context - span + 1, (1,), generator=generator))
            masked[i, start : start + span] = True
            cur += context
    special = torch.zeros_like(masked)
    for token_id in special_ids:
        special |= input_ids == token_id
    padding = torch.zeros_like(masked)
    if attention_mask is not None:
        padding |= attention_mask == 0
    elif pad_token_id is not None:
        padding |= input_ids == pad_token_id
    masked &= ~(special | padding)
    non_functional = ~(special | padding)

    inputs = input_ids.masked_fill(masked, mask_token_id)
    labels[~masked] = -100
    target_mapping = torch.eye(length).expand(batch_size, length, length).contiguous()
    perm_mask = torch.zeros((batch_size, length, length), dtype=torch.float32)
    for i in range(batch_size):
        # Split the sequence into two halves and permute by column pairs, as transformers does,
        # so the factorisation order is random but each position sees a consistent context.
        order = torch.arange(length).reshape(-1, length // 2).transpose(0, 1)
        order = order[torch.randperm(length // 2, generator=generator)].flatten()
        order = order.masked_fill(~masked[i] & non_functional[i], -1)
        perm_mask[i] = (order.reshape(length, 1) <= order.reshape(1, length)) & masked[i]
    batch = {"input_ids": inputs, "perm_mask": perm_mask, "target_mapping": target_mapping, "labels": labels}
    if attention_mask is not None:
        batch["attention_mask"] = attention_mask
    return batch


class PermutedFamily(Family):
    name = "permuted"
    aliases = ("plm", "xlnet")
    description = "Permutation language modelling (XLNet)."
    model_types = ("xlnet",)
    architectures = ("XLNetLMHeadModel",)
    scratch_architectures = ("xlnet",)
    auto_class = "AutoModelForCausalLM"  # transformers maps xlnet -> XLNetLMHeadModel here
    generate_kind = "text"
    # XLNetLMHeadModel.prepare_inputs_for_generation drops the attention mask, so padded
    # prompts would attend to the padding: batch only prompts of equal length.
    generate_with_padding = False
    pipeline_tag = "text-generation"
    requires_even_block_size = True
    tokenizer_kind = "unigram"

    def special_tokens(self) -> dict[str, str]:
        return {
            "bos_token": "<s>",
            "eos_token": "</s>",
            "unk_token": "<unk>",
            "sep_token": "<sep>",
            "pad_token": "<pad>",
            "cls_token": "<cls>",
            "mask_token": "<mask>",
        }

    def build_config(self, architecture: str, **kwargs: Any) -> Any:
        config = super().build_config(architecture, **kwargs)
        # XLNet's default mem_len/reuse_len are for long-document pretraining; blocks here are independent.
        config.mem_len = None
        config.reuse_len = None
        config.use_mems_train = False
        config.use_mems_eval = False
        return config

    def make_collator(self, tokenizer: Any, options: FamilyOptions) -> Any:
        if tokenizer.mask_token_id is None:
            raise UsageError("the tokenizer has no mask token, which the 'permuted' family needs")
        special_ids = sorted(set(tokenizer.all_special_ids))

        def collate(input_ids: Any, attention_mask: Any = None, generator: Any = None) -> dict:
            return permutation_batch(
                input_ids,
                plm_probability=options.plm_probability,
                max_span_length=options.max_span_length,
                mask_token_id=tokenizer.mask_token_id,
                special_ids=special_ids,
                pad_token_id=tokenizer.pad_token_id,
                generator=generator,
                attention_mask=attention_mask,
            )

        return collate

    def compute_loss(self, model: Any, batch: dict, options: FamilyOptions) -> LossOutput:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = model(**inputs, use_mems=False).logits
        loss, tokens = masked_cross_entropy(logits, batch["labels"], options.label_smoothing)
        return LossOutput(loss=loss, tokens=tokens)

    def evaluate(self, model: Any, tokenizer: Any, split: Any, settings: Any) -> dict:
        """Seeded PLM loss plus a left-to-right score (see :mod:`lmctl.evaluate`)."""
        from lmctl.evaluate import evaluate_permuted

        return evaluate_permuted(self, model, tokenizer, split, settings)


@hookimpl
def register_families(register: Any) -> None:
    register(PermutedFamily())
