"""``lmctl quickstart``: train, evaluate and sample a small model on built-in text."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

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
    from lmctl.cli.display import make_train_display
    from lmctl.workflows.quickstart import quickstart

    print_summary(quickstart(out, max_steps=max_steps, quiet=quiet, display=make_train_display))


def print_summary(result: Any, stream: Any = None) -> None:
    from lmctl.workflows.quickstart import next_steps

    stream = stream or sys.stdout
    final = result.train.final_eval or {}
    stream.write(f"\nTrained {result.out} in {result.train.wall_seconds:.0f} s")
    if final:
        stream.write(f": validation loss {final['loss']:.3f}, perplexity {final['perplexity']:.1f}")
    stream.write(f"\n\nSample (prompt {result.prompt!r}):\n")
    stream.write(f"{result.prompt}{result.sample}\n\n")
    stream.write(next_steps(result.out) + "\n")
    stream.flush()
