"""``lmctl runs`` and ``lmctl plot``: look at training runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from lmctl.errors import friendly_errors

RUNS_HELP = "List training runs under a directory: model, family, steps, tokens, best eval, wall time."
PLOT_HELP = "Plot train/eval loss and perplexity of one or more runs in the terminal, or to a PNG with --png."


@friendly_errors
def runs_command(
    directory: Path = typer.Argument(Path("runs"), metavar="DIR", help="Where to look for runs (searched recursively)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per run instead of a table."),
) -> None:
    from lmctl.workflows.runs import find_runs, summarize

    rows = [summarize(run) for run in find_runs(directory)]
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row))
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from lmctl.cli.display import format_duration, format_number

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
    from lmctl.workflows.runs import curves_for, objective_caveat, write_png

    if metric not in ("loss", "perplexity"):
        raise UsageError(f"--metric must be loss or perplexity, got {metric!r}")
    caveat = objective_caveat(list(runs))
    if caveat:
        typer.echo(f"note: {caveat}", err=True)
    if png is not None:
        written = write_png(list(runs), png)
        typer.echo(f"wrote {written}", err=True)
        return
    from rich.console import Console

    Console().print(terminal_chart(curves_for(list(runs), metric), title=metric))


def terminal_chart(curves: dict[str, list[tuple[int, float]]], *, width: int = 72, height: int = 18, title: str = "") -> Any:
    """A line chart drawn with characters, one colour per curve (returns a rich Text)."""
    from rich.text import Text

    colors = ["cyan", "magenta", "green", "yellow", "blue", "red", "bright_cyan", "bright_magenta"]
    glyphs = "•×+o#*%@"  # a glyph per curve as well: without colour (a pipe, NO_COLOR) curves stay apart
    points = [p for curve in curves.values() for p in curve]
    text = Text()
    if title:
        text.append(title + "\n", style="bold")
    if not points:
        text.append("(no data points yet)\n")
        return text
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    if y1 == y0:
        y1 = y0 + 1.0
    if x1 == x0:
        x1 = x0 + 1
    grid: list[list[tuple[str, str] | None]] = [[None] * width for _ in range(height)]
    for index, curve in enumerate(curves.values()):
        color, glyph = colors[index % len(colors)], glyphs[index % len(glyphs)]
        cells = [
            (round((x - x0) / (x1 - x0) * (width - 1)), (y - y0) / (y1 - y0) * (height - 1)) for x, y in curve
        ]
        # Fill the columns between samples by linear interpolation, so a curve reads as a line.
        for (ca, ya), (cb, yb) in zip(cells, cells[1:], strict=False):
            for col in range(ca + 1, cb):
                y = ya + (yb - ya) * (col - ca) / (cb - ca)
                grid[height - 1 - round(y)][col] = ("·", color)
        for col, y in cells:
            grid[height - 1 - round(y)][col] = (glyph, color)
    label_width = max(len(f"{y1:.3g}"), len(f"{y0:.3g}"))
    for row in range(height):
        value = y1 - (y1 - y0) * row / (height - 1)
        label = f"{value:.3g}" if row in (0, height // 2, height - 1) else ""
        text.append(label.rjust(label_width) + " │")
        for cell in grid[row]:
            if cell is None:
                text.append(" ")
            else:
                text.append(cell[0], style=cell[1])
        text.append("\n")
    text.append(" " * label_width + " └" + "─" * width + "\n")
    text.append(" " * (label_width + 2) + f"step {x0}".ljust(width - len(f"step {x1}")) + f"step {x1}\n")
    for index, name in enumerate(curves):
        text.append(f"  {glyphs[index % len(glyphs)]} ", style=colors[index % len(colors)])
        text.append(name + "\n")
    return text
