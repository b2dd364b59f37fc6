"""``lmctl quickstart``: train, evaluate and sample a small model on built-in text."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from lmctl.cli.endings import exit_if_signalled
from lmctl.errors import friendly_errors

HELP = (
    "Train a small GPT-2 from scratch on English text that ships with Python (no data, no network; "
    "about a minute on two quiet CPU cores, longer on a busy machine), evaluate it, sample from it, and show what to "
    "try next.  Run it again after Ctrl-C to continue; a finished quickstart in --out is replaced."
)


@friendly_errors
def quickstart_command(
    out: Path = typer.Option(Path("runs/quickstart"), "--out", "-o", help="Run directory."),
    max_steps: int = typer.Option(300, help="Optimizer steps."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No dashboard."),
) -> None:
    from lmctl.cli.display import make_train_display
    from lmctl.cli.waiting import Waiting
    from lmctl.workflows.quickstart import quickstart

    with Waiting("loading torch and transformers") as waiting:
        result = quickstart(out, max_steps=max_steps, quiet=quiet, display=make_train_display, status=waiting)
    report_interruption(result.train, out)
    print_summary(result)


def report_interruption(result: Any, out: Path) -> None:
    """An interrupted run ends as ``lmctl train`` ends it: one line, exit 130 (SIGINT) or 143 (SIGTERM);
    a run stopped by NaN/inf losses is a failure (exit 1).  Never a success line, never a sample."""
    exit_if_signalled(result, out, "continue with --resume auto (`lmctl quickstart` again continues it too)")
    if result.interrupted == "nan":
        from lmctl.errors import LmctlError

        raise LmctlError(f"training stopped at step {result.steps + 1} on a NaN/inf loss; nothing was sampled")


def print_summary(result: Any, stream: Any = None) -> None:
    from lmctl.workflows.quickstart import next_steps

    stream = stream or sys.stdout
    final = result.train.final_eval or {}
    if result.sample is None:
        return
    stream.write(f"\nTrained {result.out} in {result.train.wall_seconds:.0f} s")
    if final:
        stream.write(f": validation loss {final['loss']:.3f}, perplexity {final['perplexity']:.1f}")
    stream.write(f"\n\nSample (prompt {result.prompt!r}):\n")
    stream.write(f"{result.prompt}{result.sample}\n\n")
    stream.write(next_steps(result.out) + "\n")
    stream.flush()
