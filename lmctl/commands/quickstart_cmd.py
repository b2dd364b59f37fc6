"""``lmctl quickstart``: train, evaluate and sample a small model on built-in text."""

from __future__ import annotations

from pathlib import Path

import typer

from lmctl.errors import friendly_errors

HELP = (
    "Train a small GPT-2 from scratch on English text that ships with Python (no data, no network; "
    "about a minute on two CPU cores), evaluate it, sample from it, and show what to try next."
)


@friendly_errors
def quickstart_command(
    out: Path = typer.Option(Path("runs/quickstart"), "--out", "-o", help="Run directory."),
    max_steps: int = typer.Option(300, help="Optimizer steps."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No dashboard."),
) -> None:
    from lmctl.quickstart import print_summary, quickstart

    print_summary(quickstart(out, max_steps=max_steps, quiet=quiet))
