"""Reading finished and running training runs: ``lmctl runs`` and ``lmctl plot``.

A run directory is what ``lmctl train --out DIR`` writes: ``run.json`` (config, resolved settings,
versions, result) and ``metrics.jsonl`` (one JSON object per log or eval event).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lmctl.core.files import write_text_atomic
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


def open_metrics_log(run_dir: str | Path, start_step: int) -> Any:
    """``metrics.jsonl`` opened for appending by a run that starts at ``start_step``.

    A fresh run (``start_step`` 0) starts an empty file: the previous run's events in the same
    directory would otherwise be drawn as one zigzag curve.  A resumed run keeps the events up to
    its checkpoint and drops those the interrupted run logged after it (they are logged again),
    so every step appears once.  The rewrite is atomic.
    """
    path = Path(run_dir) / "metrics.jsonl"
    if not start_step:
        return path.open("w", encoding="utf-8")
    if path.is_file():
        kept = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line of a killed run
            if isinstance(event, dict) and event.get("step", 0) <= start_step:
                kept.append(line + "\n")
        write_text_atomic(path, "".join(kept))
    return path.open("a", encoding="utf-8")


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
    if isinstance(result.get("steps"), int) and record.get("status") != "running":
        steps = result["steps"]  # where the run ended (an interruption saves a step not yet logged)
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


def run_labels(run_dirs: list[Path]) -> list[str]:
    """Short distinct names for runs: the directory name, or more of the path when names clash
    (``exp1/out`` and ``exp2/out``)."""
    paths = [Path(r) for r in run_dirs]
    for depth in range(1, max((len(p.parts) for p in paths), default=1) + 1):
        labels = [str(Path(*p.parts[-depth:])) for p in paths]
        if len(set(labels)) == len(labels):
            return labels
    return [str(p) for p in paths]


def split_points(events: list[dict[str, Any]], split: str, metric: str) -> list[tuple[int, float]]:
    """The periodic points of one curve (the final full evaluation is logged at the last step
    too, flagged ``final``; it is drawn on its own)."""
    key = f"{split}/{metric}"
    return [
        (e["step"], e[key])
        for e in events
        if isinstance(e.get(key), (int, float)) and math.isfinite(e[key]) and not e.get("final")
    ]


def curves_for(run_dirs: list[Path], metric: str) -> dict[str, list[tuple[int, float]]]:
    """``metric`` is loss or perplexity: train and eval curves of each run, labelled by run."""
    curves: dict[str, list[tuple[int, float]]] = {}
    several = len(run_dirs) > 1
    for run, label in zip(run_dirs, run_labels(run_dirs), strict=True):
        events = read_metrics(run)
        for split in ("train", "eval"):
            points = split_points(events, split, metric)
            if points:
                curves[f"{label}: {split}" if several else split] = points
    return curves


def objective_caveat(run_dirs: list[Path]) -> str | None:
    """A warning when runs of different families (objectives) share a plot: a masked model's loss
    is over its masked tokens only, an ELECTRA loss mixes two objectives; the axes are shared
    but the numbers do not compare."""
    families = []
    for run in run_dirs:
        try:
            family = json.loads((Path(run) / "run.json").read_text()).get("resolved", {}).get("family")
        except (OSError, ValueError):
            family = None
        if family and family not in families:
            families.append(family)
    if len(families) < 2:
        return None
    return (
        f"these runs train different objectives ({', '.join(families)}): their losses share an axis but do not "
        "compare (a masked model predicts only its masked tokens, from both sides)"
    )


def write_png(run_dirs: list[Path], path: str | Path) -> Path:
    """Loss and perplexity curves of one or more runs as a PNG (matplotlib, imported only here).

    One colour per run; training curves solid, evaluations dashed with dots, the final full
    evaluation a star.  A single run gets one colour per split instead.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter, NullFormatter
    except ImportError:
        raise LmctlError("--png needs matplotlib: pip install 'lmctl[plot]'") from None
    runs = [(Path(run), label, read_metrics(run)) for run, label in zip(run_dirs, run_labels(run_dirs), strict=True)]
    several = len(runs) > 1
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    plain = FuncFormatter(lambda value, _: f"{value:g}")  # 300, not 3 x 10^2, on the log axis
    for ax, metric in zip(axes, ("loss", "perplexity"), strict=True):
        for index, (_, label, events) in enumerate(runs):
            for split in ("train", "eval"):
                points = split_points(events, split, metric)
                color = f"C{index}" if several else ("C0" if split == "train" else "C1")
                name = f"{label}: {split}" if several else split
                if points:
                    xs, ys = zip(*points, strict=True)
                    style = {"linestyle": "-"} if split == "train" else {"linestyle": "--", "marker": "o", "markersize": 3}
                    ax.plot(xs, ys, color=color, label=name, **style)
            final = [e for e in events if e.get("final") and isinstance(e.get(f"eval/{metric}"), (int, float))]
            if final and math.isfinite(final[-1][f"eval/{metric}"]):
                ax.plot(
                    [final[-1]["step"]], [final[-1][f"eval/{metric}"]], linestyle="none", marker="*", markersize=9,
                    color=f"C{index}" if several else "C1", label=f"{label}: final eval" if several else "final eval",
                )  # fmt: skip
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(metric)
        if metric == "perplexity":
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(plain)
            low, high = ax.get_ylim()
            if low > 0 and high / low < 20:  # less than about a decade: label the minor ticks too
                ax.yaxis.set_minor_formatter(plain)
            else:
                ax.yaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # an empty panel (ELECTRA has no train perplexity) gets no legend
            ax.legend(fontsize=8)
    fig.suptitle(", ".join(label for _, label, _ in runs))
    caveat = objective_caveat([run for run, _, _ in runs])
    fig.tight_layout()
    if caveat:
        fig.subplots_adjust(bottom=0.2)
        fig.text(0.5, 0.02, "note: " + caveat, ha="center", fontsize=7, wrap=True)
    out = Path(path)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(out)
    return out
