"""Token masking shared by the masked-LM style objectives (BERT's 80/10/10)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch


def mask_tokens(
    input_ids: torch.Tensor,
    *,
    probability: float,
    mask_token_id: int,
    vocab_size: int,
    special_ids: list[int],
    generator: torch.Generator,
    attention_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: choose ``probability`` of the tokens; 80% -> [MASK], 10% random, 10% unchanged.

    Returns (masked inputs, labels with -100 where nothing is predicted).  All randomness comes
    from ``generator`` so a seed fixes the masks (evaluation is repeatable, resume is exact).
    """
    import torch

    labels = input_ids.clone()
    probs = torch.full(input_ids.shape, probability)
    special = torch.zeros_like(input_ids, dtype=torch.bool)
    for token_id in special_ids:
        special |= input_ids == token_id
    if attention_mask is not None:
        special |= attention_mask == 0
    probs.masked_fill_(special, 0.0)
    chosen = torch.bernoulli(probs, generator=generator).bool()
    labels[~chosen] = -100
    masked = input_ids.clone()
    replace = torch.bernoulli(torch.full(input_ids.shape, 0.8), generator=generator).bool() & chosen
    masked[replace] = mask_token_id
    randomize = torch.bernoulli(torch.full(input_ids.shape, 0.5), generator=generator).bool() & chosen & ~replace
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator, dtype=input_ids.dtype)
    masked[randomize] = random_ids[randomize]
    return masked, labels
