"""The ``masked`` family: masked language models (BERT, RoBERTa, DistilBERT, ALBERT, ...)."""

from __future__ import annotations

from typing import Any

from lmctl.families.base import Family, FamilyOptions, LossOutput, mask_tokens
from lmctl.hookspecs import hookimpl

# Special tokens of tokenizers trained for BERT-style families.  Packed documents are separated by
# [SEP] (the base class picks it: these tokenizers have no EOS).
BERT_SPECIAL_TOKENS = {
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "mask_token": "[MASK]",
}


def masked_cross_entropy(logits: Any, labels: Any, label_smoothing: float = 0.0) -> tuple[Any, Any]:
    """Mean cross-entropy over the positions whose label is not -100 (no host sync)."""
    import torch.nn.functional as F

    total = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        labels.reshape(-1),
        ignore_index=-100,
        reduction="sum",
        label_smoothing=label_smoothing,
    )
    tokens = (labels != -100).sum()
    return total / tokens.clamp(min=1), tokens


def make_mlm_collator(tokenizer: Any, options: FamilyOptions, family_name: str) -> Any:
    """BERT-style masking collator (15% by default: 80% [MASK], 10% random, 10% unchanged)."""
    from lmctl.errors import UsageError

    if tokenizer.mask_token_id is None:
        raise UsageError(f"the tokenizer has no mask token, which the '{family_name}' family needs")
    special_ids = sorted(set(tokenizer.all_special_ids))
    vocab_size = len(tokenizer)

    def collate(input_ids: Any, attention_mask: Any = None, generator: Any = None) -> dict:
        masked, labels = mask_tokens(
            input_ids,
            probability=options.mlm_probability,
            mask_token_id=tokenizer.mask_token_id,
            vocab_size=vocab_size,
            special_ids=special_ids,
            generator=generator,
            attention_mask=attention_mask,
        )
        batch = {"input_ids": masked, "labels": labels}
        if attention_mask is not None:
            batch["attention_mask"] = attention_mask
        return batch

    return collate


class MaskedFamily(Family):
    name = "masked"
    aliases = ("mlm", "bert")
    description = "Masked language modelling: BERT, RoBERTa, DistilBERT, ALBERT, CamemBERT, Longformer, ..."
    model_types = (
        "bert", "roberta", "distilbert", "albert", "camembert", "longformer", "xlm-roberta",
        "deberta", "deberta-v2", "mpnet", "megatron-bert", "modernbert", "big_bird", "ernie",
    )  # fmt: skip
    architectures = ("ElectraForMaskedLM",)
    architecture_suffixes = ("ForMaskedLM",)
    scratch_architectures = ("bert", "roberta", "distilbert", "albert", "camembert", "longformer", "electra")
    auto_class = "AutoModelForMaskedLM"
    generate_kind = "fill-mask"
    pipeline_tag = "fill-mask"
    tokenizer_kind = "wordpiece"

    def special_tokens(self) -> dict[str, str]:
        return dict(BERT_SPECIAL_TOKENS)

    def make_collator(self, tokenizer: Any, options: FamilyOptions) -> Any:
        return make_mlm_collator(tokenizer, options, self.name)

    def compute_loss(self, model: Any, batch: dict, options: FamilyOptions) -> LossOutput:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = model(**inputs).logits
        loss, tokens = masked_cross_entropy(logits, batch["labels"], options.label_smoothing)
        return LossOutput(loss=loss, tokens=tokens)

    def evaluate(self, model: Any, tokenizer: Any, split: Any, settings: Any) -> dict:
        """Seeded masked-token loss, or pseudo-perplexity (see :mod:`lmctl.evaluate`)."""
        from lmctl.evaluate import evaluate_masked

        return evaluate_masked(self, model, tokenizer, split, settings)


@hookimpl
def register_families(register: Any) -> None:
    register(MaskedFamily())
