"""``lmctl eval``: options -> :class:`lmctl.workflows.evaluate.EvalConfig` -> :func:`lmctl.workflows.evaluate.evaluate`."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import typer

from lmctl.core.files import write_text_atomic
from lmctl.errors import friendly_errors

HELP = """Evaluate one or more models on the same text: loss, perplexity, bits per byte.

Causal models score every token exactly once (--stride below --block-size gives sliding windows with more context); masked models a seeded masked-token perplexity (or --pseudo-perplexity); XLNet its PLM loss and a left-to-right score; ELECTRA generator perplexity and discriminator accuracy, F1 and AUC.

lmctl eval --model runs/gpt --data valid.txt
lmctl eval --model runs/a --model runs/b --data prepared/ --json
"""

# Rows of the table: (result key, label).  Family-specific metrics follow in their own order.
MAIN_ROWS = (
    ("family", "family"),
    ("tokens", "tokens scored"),
    ("loss", "loss (nats/token)"),
    ("perplexity", "perplexity"),
    ("bits_per_byte", "bits per byte"),
    ("word_perplexity", "word perplexity"),
)
TAIL_ROWS = (
    ("tokens_per_second", "tokens/s"),
    ("seconds", "seconds"),
)
HIDDEN = {"model", "data", "split", "document_split", "settings", "complete", "text_nll", "bytes", "words", "parameters", "data_hash", "text_hash"}


def _finite(value: Any) -> Any:
    """JSON has no NaN/Infinity: such values become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value



class _ProgressBar:
    """One model's rich progress bar with tokens/s, on stderr (terminals only)."""

    def __init__(self, progress: Any, name: str) -> None:
        from rich.markup import escape

        self.progress = progress
        self.task = progress.add_task(escape(name), total=None, rate="")

    def update(self, advance: int, total: int | None) -> None:
        if total is not None:
            self.progress.update(self.task, total=total)
        self.progress.advance(self.task, advance)
        speed = self.progress.tasks[self.task].speed
        if speed:
            self.progress.update(self.task, rate=f"{speed:,.0f} tok/s")

    def close(self) -> None:
        task = self.progress.tasks[self.task]
        if task.total is not None:
            self.progress.update(self.task, completed=task.total)


def _make_progress() -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class TokensColumn(ProgressColumn):
        """1,234,567/2,000,000 tokens (rich's MofNCompleteColumn has no thousands separators)."""

        def render(self, task: Any) -> Text:
            done = f"{int(task.completed):,}"
            return Text(f"{done}/{int(task.total):,} tokens" if task.total is not None else f"{done} tokens")

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TokensColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )


def _format(value: Any, key: str = "") -> str:
    from lmctl.cli.display import format_number

    if key == "tokens_per_second" and value is not None:
        return f"{value:,.0f}"
    if key == "seconds" and value is not None:
        return f"{value:.2f}"
    if isinstance(value, float) and math.isfinite(value) and abs(value) >= 1000:
        return f"{value:,.0f}"  # large values read like the token counts beside them (2,470,419, not 2.47e+06)
    if isinstance(value, float):
        return format_number(value, 5)
    return format_number(value)


def print_table(results: list[dict[str, Any]]) -> None:
    """Models side by side: one column per model, one row per metric."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    first = results[0]
    data = first["data"] if isinstance(first["data"], str) else ", ".join(first["data"])
    settings = first["settings"]
    terminal = sys.stdout.isatty()
    console = Console(width=None if terminal else max(100, 28 + 24 * len(results)))
    if first.get("document_split"):  # raw text files: evaluated whole, cut into documents as the model was trained
        splits = sorted({r["document_split"] for r in results})
        where = f"raw text, documents: {', '.join(splits)}"
    else:
        where = f"{first['split']} split"
    console.print(Text(f"data: {data} ({where}); block size {settings['block_size']}, stride {settings['stride']}"))
    table = Table()
    table.add_column("")
    for result in results:
        table.add_column(Text(result["model"]), justify="right", overflow="fold")
    keys = [k for k, _ in MAIN_ROWS]
    extra = []
    for result in results:
        for key in result:
            if key not in keys and key not in HIDDEN and key not in dict(TAIL_ROWS) and key not in extra:
                extra.append(key)
    rows = list(MAIN_ROWS) + [(k, k.replace("_", " ")) for k in extra] + list(TAIL_ROWS)
    for key, label in rows:
        if all(r.get(key) is None for r in results):
            continue
        table.add_row(label, *(Text(_format(r.get(key), key)) for r in results))
    table.add_row("precision", *(Text(r["settings"]["precision"]) for r in results))
    table.add_row("data hash", *(Text(r["data_hash"]) for r in results))
    console.print(table)
    # Families that mask (a mlm_probability option): only the masked share of the tokens is scored.
    for r in results:
        options = r.get("settings", {}).get("family_options", {}) or {}
        if "mlm_probability" in options and not options.get("pseudo_perplexity"):
            console.print(
                Text(
                    f"{r['model']}: only the masked tokens are scored ({options['mlm_probability']:.0%} of the text, "
                    "as in training), hence the token count; --pseudo-perplexity scores every token"
                )
            )
    if any(not r.get("complete", True) for r in results):
        console.print(Text("--max-batches stopped early: an estimate on the first batches only"))


@friendly_errors
def eval_command(
    model: list[str] = typer.Option(..., "--model", "-m", help="Model directory or Hugging Face id; repeat to compare models side by side."),
    data: list[str] = typer.Option(..., "--data", "-d", help="Raw text file(s) (tokenized with each model's tokenizer) or one prepared directory."),
    split: str | None = typer.Option(None, "--split", help="Split of a prepared directory (default: validation if present, else train)."),
    block_size: int | None = typer.Option(None, "--block-size", help="Tokens per window (default: the data's block size capped at the model's positions; raw text: the model's positions)."),
    stride: int | None = typer.Option(None, "--stride", help="Causal/left-to-right: new tokens scored per window; less than --block-size gives sliding windows with more context (default: the block size)."),
    batch_size: int = typer.Option(8, "--batch-size", "-b", help="Windows (or blocks) per forward pass."),
    precision: str = typer.Option("auto", "--precision", help="auto, fp32, bf16 or fp16 (auto: bf16 only where supported and faster)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the masks, permutations and ELECTRA samples: the same seed gives the same number."),
    family_option: list[str] = typer.Option([], "--family-option", metavar="KEY=VALUE", help="A setting of the model's family (repeatable); `lmctl plugins list` shows each family's options."),
    pseudo_perplexity: bool = typer.Option(False, "--pseudo-perplexity", help="Masked models: mask each token in turn (exact, slow: one forward pass per token). Same as --family-option pseudo_perplexity=true."),
    max_batches: int | None = typer.Option(None, "--max-batches", help="Stop after N batches: a quick estimate (bits per byte is then not reported)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per model per line instead of a table."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Also write the results to FILE as JSON Lines (one object per model)."),
    family: str | None = typer.Option(None, "--family", help="Family to use instead of the one read from config.json."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    line_by_line: bool = typer.Option(False, "--line-by-line", help="Raw text files: one example per line (each scored on its own)."),
    document_split: str | None = typer.Option(None, "--document-split", metavar="lines|blank-lines|file", help="Raw text files: what a document is (default: what the model was trained with, recorded in its lmctl_model.json; else blank-lines)."),
    checkpoint: str | None = typer.Option(None, "--checkpoint", metavar="latest|best|step-N", help="--model is a run directory: evaluate this checkpoint of it (default: its final model, else its latest checkpoint)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow models whose code lives in their repository (it runs that code: only for code you trust)."),
    offline: bool = typer.Option(False, "--offline", help="Never contact the Hugging Face Hub (HF_HUB_OFFLINE=1)."),
) -> None:
    from lmctl.cli.display import PrepareProgress, is_terminal
    from lmctl.cli.early_checks import check_eval, resolve_models

    model = resolve_models(model, checkpoint, offline=offline)
    check_eval(data, document_split=document_split, line_by_line=line_by_line, precision=precision, batch_size=batch_size)
    from lmctl.cli.waiting import Waiting

    with Waiting("loading torch and transformers"):
        from lmctl.families.base import option_items
        from lmctl.workflows.evaluate import EvalConfig, evaluate

    family_options: dict[str, Any] = option_items(family_option)
    if pseudo_perplexity:
        family_options["pseudo_perplexity"] = True
    config = EvalConfig(
        models=list(model),
        data=list(data),
        split=split,
        block_size=block_size,
        stride=stride,
        batch_size=batch_size,
        precision=precision,
        seed=seed,
        family_options=family_options,
        max_batches=max_batches,
        family=family,
        trust_remote_code=trust_remote_code,
        offline=offline,
        device=device,
        line_by_line=line_by_line,
        document_split=document_split,
    )
    if is_terminal(sys.stderr):
        # A spinner while torch and the model load (after 2 s), then the scoring bar: the bar is
        # started only when scoring starts, so the two never share the terminal.
        bars: list[Any] = []

        def bar_for(name: str) -> _ProgressBar:
            waiting(None)
            if not bars:
                bars.append(_make_progress())
                bars[0].start()
            return _ProgressBar(bars[0], name)

        try:
            with Waiting(f"loading {', '.join(model)}") as waiting:
                results = evaluate(config, progress=bar_for, prepare_progress=PrepareProgress("plain"))
        finally:
            if bars:
                bars[0].stop()
    else:
        results = evaluate(config)
        for r in results:
            rate = r.get("tokens_per_second")
            sys.stderr.write(
                f"evaluated {r['model']}: {r['tokens']:,} tokens scored in {r['seconds']:.1f} s"
                + (f" ({rate:,.0f} tokens/s)" if rate else "")
                + "\n"
            )
    lines = "".join(json.dumps(_finite(r), ensure_ascii=False) + "\n" for r in results)
    if out is not None:
        write_text_atomic(out, lines)
    if as_json:
        sys.stdout.write(lines)
        sys.stdout.flush()
    else:
        print_table(results)

