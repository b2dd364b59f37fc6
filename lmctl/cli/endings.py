"""How an interrupted training run ends on the command line (``lmctl train`` and ``lmctl quickstart``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def exit_if_signalled(result: Any, out: str | Path, resume_hint: str = "continue with --resume auto") -> None:
    """A run stopped by Ctrl-C or SIGTERM: one line on stderr naming the saved checkpoint and how to
    continue, then exit 130 (SIGINT) or 143 (SIGTERM), as shells expect of an interrupted program."""
    if result.interrupted in ("SIGINT", "SIGTERM"):
        typer.echo(f"interrupted at step {result.steps}; checkpoint saved in {Path(out) / 'checkpoints'}; {resume_hint}", err=True)
        raise typer.Exit(130 if result.interrupted == "SIGINT" else 143)
