"""The ``electra`` family: replaced-token detection (ELECTRA), generator + discriminator.

Saved layout: the discriminator is the main model in ``DIR/`` (``AutoModelForPreTraining``) and
the generator sits in ``DIR/generator/`` (``AutoModelForMaskedLM``); both load with
``from_pretrained``.  ``generate`` (fill-mask) uses the generator, which has the MLM head.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmctl.errors import LmctlError, UsageError
from lmctl.families.base import Family, LossOutput, max_positions, option
from lmctl.families.masked import BERT_SPECIAL_TOKENS, make_mlm_collator
from lmctl.hookspecs import hookimpl
from lmctl.kit.scoring import IGNORE, EvalSettings, covered_all, mean_or_nan, roc_auc, seeded_blocks, sum_nll

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np


def generator_config(discriminator_config: Any, fraction: float, overrides: dict[str, Any] | None = None) -> Any:
    """The generator's config: the discriminator's, with hidden size, heads and FFN scaled by ``fraction``.

    The embedding size stays the same so the two can share embeddings (ELECTRA paper, sec. 3.2).
    """
    config = copy.deepcopy(discriminator_config)
    heads = max(1, round(discriminator_config.num_attention_heads * fraction))
    head_dim = max(1, round(discriminator_config.hidden_size * fraction / heads))
    config.num_attention_heads = heads
    config.hidden_size = heads * head_dim
    config.intermediate_size = max(1, round(discriminator_config.intermediate_size * fraction))
    config.architectures = ["ElectraForMaskedLM"]
    for key, value in (overrides or {}).items():
        setattr(config, key, value)
    return config


class ElectraFamily(Family):
    name = "electra"
    aliases = ("rtd",)
    description = "ELECTRA replaced-token detection: a small generator MLM and a discriminator, trained jointly."
    model_types = ("electra",)
    architectures = ("ElectraForPreTraining",)
    scratch_architectures = ("electra",)
    auto_class = "AutoModelForPreTraining"
    # The generator + discriminator pair is two models trained together, not one peft model.
    lora = False
    generate_kind = "fill-mask"
    pipeline_tag = "fill-mask"
    tokenizer_kind = "wordpiece"
    loss_is_nll = False  # generator NLL + 50 x discriminator BCE: exp() of it means nothing
    metric_names = ("generator_loss", "discriminator_loss", "discriminator_accuracy")

    @dataclass
    class Options(Family.Options):
        mlm_probability: float = option(0.15, "share of tokens the generator predicts")
        generator_size: float = option(0.25, "generator hidden size as a fraction of the discriminator's")
        generator_config: dict[str, Any] = option(
            help="generator config overrides, KEY=VALUE[,KEY=VALUE] (e.g. num_hidden_layers=2)", default_factory=dict
        )
        discriminator_weight: float = option(50.0, "weight of the discriminator loss (ELECTRA: 50)")
        label_smoothing: float = option(0.0, "label smoothing of the generator's cross-entropy (0 = none)")

    def check_options(self, options: Any) -> None:
        if not 0.0 < options.mlm_probability < 1.0:
            raise UsageError(f"mlm_probability must be between 0 and 1, got {options.mlm_probability}")
        if not 0.0 < options.generator_size <= 1.0:
            raise UsageError(f"generator_size must be in (0, 1], got {options.generator_size}")

    def special_tokens(self) -> dict[str, str]:
        return dict(BERT_SPECIAL_TOKENS)

    def _wrap(self, generator: Any, discriminator: Any) -> Any:
        from lmctl.families.electra_model import ElectraPretrainer

        return ElectraPretrainer(generator, discriminator)

    def build_from_scratch(
        self,
        architecture: str,
        *,
        tokenizer: Any,
        block_size: int,
        overrides: dict[str, Any] | None = None,
        dropout: float | None = None,
        options: Any = None,
    ) -> Any:
        from transformers import ElectraForMaskedLM, ElectraForPreTraining

        options = options or self.Options()
        disc_config = self.build_config(
            architecture, tokenizer=tokenizer, block_size=block_size, overrides=overrides, dropout=dropout
        )
        disc_config.architectures = ["ElectraForPreTraining"]
        gen_config = generator_config(disc_config, options.generator_size, options.generator_config)
        discriminator = ElectraForPreTraining(disc_config)
        generator = ElectraForMaskedLM(gen_config)
        return self._wrap(generator, discriminator)

    def load_pretrained(self, name_or_path: str, *, trust_remote_code: bool = False, **kwargs: Any) -> Any:
        """Discriminator from ``DIR``, generator from ``DIR/generator`` (built fresh if absent)."""
        from transformers import AutoModelForMaskedLM, ElectraForMaskedLM

        from lmctl.core.hub import hub_call

        discriminator = super().load_pretrained(name_or_path, trust_remote_code=trust_remote_code, **kwargs)
        gen_dir = Path(name_or_path) / "generator"
        if gen_dir.is_dir():
            generator = hub_call(str(gen_dir), lambda: AutoModelForMaskedLM.from_pretrained(gen_dir))
        else:
            generator = ElectraForMaskedLM(generator_config(discriminator.config, kwargs.get("generator_size", 0.25)))
        return self._wrap(generator, discriminator)

    def load_weights(self, model: Any, path: Any) -> None:
        from lmctl.core.checkpoint import load_model_weights

        load_model_weights(model.discriminator, Path(path))
        load_model_weights(model.generator, Path(path) / "generator")

    def load_for_inference(self, path: str, *, trust_remote_code: bool = False) -> Any:
        """For fill-mask: the generator (it has the MLM head); eval loads the pair itself."""
        from transformers import AutoModelForMaskedLM

        from lmctl.core.hub import hub_call
        from lmctl.errors import LmctlError

        gen_dir = Path(path) / "generator"
        if not gen_dir.is_dir():
            raise LmctlError(f"{path} has no generator/ directory, which ELECTRA fill-mask needs")
        return hub_call(str(gen_dir), lambda: AutoModelForMaskedLM.from_pretrained(gen_dir))

    def check_evaluation_model(self, name_or_path: str) -> None:
        from lmctl.core.hub import is_local_model

        if is_local_model(name_or_path) and not (Path(name_or_path).expanduser() / "generator").is_dir():
            raise LmctlError(
                f"{name_or_path} has no generator/ directory: ELECTRA evaluation needs the generator that makes the replacements"
            )

    def max_positions(self, model: Any) -> int | None:
        return max_positions(model.config)

    def make_collator(self, tokenizer: Any, options: Any) -> Any:
        mlm = make_mlm_collator(tokenizer, options, self.name)

        def collate(input_ids: Any, attention_mask: Any = None, generator: Any = None) -> dict:
            batch = mlm(input_ids, attention_mask, generator)
            batch["original_ids"] = input_ids
            return batch

        return collate

    def compute_loss(self, model: Any, batch: dict, options: Any) -> LossOutput:
        out = model(
            **batch,
            discriminator_weight=options.discriminator_weight,
            label_smoothing=options.label_smoothing,
        )
        metrics = {k: out[k] for k in self.metric_names}
        return LossOutput(loss=out["loss"], tokens=out["tokens"], metrics=metrics)

    def evaluate(self, model: Any, tokenizer: Any, split: Any, settings: Any) -> dict:
        """Generator perplexity and discriminator accuracy/precision/recall/F1/AUC (see :mod:`lmctl.workflows.evaluate`)."""
        return evaluate_electra(self, model, tokenizer, split, settings)

    def save(self, model: Any, tokenizer: Any, out_dir: Any, *, safe_serialization: bool = True) -> None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        # Recorded on the discriminator (the directory's main model) so a family built on this one
        # is found again; generator/ stays a plain masked LM.
        model.discriminator.config.lmctl_family = self.name
        model.discriminator.save_pretrained(out, safe_serialization=safe_serialization)
        model.generator.save_pretrained(out / "generator", safe_serialization=safe_serialization)
        if tokenizer is not None:
            tokenizer.save_pretrained(out)
            tokenizer.save_pretrained(out / "generator")


def evaluate_electra(family: Any, model: Any, tokenizer: Any, split: Any, settings: EvalSettings) -> dict:
    """Generator MLM loss on the masked tokens; discriminator replaced-token detection on every
    non-padding token (as in training and the ELECTRA paper), replacements sampled from the
    generator with each block's seeded generator."""
    import numpy as np
    import torch

    generator_model = getattr(model, "generator", None)
    discriminator = getattr(model, "discriminator", None)
    if generator_model is None or discriminator is None:
        raise LmctlError("ELECTRA evaluation needs the generator and discriminator pair (ElectraPretrainer)")
    device = settings.device
    gen_total = torch.zeros((), dtype=torch.float64, device=device)
    disc_total = torch.zeros((), dtype=torch.float64, device=device)
    counts = torch.zeros(4, dtype=torch.float64, device=device)  # tp, fp, fn, tn
    gen_tokens = disc_tokens = covered = 0
    scores: list[np.ndarray] = []
    truths: list[np.ndarray] = []
    for batch, generators, n in seeded_blocks(family, tokenizer, split, settings):
        labels, original = batch["labels"], batch["original_ids"]
        attention = batch.get("attention_mask")
        with settings.forward_context():
            gen_logits = generator_model(input_ids=batch["input_ids"], attention_mask=attention).logits
        gen_total += sum_nll(gen_logits, labels).double()
        predicted = labels != IGNORE
        gen_tokens += int(predicted.sum())
        # Gumbel-max sampling with each block's own generator: reproducible replacements.
        noise = torch.stack([torch.rand(gen_logits.shape[1:], generator=g) for g in generators]).to(device)
        noise = noise.clamp_(1e-9, 1.0)
        sampled = (gen_logits.float() - torch.log(-torch.log(noise))).argmax(dim=-1)
        disc_input = torch.where(predicted, sampled, original)
        replaced = disc_input != original
        with settings.forward_context():
            disc_logits = discriminator(input_ids=disc_input, attention_mask=attention).logits.float()
        active = torch.ones_like(replaced) if attention is None else attention.bool()
        logit, truth = disc_logits[active], replaced[active]
        disc_total += torch.nn.functional.binary_cross_entropy_with_logits(
            logit, truth.float(), reduction="sum"
        ).double()
        guess = logit > 0
        counts += torch.stack(
            [(guess & truth).sum(), (guess & ~truth).sum(), (~guess & truth).sum(), (~guess & ~truth).sum()]
        ).double()
        disc_tokens += int(active.sum())
        scores.append(logit.cpu().numpy())
        truths.append(truth.cpu().numpy())
        covered += n
        settings.report(n, split.num_tokens if split.offsets is None else None)
    tp, fp, fn, tn = (float(c) for c in counts.cpu())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    auc = roc_auc(np.concatenate(scores) if scores else np.zeros(0), np.concatenate(truths) if truths else np.zeros(0, bool))
    return {
        "loss": mean_or_nan(float(gen_total), gen_tokens),
        "tokens": gen_tokens,
        "generator_loss": mean_or_nan(float(gen_total), gen_tokens),
        "discriminator_loss": mean_or_nan(float(disc_total), disc_tokens),
        "discriminator_accuracy": mean_or_nan(tp + tn, disc_tokens),
        "discriminator_precision": precision,
        "discriminator_recall": recall,
        "discriminator_f1": f1,
        "discriminator_auc": auc,
        "discriminator_tokens": disc_tokens,
        "replaced_fraction": mean_or_nan(tp + fn, disc_tokens),
        "complete": covered_all(split, settings, covered),
    }


@hookimpl
def register_families(register: Any) -> None:
    register(ElectraFamily())
