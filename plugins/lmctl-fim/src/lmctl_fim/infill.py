"""``lmctl infill``: ask a model trained with the ``fim`` family for the text between two pieces."""

from __future__ import annotations

import sys

import typer

from lmctl.errors import friendly_errors


@friendly_errors
def infill_command(
    model: str = typer.Option(..., "--model", "-m", help="A model directory trained with --family fim."),
    prefix: str = typer.Option(..., "--prefix", help="The text before the gap."),
    suffix: str = typer.Option("", "--suffix", help="The text after the gap."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="Longest middle to generate, in tokens."),
    temperature: float = typer.Option(1.0, "--temperature", help="Sampling temperature (0: greedy)."),
    top_k: int = typer.Option(50, "--top-k", help="Sample from the k most likely tokens (0: all)."),
    greedy: bool = typer.Option(False, "--greedy", help="Always take the most likely token."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed: the same seed gives the same middle."),
    show_all: bool = typer.Option(False, "--show-all", help="Print prefix + middle + suffix instead of the middle alone."),
) -> None:
    """Generate the missing middle between --prefix and --suffix (the model stops at end of text)."""
    from lmctl.workflows.generate import GenerationSettings, generate_text, load_model
    from lmctl_fim.family import FimFamily, fim_prompt

    loaded = load_model(model)
    if isinstance(loaded.family, FimFamily):
        loaded.family.sentinel_ids(loaded.tokenizer)  # one clear line when the tokenizer lacks them
    else:
        sys.stderr.write(
            f"warning: {model} was not trained with the 'fim' family (its family is '{loaded.family.name}'); "
            "it probably cannot infill\n"
        )
    # Training data puts the separator (EOS) before every document: start the prompt the same way.
    start = loaded.tokenizer.eos_token or ""
    settings = GenerationSettings(
        max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, greedy=greedy, seed=seed
    )
    result = generate_text(loaded.model, loaded.tokenizer, [fim_prompt(prefix, suffix, document_start=start)], settings)[0]
    typer.echo(f"{prefix}{result.text}{suffix}" if show_all else result.text)
