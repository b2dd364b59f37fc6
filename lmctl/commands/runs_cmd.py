"""``lmctl runs`` and ``lmctl plot``: look at training runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from lmctl.errors import friendly_errors

RUNS_HELP = "List training runs under a directory: model, family, steps, tokens, best eval, wall time."
PLOT_HELP = "Plot train/eval loss and perplexity of one or more runs in the terminal, or to a PNG with --png."


@friendly_errors
def runs_command(
    directory: Path = typer.Argument(Path("runs"), metavar="DIR", help="Where to look for runs (searched recursively)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per run instead of a table."),
) -> None:
    from lmctl.runs import find_runs, summarize

    rows = [summarize(run) for run in find_runs(directory)]
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row))
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from lmctl.ui import format_duration, format_number

    table = Table(
        title=Text(f"runs under {directory}"), caption="eval: the best evaluation of each run", box=box.SIMPLE_HEAD,
        collapse_padding=True, pad_edge=False,
    )
    # The status column only when it says something (a run still going, interrupted, failed).
    show_status = any(row["status"] != "finished" for row in rows)
    names = ("run", "model", "family", "status") if show_status else ("run", "model", "family")
    lines = []
    for row in rows:
        run = Path(row["run"])
        cells = [str(run.relative_to(directory) if run.is_relative_to(directory) else run), str(row["model"]), str(row["family"])]
        if show_status:
            cells.append(str(row["status"]))
        cells += [
            format_number(row["steps"]), format_number(row["tokens"]), format_number(row["best_eval_loss"]),
            format_number(row["best_eval_perplexity"]), format_duration(row["wall_seconds"]),
        ]  # fmt: skip
        lines.append(cells)
    # On a narrow terminal names fold onto several lines (down to 8 characters); figures are never cut.
    for index, column in enumerate((*names, "steps", "tokens", "eval loss", "eval ppl", "wall")):
        widest = max([len(column.split()[-1])] + [len(cells[index]) for cells in lines])
        if index < len(names):
            table.add_column(column, overflow="fold", min_width=min(widest, 8))
        else:
            table.add_column(column, justify="right", min_width=widest)
    for cells in lines:
        table.add_row(*(Text(cell) for cell in cells))
    Console().print(table if rows else Text(f"no runs under {directory}"))


@friendly_errors
def plot_command(
    runs: list[Path] = typer.Argument(..., metavar="RUN_DIR", help="Run directories (lmctl train --out)."),
    png: Optional[Path] = typer.Option(None, "--png", help="Write the curves to this PNG file (needs matplotlib)."),
    metric: str = typer.Option("loss", help="loss or perplexity (terminal chart)."),
) -> None:
    from lmctl.errors import UsageError
    from lmctl.runs import curves_for, terminal_chart, write_png

    if metric not in ("loss", "perplexity"):
        raise UsageError(f"--metric must be loss or perplexity, got {metric!r}")
    if png is not None:
        written = write_png(list(runs), png)
        typer.echo(f"wrote {written}", err=True)
        return
    from rich.console import Console

    Console().print(terminal_chart(curves_for(list(runs), metric), title=metric))
