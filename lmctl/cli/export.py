"""``lmctl export``: turn a checkpoint into a standalone model directory."""

from __future__ import annotations

from pathlib import Path

import typer

from lmctl.errors import friendly_errors

HELP = "Export a checkpoint (or ELECTRA's generator/discriminator) as a plain Hugging Face model directory."


@friendly_errors
def export_command(
    checkpoint: Path = typer.Argument(..., help="A checkpoint directory (OUT/checkpoints/step-N), a saved model, or a LoRA adapter."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the model directory."),
    part: str = typer.Option("model", help="model, or for ELECTRA: discriminator or generator."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
    merge: bool = typer.Option(False, "--merge", help="For a LoRA adapter (lmctl train --lora): merge it into its base model and write a plain model."),
) -> None:
    from lmctl.workflows.export import export_checkpoint

    written = export_checkpoint(checkpoint, out, part, force=force, merge=merge)
    typer.echo(f"exported {'the merged model' if merge else part} to {written}", err=True)
