"""``lmctl train``: options -> :class:`lmctl.train_config.TrainConfig` -> :func:`lmctl.train.train`.

Every option defaults to None here so that a value from ``--config FILE`` is only overridden by a
flag the user actually gave; the real defaults live in TrainConfig (shown in each help text).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from lmctl.errors import friendly_errors
from lmctl.train_config import FIELDS, field_help

HELP = """Train a model (any family) on raw text files or a prepared directory.

Fine-tune: lmctl train --model gpt2 --train file.txt --out runs/ft
From scratch: lmctl train --model gpt2 --from-scratch --model-config n_layer=4 --train file.txt
Resume: add --resume auto.  Several processes: --num-processes 2 (or accelerate launch -m lmctl train ...).
"""


def h(name: str) -> str:
    """Help text with the TrainConfig default."""
    default = FIELDS[name].default
    if isinstance(default, bool) or default is None or callable(getattr(FIELDS[name], "default_factory", None)) and default is FIELDS[name].default:
        suffix = ""
    else:
        suffix = f" [default: {default:g}]" if isinstance(default, float) else f" [default: {default}]"
    return field_help(name) + suffix


@friendly_errors
def train_command(
    ctx: typer.Context,
    model: Optional[str] = typer.Option(None, "--model", "-m", help=h("model")),
    train: Optional[list[str]] = typer.Option(None, "--train", "-t", help=field_help("train")),
    validation: Optional[list[str]] = typer.Option(None, "--validation", help=field_help("validation")),
    validation_split: Optional[float] = typer.Option(None, help=field_help("validation_split")),
    out: Optional[str] = typer.Option(None, "--out", "-o", help=h("out")),
    config_file: Optional[Path] = typer.Option(None, "--config", help="Read settings from a .toml/.yaml/.json file; flags override it."),
    family: Optional[str] = typer.Option(None, help=field_help("family")),
    from_scratch: Optional[bool] = typer.Option(None, "--from-scratch", help=field_help("from_scratch")),
    model_config: Optional[list[str]] = typer.Option(None, "--model-config", help=field_help("model_config")),
    preset: Optional[str] = typer.Option(None, help=field_help("preset")),
    tokenizer: Optional[str] = typer.Option(None, help=field_help("tokenizer")),
    vocab_size: Optional[int] = typer.Option(None, help=h("vocab_size")),
    document_split: Optional[str] = typer.Option(None, help=field_help("document_split")),
    line_by_line: Optional[bool] = typer.Option(None, "--line-by-line", help=field_help("line_by_line")),
    text_column: Optional[str] = typer.Option(None, help=h("text_column")),
    max_steps: Optional[int] = typer.Option(None, help=field_help("max_steps")),
    epochs: Optional[float] = typer.Option(None, help=field_help("epochs")),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help=h("batch_size")),
    grad_accum: Optional[int] = typer.Option(None, help=h("grad_accum")),
    block_size: Optional[int] = typer.Option(None, help=field_help("block_size")),
    lr: Optional[float] = typer.Option(None, help=field_help("lr")),
    min_lr: Optional[float] = typer.Option(None, help=field_help("min_lr")),
    schedule: Optional[str] = typer.Option(None, help=h("schedule")),
    warmup_steps: Optional[int] = typer.Option(None, help=field_help("warmup_steps")),
    weight_decay: Optional[float] = typer.Option(None, help=h("weight_decay")),
    beta1: Optional[float] = typer.Option(None, help=h("beta1")),
    beta2: Optional[float] = typer.Option(None, help=h("beta2")),
    grad_clip: Optional[float] = typer.Option(None, help=h("grad_clip")),
    dropout: Optional[float] = typer.Option(None, help=field_help("dropout")),
    label_smoothing: Optional[float] = typer.Option(None, help=h("label_smoothing")),
    seed: Optional[int] = typer.Option(None, help=h("seed")),
    precision: Optional[str] = typer.Option(None, help=h("precision")),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help=field_help("compile") + " [default: no-compile]"),
    num_processes: Optional[int] = typer.Option(None, help=h("num_processes")),
    eval_every: Optional[int] = typer.Option(None, help=field_help("eval_every")),
    eval_batches: Optional[int] = typer.Option(None, help=h("eval_batches")),
    save_every: Optional[int] = typer.Option(None, help=field_help("save_every")),
    keep_last: Optional[int] = typer.Option(None, help=h("keep_last")),
    early_stopping_patience: Optional[int] = typer.Option(None, help=h("early_stopping_patience")),
    resume: Optional[str] = typer.Option(None, help=field_help("resume")),
    log_every: Optional[int] = typer.Option(None, help=h("log_every")),
    report_to: Optional[list[str]] = typer.Option(None, help=field_help("report_to")),
    on_nan: Optional[str] = typer.Option(None, help=h("on_nan")),
    mlm_probability: Optional[float] = typer.Option(None, help=h("mlm_probability")),
    plm_probability: Optional[float] = typer.Option(None, help=field_help("plm_probability") + " [default: 1/6]"),
    max_span_length: Optional[int] = typer.Option(None, help=h("max_span_length")),
    generator_size: Optional[float] = typer.Option(None, help=h("generator_size")),
    generator_config: Optional[list[str]] = typer.Option(None, help=field_help("generator_config")),
    discriminator_weight: Optional[float] = typer.Option(None, help=h("discriminator_weight")),
    offline: Optional[bool] = typer.Option(None, "--offline", help=field_help("offline")),
    trust_remote_code: Optional[bool] = typer.Option(None, "--trust-remote-code", help=field_help("trust_remote_code")),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No dashboard or log lines (metrics.jsonl is still written)."),
) -> None:
    from lmctl.train_config import load_config_file, merge

    cli_settings = {name: value for name, value in locals().items() if name in FIELDS}
    file_settings = load_config_file(config_file) if config_file else {}
    config = merge(file_settings, cli_settings)
    if not config.train:
        raise typer.BadParameter("no training data: pass --train FILE (or set train in --config)", param_hint="--train")

    from lmctl.train import train as run_training

    result = run_training(config, quiet=quiet)
    if int(os.environ.get("RANK", "0")) != 0:
        return  # under a multi-process launch only the main process reports
    if result.interrupted in ("SIGINT", "SIGTERM"):
        typer.echo(
            f"interrupted at step {result.steps}; checkpoint saved in {Path(config.out) / 'checkpoints'}; "
            "continue with --resume auto",
            err=True,
        )
        raise typer.Exit(130 if result.interrupted == "SIGINT" else 143)
    if result.interrupted == "nan":
        from lmctl.errors import LmctlError

        checkpoints = Path(config.out) / "checkpoints"
        if config.on_nan == "skip":
            raise LmctlError(
                f"10 steps in a row up to step {result.steps + 1} had a NaN/inf loss or gradient; the last good state "
                f"is saved in {checkpoints}: start a new --out with a lower --lr"
            )
        raise LmctlError(
            f"step {result.steps + 1} had a NaN/inf loss or gradient; the last good state is saved in {checkpoints}: "
            "resume with --resume auto --on-nan skip, or start a new --out with a lower --lr"
        )
    summary = f"saved to {result.out} after {result.steps} steps"
    if result.final_eval:
        summary += f"; eval loss {result.final_eval['loss']:.4f}, perplexity {result.final_eval['perplexity']:.2f}"
    typer.echo(summary, err=True)
