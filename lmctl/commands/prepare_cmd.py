"""``lmctl prepare`` (being written: see issue tracker)."""

import typer

HELP = "prepare"


def prepare_command(ctx: typer.Context) -> None:
    raise typer.Exit(1)
