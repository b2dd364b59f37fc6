"""Reading finished and running training runs: ``lmctl runs`` and ``lmctl plot``.

A run directory is what ``lmctl train --out DIR`` writes: ``run.json`` (config, resolved settings,
versions, result) and ``metrics.jsonl`` (one JSON object per log or eval event).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lmctl.errors import LmctlError, UsageError


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """All events of a run; a torn last line (a run killed mid-write) is skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise LmctlError(f"{run_dir} is not an lmctl run directory (no metrics.jsonl)")
    events = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def find_runs(root: str | Path) -> list[Path]:
    """Run directories (holding run.json) under ``root``, itself included; checkpoints skipped."""
    root = Path(root)
    if not root.exists():
        raise UsageError(f"directory not found: {root}")
    found = [p.parent for p in root.rglob("run.json") if "checkpoints" not in p.parts]
    return sorted(set(found))


def summarize(run_dir: Path) -> dict[str, Any]:
    record: dict[str, Any] = {}
    try:
        record = json.loads((run_dir / "run.json").read_text())
    except (OSError, json.JSONDecodeError):
        pass
    try:
        events = read_metrics(run_dir)
    except LmctlError:
        events = []
    config = record.get("config", {})
    resolved = record.get("resolved", {})
    result = record.get("result", {})
    evals = [e["eval/loss"] for e in events if "eval/loss" in e and math.isfinite(e["eval/loss"])]
    steps = max((e.get("step", 0) for e in events), default=0)
    best = min(evals) if evals else None
    block = resolved.get("block_size") or 0
    batch = (config.get("batch_size") or 0) * (config.get("grad_accum") or 1) * (resolved.get("world_size") or 1)
    return {
        "run": str(run_dir),
        "model": config.get("model"),
        "family": resolved.get("family"),
        "status": record.get("status"),
        "steps": steps,
        "tokens": steps * block * batch,
        "best_eval_loss": best,
        "best_eval_perplexity": math.exp(best) if best is not None and best < 700 else None,
        "wall_seconds": result.get("wall_seconds"),
    }


def series(events: list[dict[str, Any]], key: str) -> list[tuple[int, float]]:
    return [(e["step"], e[key]) for e in events if key in e and isinstance(e[key], (int, float)) and math.isfinite(e[key])]


def terminal_chart(curves: dict[str, list[tuple[int, float]]], *, width: int = 72, height: int = 18, title: str = "") -> Any:
    """A line chart drawn with characters, one colour per curve (returns a rich Text)."""
    from rich.text import Text

    colors = ["cyan", "magenta", "green", "yellow", "blue", "red", "bright_cyan", "bright_magenta"]
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
        color = colors[index % len(colors)]
        cells = [
            (round((x - x0) / (x1 - x0) * (width - 1)), (y - y0) / (y1 - y0) * (height - 1)) for x, y in curve
        ]
        # Fill the columns between samples by linear interpolation, so a curve reads as a line.
        for (ca, ya), (cb, yb) in zip(cells, cells[1:], strict=False):
            for col in range(ca + 1, cb):
                y = ya + (yb - ya) * (col - ca) / (cb - ca)
                grid[height - 1 - round(y)][col] = ("·", color)
        for col, y in cells:
            grid[height - 1 - round(y)][col] = ("•", color)
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
        text.append("  ● ", style=colors[index % len(colors)])
        text.append(name + "\n")
    return text


def curves_for(run_dirs: list[Path], metric: str) -> dict[str, list[tuple[int, float]]]:
    """``metric`` is loss or perplexity: train and eval curves of each run, labelled by run."""
    curves: dict[str, list[tuple[int, float]]] = {}
    several = len(run_dirs) > 1
    for run in run_dirs:
        events = read_metrics(run)
        for split in ("train", "eval"):
            key = f"{split}/{metric}"
            # The final full evaluation is logged at the last step too; plot the periodic ones.
            points = [(e["step"], e[key]) for e in events if key in e and math.isfinite(e[key]) and not e.get("final")]
            if points:
                curves[f"{run.name}: {split}" if several else split] = points
    return curves


def write_png(run_dirs: list[Path], path: str | Path) -> Path:
    """Loss and perplexity curves of one or more runs as a PNG (matplotlib, imported only here)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise LmctlError("--png needs matplotlib: pip install 'lmctl[plot]'") from None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    for ax, metric in zip(axes, ("loss", "perplexity"), strict=True):
        for label, points in curves_for(run_dirs, metric).items():
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, label=label, marker="o" if "eval" in label else None, markersize=3)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(metric)
        if metric == "perplexity":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # an empty panel (ELECTRA has no train perplexity) gets no legend
            ax.legend(fontsize=8)
    fig.suptitle(", ".join(r.name for r in run_dirs))
    fig.tight_layout()
    out = Path(path)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(out)
    return out
