"""The ``electra`` family: replaced-token detection (ELECTRA), generator + discriminator.

Saved layout: the discriminator is the main model in ``DIR/`` (``AutoModelForPreTraining``) and
the generator sits in ``DIR/generator/`` (``AutoModelForMaskedLM``); both load with
``from_pretrained``.  ``generate`` (fill-mask) uses the generator, which has the MLM head.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from lmctl.families.base import Family, FamilyOptions, LossOutput, max_positions
from lmctl.families.masked import BERT_SPECIAL_TOKENS, make_mlm_collator
from lmctl.hookspecs import hookimpl


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
    generate_kind = "fill-mask"
    pipeline_tag = "fill-mask"
    tokenizer_kind = "wordpiece"
    loss_is_nll = False  # generator NLL + 50 x discriminator BCE: exp() of it means nothing
    metric_names = ("generator_loss", "discriminator_loss", "discriminator_accuracy")

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
        options: FamilyOptions | None = None,
    ) -> Any:
        from transformers import ElectraForMaskedLM, ElectraForPreTraining

        options = options or FamilyOptions()
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

        from lmctl.models import hub_call

        discriminator = super().load_pretrained(name_or_path, trust_remote_code=trust_remote_code, **kwargs)
        gen_dir = Path(name_or_path) / "generator"
        if gen_dir.is_dir():
            generator = hub_call(str(gen_dir), lambda: AutoModelForMaskedLM.from_pretrained(gen_dir))
        else:
            generator = ElectraForMaskedLM(generator_config(discriminator.config, kwargs.get("generator_size", 0.25)))
        return self._wrap(generator, discriminator)

    def load_weights(self, model: Any, path: Any) -> None:
        from lmctl.checkpoint import load_model_weights

        load_model_weights(model.discriminator, Path(path))
        load_model_weights(model.generator, Path(path) / "generator")

    def load_for_inference(self, path: str, *, trust_remote_code: bool = False) -> Any:
        """For fill-mask: the generator (it has the MLM head); eval loads the pair itself."""
        from transformers import AutoModelForMaskedLM

        from lmctl.errors import LmctlError
        from lmctl.models import hub_call

        gen_dir = Path(path) / "generator"
        if not gen_dir.is_dir():
            raise LmctlError(f"{path} has no generator/ directory, which ELECTRA fill-mask needs")
        return hub_call(str(gen_dir), lambda: AutoModelForMaskedLM.from_pretrained(gen_dir))

    def max_positions(self, model: Any) -> int | None:
        return max_positions(model.config)

    def make_collator(self, tokenizer: Any, options: FamilyOptions) -> Any:
        mlm = make_mlm_collator(tokenizer, options, self.name)

        def collate(input_ids: Any, attention_mask: Any = None, generator: Any = None) -> dict:
            batch = mlm(input_ids, attention_mask, generator)
            batch["original_ids"] = input_ids
            return batch

        return collate

    def compute_loss(self, model: Any, batch: dict, options: FamilyOptions) -> LossOutput:
        out = model(
            **batch,
            discriminator_weight=options.discriminator_weight,
            label_smoothing=options.label_smoothing,
        )
        metrics = {k: out[k] for k in self.metric_names}
        return LossOutput(loss=out["loss"], tokens=out["tokens"], metrics=metrics)

    def evaluate(self, model: Any, tokenizer: Any, split: Any, settings: Any) -> dict:
        """Generator perplexity and discriminator accuracy/precision/recall/F1/AUC (see :mod:`lmctl.evaluate`)."""
        from lmctl.evaluate import evaluate_electra

        return evaluate_electra(self, model, tokenizer, split, settings)

    def save(self, model: Any, tokenizer: Any, out_dir: Any, *, safe_serialization: bool = True) -> None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        model.discriminator.save_pretrained(out, safe_serialization=safe_serialization)
        model.generator.save_pretrained(out / "generator", safe_serialization=safe_serialization)
        if tokenizer is not None:
            tokenizer.save_pretrained(out)
            tokenizer.save_pretrained(out / "generator")


@hookimpl
def register_families(register: Any) -> None:
    register(ElectraFamily())
