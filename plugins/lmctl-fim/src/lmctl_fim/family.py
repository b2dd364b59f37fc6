"""The ``fim`` family: causal language models trained to fill in the middle.

Bavarian et al., "Efficient Training of Language Models to Fill in the Middle" (2022): with
probability ``rate`` a document is cut at two random points into (prefix, middle, suffix) and
rearranged as ``<|fim_prefix|> prefix <|fim_suffix|> suffix <|fim_middle|> middle`` (the PSM
order); the model is then trained left to right on the result as usual.  The paper shows that
this teaches infilling at no cost to ordinary left-to-right perplexity, which is why code models
(SantaCoder, StarCoder, Code Llama) are trained this way.

lmctl packs documents into blocks, each document preceded by the separator (EOS), so the
transformation is applied per document inside each block ("context-level FIM" in the paper) and
the block is cut back to its length; the EOS that follows a middle teaches the model where the
middle ends.

The model is a plain ``AutoModelForCausalLM`` (gpt2, llama, ...): loading, evaluation (left-to-right
perplexity) and ``lmctl generate`` are the causal family's.  ``Family.save`` records
``lmctl_family: fim`` in config.json, so ``--model DIR`` finds this family again although plain
GPT-2 directories belong to ``causal``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lmctl.errors import UsageError
from lmctl.families.base import option
from lmctl.families.causal import CausalFamily, next_token_batch

FIM_PREFIX = "<|fim_prefix|>"
FIM_MIDDLE = "<|fim_middle|>"
FIM_SUFFIX = "<|fim_suffix|>"
DEFAULT_RATE = 0.5  # the paper's recommended FIM rate


def fim_document(
    content: Sequence[int], rng: random.Random, *, prefix_id: int, suffix_id: int, middle_id: int
) -> list[int]:
    """One document rearranged as PSM: ``<PRE> prefix <SUF> suffix <MID> middle``.

    The two cut points are drawn uniformly (as in the paper), so prefix, middle and suffix may
    each be empty; every token of ``content`` appears exactly once in the result.
    """
    a, b = sorted((rng.randint(0, len(content)), rng.randint(0, len(content))))
    prefix, middle, suffix = list(content[:a]), list(content[a:b]), list(content[b:])
    return [prefix_id, *prefix, suffix_id, *suffix, middle_id, *middle]


def fim_row(
    ids: Sequence[int],
    rng: random.Random,
    *,
    separators: set[int],
    rate: float,
    prefix_id: int,
    suffix_id: int,
    middle_id: int,
) -> list[int]:
    """Apply FIM to each document of a packed row (documents start after a separator token).

    The result is longer than ``ids`` by 3 tokens per transformed document; callers cut it.
    """
    out: list[int] = []
    start = 0
    n = len(ids)
    while start < n:
        # A segment is [separator] + content, up to the next separator.
        content_start = start + 1 if ids[start] in separators else start
        end = content_start
        while end < n and ids[end] not in separators:
            end += 1
        out.extend(ids[start:content_start])
        content = ids[content_start:end]
        if len(content) >= 2 and rng.random() < rate:
            out.extend(fim_document(content, rng, prefix_id=prefix_id, suffix_id=suffix_id, middle_id=middle_id))
        else:
            out.extend(content)
        start = end
    return out


def fim_prompt(prefix: str, suffix: str, *, document_start: str = "") -> str:
    """The prompt that asks a FIM model for the text between ``prefix`` and ``suffix``."""
    return f"{document_start}{FIM_PREFIX}{prefix}{FIM_SUFFIX}{suffix}{FIM_MIDDLE}"


class FimFamily(CausalFamily):
    """Causal LM + the fill-in-the-middle transformation in the collator."""

    name = "fim"
    aliases = ("fill-in-the-middle",)
    description = "Fill-in-the-middle causal LM (Bavarian et al. 2022): GPT-2/Llama trained to infill as well as continue."
    # A FIM model is a standard causal model: claim nothing by model_type, so `causal` keeps
    # plain GPT-2 directories; ours carry lmctl_family=fim in config.json instead.
    model_types = ()
    architectures = ()
    architecture_suffixes = ()
    tokenizer_kind = "bytelevel-bpe"
    metric_names = ()

    @dataclass
    class Options(CausalFamily.Options):
        fim_rate: float = option(DEFAULT_RATE, "share of documents rearranged prefix-suffix-middle (the paper: 0.5)")

    def __init__(self, rate: float = DEFAULT_RATE) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"FIM rate must be within [0, 1], got {rate}")
        # The default of --family-option fim_rate for this instance (tests build families with
        # other rates); the run's options decide.
        self.rate = rate

    def default_options(self) -> Any:
        return self.Options(fim_rate=self.rate)

    def check_options(self, options: Any) -> None:
        if not 0.0 <= options.fim_rate <= 1.0:
            raise UsageError(f"fim_rate must be within [0, 1], got {options.fim_rate}")

    def special_tokens(self) -> dict[str, str]:
        return {
            **super().special_tokens(),
            "fim_prefix_token": FIM_PREFIX,
            "fim_middle_token": FIM_MIDDLE,
            "fim_suffix_token": FIM_SUFFIX,
        }

    def sentinel_ids(self, tokenizer: Any) -> tuple[int, int, int]:
        """(prefix, suffix, middle) token ids; a clear error when the tokenizer lacks them."""
        vocab = tokenizer.get_vocab()
        missing = [t for t in (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE) if t not in vocab]
        if missing:
            raise UsageError(
                f"the tokenizer has no {', '.join(missing)} token(s), which the 'fim' family needs: "
                "let lmctl train one (e.g. --tokenizer bytelevel-bpe with --family fim)"
            )
        return vocab[FIM_PREFIX], vocab[FIM_SUFFIX], vocab[FIM_MIDDLE]

    def make_collator(self, tokenizer: Any, options: Any) -> Any:
        prefix_id, suffix_id, middle_id = self.sentinel_ids(tokenizer)
        separators = set(self.document_separator(tokenizer))
        rate = options.fim_rate

        def collate(input_ids: Any, attention_mask: Any = None, generator: Any = None) -> dict:
            import torch

            # One draw from the run's generator seeds this batch: checkpoints and resume stay exact.
            seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
            rng = random.Random(seed)
            rows = input_ids.tolist()
            width = input_ids.shape[1]
            lengths = [width] * len(rows) if attention_mask is None else attention_mask.sum(dim=1).tolist()
            out_ids = input_ids.clone()
            out_mask = None if attention_mask is None else torch.zeros_like(attention_mask)
            for r, (row, length) in enumerate(zip(rows, lengths, strict=True)):
                new = fim_row(
                    row[: int(length)],
                    rng,
                    separators=separators,
                    rate=rate,
                    prefix_id=prefix_id,
                    suffix_id=suffix_id,
                    middle_id=middle_id,
                )[:width]  # packed blocks keep their length; padded rows may grow into padding
                out_ids[r, : len(new)] = torch.tensor(new, dtype=input_ids.dtype)
                if out_mask is not None:
                    out_mask[r, : len(new)] = 1
            # Packed rows carry the causal family's lookahead token: inputs are all but the last.
            return next_token_batch(out_ids, out_mask)

        return collate
