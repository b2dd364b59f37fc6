"""``lmctl export``: turn a checkpoint into a standalone model directory."""

from __future__ import annotations

from pathlib import Path

import typer

from lmctl.errors import friendly_errors

HELP = "Export a checkpoint (or ELECTRA's generator/discriminator) as a plain Hugging Face model directory."


@friendly_errors
def export_command(
    checkpoint: Path = typer.Argument(..., help="A checkpoint directory (OUT/checkpoints/step-N) or a saved model."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the model directory."),
    part: str = typer.Option("model", help="model, or for ELECTRA: discriminator or generator."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
) -> None:
    from lmctl.workflows.export import export_checkpoint

    written = export_checkpoint(checkpoint, out, part, force=force)
    typer.echo(f"exported {part} to {written}", err=True)
