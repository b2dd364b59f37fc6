"""``lmctl generate`` (being written: see issue tracker)."""

import typer

HELP = "generate"


def generate_command(ctx: typer.Context) -> None:
    raise typer.Exit(1)
