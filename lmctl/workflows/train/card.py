"""The model card (README.md) written beside a trained model: Hub metadata, results, settings."""

from __future__ import annotations

from typing import Any


def model_card(trainer: Any, result: Any) -> str:
    """A Hugging Face model card: metadata the Hub reads, then what was trained and how well."""
    family = trainer.family
    c = trainer.config
    final = result.final_eval or {}
    lora = getattr(trainer, "lora", None)
    lines = [
        "---",
        "library_name: peft" if lora is not None else "library_name: transformers",
        *([f"base_model: {c.model}"] if lora is not None else []),
        f"pipeline_tag: {family.pipeline_tag}",
        "tags:",
        "- lmctl",
        f"- {family.name}",
        "---",
        "",
        f"# {trainer.out.name}",
        "",
        f"A {family.name} language model ({trainer.model_type()}, {trainer.n_params:,} parameters) trained with "
        f"[lmctl](https://github.com/lmctl/lmctl) {'from scratch' if c.from_scratch else 'from ' + c.model}.",
        "",
        "## Results",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| steps | {result.steps} |",
        f"| final train loss | {fmt(result.final_train_loss)} |",
        f"| eval loss (nats/token) | {fmt(final.get('loss'))} |",
        f"| eval perplexity | {fmt(final.get('perplexity'))} |",
        "",
        "## Training settings",
        "",
        "| setting | value |",
        "| --- | --- |",
    ]
    for key, value in trainer.plan().items():
        lines.append(f"| {key} | {value} |")
    if lora is not None:
        auto = "AutoPeftModelForCausalLM" if family.auto_class == "AutoModelForCausalLM" else "AutoPeftModel"
        lines += [
            "",
            "## Use",
            "",
            f"A LoRA adapter (peft) on the base model `{c.model}`, which it needs:",
            "",
            "```python",
            f"from peft import {auto}",
            f'model = {auto}.from_pretrained("{trainer.out.name}")  # base + adapter',
            "```",
            "",
            f"or `lmctl generate --model {trainer.out.name} ...`; `lmctl export {trainer.out.name} --merge --out DIR` "
            "writes a plain model with the adapter merged into its weights.",
            "",
        ]
        return "\n".join(lines)
    lines += [
        "",
        "## Use",
        "",
        "```python",
        f"from transformers import {family.auto_class}, AutoTokenizer",
        f'model = {family.auto_class}.from_pretrained("{trainer.out.name}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{trainer.out.name}")',
        "```",
        "",
        f"or `lmctl generate --model {trainer.out.name} ...`.",
        "",
    ]
    return "\n".join(lines)


def fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("-" if value is None else str(value))
