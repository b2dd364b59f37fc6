"""``lmctl train`` (being written: see issue tracker)."""

import typer

HELP = "train"


def train_command(ctx: typer.Context) -> None:
    raise typer.Exit(1)
