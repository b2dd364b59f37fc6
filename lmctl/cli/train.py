"""``lmctl train``: options -> :class:`lmctl.workflows.train.config.TrainConfig` -> :func:`lmctl.workflows.train.trainer.train`.

Every option defaults to None here so that a value from ``--config FILE`` is only overridden by a
flag the user actually gave; the real defaults live in TrainConfig (shown in each help text).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from lmctl.errors import friendly_errors
from lmctl.workflows.train.config import FIELDS, field_help

HELP = """Train a model (any family) on raw text files or a prepared directory.

Fine-tune: lmctl train --model gpt2 --train file.txt --out runs/ft
From scratch: lmctl train --model gpt2 --from-scratch --model-config n_layer=4 --train file.txt
Resume: add --resume auto.  Several processes: --num-processes 2 (or accelerate launch -m lmctl train ...).
"""


def help_with_default(name: str) -> str:
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
    model: Optional[str] = typer.Option(None, "--model", "-m", help=help_with_default("model"), rich_help_panel='Model'),
    train: Optional[list[str]] = typer.Option(None, "--train", "-t", help=field_help("train"), rich_help_panel='Data'),
    validation: Optional[list[str]] = typer.Option(None, "--validation", help=field_help("validation"), rich_help_panel='Data'),
    validation_split: Optional[float] = typer.Option(None, help=field_help("validation_split"), rich_help_panel='Data'),
    out: Optional[str] = typer.Option(None, "--out", "-o", help=help_with_default("out"), rich_help_panel='Output'),
    config_file: Optional[Path] = typer.Option(None, "--config", help="Read settings from a .toml/.yaml/.json file; flags override it.", rich_help_panel='Output'),
    family: Optional[str] = typer.Option(None, help=field_help("family"), rich_help_panel='Model'),
    from_scratch: Optional[bool] = typer.Option(None, "--from-scratch", help=field_help("from_scratch"), rich_help_panel='Model'),
    model_config: Optional[list[str]] = typer.Option(None, "--model-config", help=field_help("model_config"), rich_help_panel='Model'),
    preset: Optional[str] = typer.Option(None, help=field_help("preset"), rich_help_panel='Model'),
    tokenizer: Optional[str] = typer.Option(None, help=field_help("tokenizer"), rich_help_panel='Data'),
    vocab_size: Optional[int] = typer.Option(None, help=help_with_default("vocab_size"), rich_help_panel='Data'),
    document_split: Optional[str] = typer.Option(None, help=field_help("document_split"), rich_help_panel='Data'),
    line_by_line: Optional[bool] = typer.Option(None, "--line-by-line", help=field_help("line_by_line"), rich_help_panel='Data'),
    text_column: Optional[str] = typer.Option(None, help=help_with_default("text_column"), rich_help_panel='Data'),
    max_steps: Optional[int] = typer.Option(None, help=field_help("max_steps"), rich_help_panel='Optimization'),
    epochs: Optional[float] = typer.Option(None, help=field_help("epochs"), rich_help_panel='Optimization'),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help=help_with_default("batch_size"), rich_help_panel='Optimization'),
    grad_accum: Optional[int] = typer.Option(None, help=help_with_default("grad_accum"), rich_help_panel='Optimization'),
    block_size: Optional[int] = typer.Option(None, help=field_help("block_size"), rich_help_panel='Data'),
    lr: Optional[float] = typer.Option(None, help=field_help("lr"), rich_help_panel='Optimization'),
    min_lr: Optional[float] = typer.Option(None, help=field_help("min_lr"), rich_help_panel='Optimization'),
    schedule: Optional[str] = typer.Option(None, help=help_with_default("schedule"), rich_help_panel='Optimization'),
    warmup_steps: Optional[int] = typer.Option(None, help=field_help("warmup_steps"), rich_help_panel='Optimization'),
    weight_decay: Optional[float] = typer.Option(None, help=help_with_default("weight_decay"), rich_help_panel='Optimization'),
    beta1: Optional[float] = typer.Option(None, help=help_with_default("beta1"), rich_help_panel='Optimization'),
    beta2: Optional[float] = typer.Option(None, help=help_with_default("beta2"), rich_help_panel='Optimization'),
    grad_clip: Optional[float] = typer.Option(None, help=help_with_default("grad_clip"), rich_help_panel='Optimization'),
    dropout: Optional[float] = typer.Option(None, help=field_help("dropout"), rich_help_panel='Model'),
    label_smoothing: Optional[float] = typer.Option(None, help=field_help("label_smoothing"), rich_help_panel='Family objectives'),
    seed: Optional[int] = typer.Option(None, help=help_with_default("seed"), rich_help_panel='Optimization'),
    precision: Optional[str] = typer.Option(None, help=help_with_default("precision"), rich_help_panel='Devices'),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help=field_help("compile") + " [default: no-compile]", rich_help_panel='Devices'),
    num_processes: Optional[int] = typer.Option(None, help=help_with_default("num_processes"), rich_help_panel='Devices'),
    eval_every: Optional[int] = typer.Option(None, help=field_help("eval_every"), rich_help_panel='Evaluation and checkpoints'),
    eval_batches: Optional[int] = typer.Option(None, help=help_with_default("eval_batches"), rich_help_panel='Evaluation and checkpoints'),
    save_every: Optional[int] = typer.Option(None, help=field_help("save_every"), rich_help_panel='Evaluation and checkpoints'),
    keep_last: Optional[int] = typer.Option(None, help=help_with_default("keep_last"), rich_help_panel='Evaluation and checkpoints'),
    early_stopping_patience: Optional[int] = typer.Option(None, help=help_with_default("early_stopping_patience"), rich_help_panel='Evaluation and checkpoints'),
    resume: Optional[str] = typer.Option(None, help=field_help("resume"), rich_help_panel='Evaluation and checkpoints'),
    overwrite: Optional[bool] = typer.Option(None, "--overwrite", help=field_help("overwrite"), rich_help_panel='Output'),
    log_every: Optional[int] = typer.Option(None, help=help_with_default("log_every"), rich_help_panel='Output'),
    report_to: Optional[list[str]] = typer.Option(None, help=field_help("report_to"), rich_help_panel='Output'),
    on_nan: Optional[str] = typer.Option(None, help=help_with_default("on_nan"), rich_help_panel='Evaluation and checkpoints'),
    family_option: Optional[list[str]] = typer.Option(None, "--family-option", metavar="KEY=VALUE", help=field_help("family_options") + " `lmctl plugins list` shows each family's options.", rich_help_panel='Family objectives'),
    mlm_probability: Optional[float] = typer.Option(None, help=field_help("mlm_probability"), rich_help_panel='Family objectives'),
    plm_probability: Optional[float] = typer.Option(None, help=field_help("plm_probability"), rich_help_panel='Family objectives'),
    max_span_length: Optional[int] = typer.Option(None, help=field_help("max_span_length"), rich_help_panel='Family objectives'),
    generator_size: Optional[float] = typer.Option(None, help=field_help("generator_size"), rich_help_panel='Family objectives'),
    generator_config: Optional[list[str]] = typer.Option(None, help=field_help("generator_config"), rich_help_panel='Family objectives'),
    discriminator_weight: Optional[float] = typer.Option(None, help=field_help("discriminator_weight"), rich_help_panel='Family objectives'),
    offline: Optional[bool] = typer.Option(None, "--offline", help=field_help("offline"), rich_help_panel='Model'),
    trust_remote_code: Optional[bool] = typer.Option(None, "--trust-remote-code", help=field_help("trust_remote_code"), rich_help_panel='Model'),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No dashboard or log lines (metrics.jsonl is still written).", rich_help_panel='Output'),
) -> None:
    from lmctl.workflows.train.config import load_config_file, merge

    cli_settings = {name: value for name, value in locals().items() if name in FIELDS}
    if family_option:
        from lmctl.families.base import option_items

        cli_settings["family_options"] = option_items(family_option)
    file_settings = load_config_file(config_file) if config_file else {}
    config = merge(file_settings, cli_settings)
    if not config.train:
        raise typer.BadParameter("no training data: pass --train FILE (or set train in --config)", param_hint="--train")
    if int(os.environ.get("RANK", "0")) == 0:
        from lmctl.cli.early_checks import check_train

        check_train(config)  # usage errors that need no model, before torch is imported

    from lmctl.cli.display import PrepareProgress, make_train_display
    from lmctl.cli.waiting import Waiting

    with Waiting("loading torch and transformers", stream=sys.stderr) as waiting:
        from lmctl.workflows.train.trainer import train as run_training

        result = run_training(
            config, quiet=quiet, display=make_train_display, prepare_progress=PrepareProgress("auto"), status=waiting
        )
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
