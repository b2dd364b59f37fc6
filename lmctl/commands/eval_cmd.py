"""``lmctl eval`` (being written: see issue tracker)."""

import typer

HELP = "eval"


def eval_command(ctx: typer.Context) -> None:
    raise typer.Exit(1)
