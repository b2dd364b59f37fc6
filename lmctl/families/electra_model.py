"""ELECTRA pre-training module: a small generator MLM and a discriminator trained jointly.

Kept apart from :mod:`lmctl.families.electra` because it needs torch at import time.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class ElectraPretrainer(nn.Module):
    """Generator (``ElectraForMaskedLM``) + discriminator (``ElectraForPreTraining``).

    The generator fills the masked positions; its samples replace them in the discriminator's
    input; the discriminator predicts, for every token, whether it was replaced.  The two share
    their embeddings, as in the ELECTRA paper.  Loss = generator MLM loss + weight * discriminator
    loss.
    """

    def __init__(self, generator: Any, discriminator: Any, *, tie_embeddings: bool = True) -> None:
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator
        if tie_embeddings:
            self.generator.electra.embeddings = self.discriminator.electra.embeddings
            self.generator.generator_lm_head.weight = self.discriminator.electra.embeddings.word_embeddings.weight

    supports_gradient_checkpointing = True
    """Both halves are ELECTRA models, which support activation checkpointing."""

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs: dict | None = None) -> None:
        for model in (self.generator, self.discriminator):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=activation_checkpointing_kwargs)

    @property
    def config(self) -> Any:
        return self.discriminator.config

    def get_input_embeddings(self) -> Any:
        return self.discriminator.get_input_embeddings()

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        original_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        discriminator_weight: float = 50.0,
        label_smoothing: float = 0.0,
    ) -> dict[str, torch.Tensor]:
        gen_logits = self.generator(input_ids=input_ids, attention_mask=attention_mask).logits
        predicted = labels != -100
        gen_total = F.cross_entropy(
            gen_logits.reshape(-1, gen_logits.shape[-1]).float(),
            labels.reshape(-1),
            ignore_index=-100,
            reduction="sum",
            label_smoothing=label_smoothing,
        )
        gen_tokens = predicted.sum()
        gen_loss = gen_total / gen_tokens.clamp(min=1)

        with torch.no_grad():
            # Gumbel-max sampling from the generator: no boolean indexing, so no host sync.
            noise = torch.rand_like(gen_logits, dtype=torch.float32).clamp_(1e-9, 1.0)
            sampled = (gen_logits.float() - torch.log(-torch.log(noise))).argmax(dim=-1)
            disc_input = torch.where(predicted, sampled, original_ids)
            replaced = (disc_input != original_ids).float()

        disc_logits = self.discriminator(input_ids=disc_input, attention_mask=attention_mask).logits
        active = torch.ones_like(replaced) if attention_mask is None else attention_mask.float()
        per_token = F.binary_cross_entropy_with_logits(disc_logits.float(), replaced, reduction="none")
        n_active = active.sum().clamp(min=1)
        disc_loss = (per_token * active).sum() / n_active
        correct = (((disc_logits > 0).float() == replaced).float() * active).sum() / n_active
        loss = gen_loss + discriminator_weight * disc_loss
        return {
            "loss": loss,
            "generator_loss": gen_loss.detach(),
            "discriminator_loss": disc_loss.detach(),
            "discriminator_accuracy": correct.detach(),
            "tokens": n_active.detach(),
            "disc_logits": disc_logits.detach(),
            "replaced": replaced,
        }
