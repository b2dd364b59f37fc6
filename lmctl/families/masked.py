"""The ``masked`` family: masked language models (BERT, RoBERTa, DistilBERT, ALBERT, ...)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lmctl.errors import UsageError
from lmctl.families.base import Family, LossOutput, mask_tokens, option
from lmctl.hookspecs import hookimpl
from lmctl.kit.losses import masked_cross_entropy
from lmctl.kit.scoring import (
    IGNORE,
    EvalSettings,
    batched,
    blocks,
    covered_all,
    mean_or_nan,
    pad_id_of,
    seeded_blocks,
    special_ids,
    sum_nll,
)

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

# Special tokens of tokenizers trained for BERT-style families.  Packed documents are separated by
# [SEP] (the base class picks it: these tokenizers have no EOS).
BERT_SPECIAL_TOKENS = {
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "mask_token": "[MASK]",
}


def make_mlm_collator(tokenizer: Any, options: Any, family_name: str) -> Any:
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

    @dataclass
    class Options(Family.Options):
        mlm_probability: float = option(0.15, "share of tokens masked for prediction (BERT: 0.15)")
        label_smoothing: float = option(0.0, "label smoothing of the cross-entropy (0 = none)")
        pseudo_perplexity: bool = option(
            False, "evaluation: mask every token in turn (pseudo-perplexity) instead of a seeded 15%", evaluation=True
        )

    def check_options(self, options: Any) -> None:
        if not 0.0 < options.mlm_probability < 1.0:
            raise UsageError(f"mlm_probability must be between 0 and 1, got {options.mlm_probability}")

    def special_tokens(self) -> dict[str, str]:
        return dict(BERT_SPECIAL_TOKENS)

    def make_collator(self, tokenizer: Any, options: Any) -> Any:
        return make_mlm_collator(tokenizer, options, self.name)

    def compute_loss(self, model: Any, batch: dict, options: Any) -> LossOutput:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = model(**inputs).logits
        loss, tokens = masked_cross_entropy(logits, batch["labels"], options.label_smoothing)
        return LossOutput(loss=loss, tokens=tokens)

    def evaluate(self, model: Any, tokenizer: Any, split: Any, settings: Any) -> dict:
        """Seeded masked-token loss, or pseudo-perplexity (see :mod:`lmctl.workflows.evaluate`)."""
        return evaluate_masked(self, model, tokenizer, split, settings)


def evaluate_masked(family: Any, model: Any, tokenizer: Any, split: Any, settings: EvalSettings) -> dict:
    """Masked-token loss with the training masking, seeded per block (or pseudo-perplexity)."""
    import torch

    if getattr(settings.options, "pseudo_perplexity", False):
        return evaluate_pseudo_perplexity(family, model, tokenizer, split, settings)
    total = torch.zeros((), dtype=torch.float64, device=settings.device)
    tokens = covered = 0
    for batch, _, n in seeded_blocks(family, tokenizer, split, settings):
        labels = batch.pop("labels")
        with settings.forward_context():
            logits = model(**batch).logits
        total += sum_nll(logits, labels).double()
        tokens += int((labels != IGNORE).sum())
        covered += n
        settings.report(n, split.num_tokens if split.offsets is None else None)
    return {"loss": mean_or_nan(float(total), tokens), "tokens": tokens, "complete": covered_all(split, settings, covered)}


def evaluate_pseudo_perplexity(family: Any, model: Any, tokenizer: Any, split: Any, settings: EvalSettings) -> dict:
    """Pseudo-log-likelihood (Salazar et al., 2020): every non-special token of each block is
    masked in turn and scored from the rest of its block; one copy of the block per token, batched."""
    import numpy as np
    import torch

    mask_id = tokenizer.mask_token_id
    if mask_id is None:
        raise UsageError("the tokenizer has no mask token, which --pseudo-perplexity needs")
    specials = np.asarray(special_ids(tokenizer), dtype=np.int64)
    device = settings.device

    def queries() -> Iterator[tuple[np.ndarray, int, int]]:
        for block in blocks(split, settings.block_size):
            positions = np.flatnonzero(~np.isin(block, specials))
            for i, pos in enumerate(positions):
                # The last query of a block carries the block's length, for progress.
                yield block, int(pos), len(block) if i == len(positions) - 1 else 0
            if not len(positions):
                yield block, -1, len(block)

    total = torch.zeros((), dtype=torch.float64, device=device)
    tokens = covered = 0
    for rows in batched(queries(), settings.batch_size, settings.max_batches):
        rows_scored = [r for r in rows if r[1] >= 0]
        covered += sum(r[2] for r in rows)
        if rows_scored:
            width = max(len(r[0]) for r in rows_scored)
            ids = np.full((len(rows_scored), width), pad_id_of(tokenizer), dtype=np.int64)
            attention = np.zeros((len(rows_scored), width), dtype=np.int64)
            for row, (block, _, _) in enumerate(rows_scored):
                ids[row, : len(block)] = block
                attention[row, : len(block)] = 1
            positions = np.array([r[1] for r in rows_scored])
            targets = ids[np.arange(len(rows_scored)), positions].copy()
            ids[np.arange(len(rows_scored)), positions] = mask_id
            inputs = {"input_ids": torch.from_numpy(ids).to(device)}
            if not attention.all():
                inputs["attention_mask"] = torch.from_numpy(attention).to(device)
            with settings.forward_context():
                logits = model(**inputs).logits
            picked = logits[torch.arange(len(rows_scored), device=device), torch.from_numpy(positions).to(device)]
            total += sum_nll(picked, torch.from_numpy(targets).to(device)).double()
            tokens += len(rows_scored)
        settings.report(sum(r[2] for r in rows), split.num_tokens if split.offsets is None else None)
    complete = covered_all(split, settings, covered)
    return {"loss": mean_or_nan(float(total), tokens), "tokens": tokens, "text_nll": float(total), "complete": complete}


@hookimpl
def register_families(register: Any) -> None:
    register(MaskedFamily())
