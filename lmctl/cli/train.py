"""``lmctl train``: options -> :class:`lmctl.workflows.train.config.TrainConfig` -> :func:`lmctl.workflows.train.trainer.train`.

Every option defaults to None here so that a value from ``--config FILE`` is only overridden by a
flag the user actually gave; the real defaults live in TrainConfig (shown in each help text).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from lmctl.cli.endings import exit_if_signalled
from lmctl.core.run_lock import HELD_ENV
from lmctl.errors import friendly_errors
from lmctl.workflows.train.config import FIELDS, field_help

HELP = """Train a model (any family) on raw text files or a prepared directory.

Fine-tune: lmctl train --model gpt2 --train file.txt --out runs/ft
From scratch: lmctl train --model gpt2 --from-scratch --model-config n_layer=4 --train file.txt
Resume: add --resume auto.  Several processes: --num-processes 2 [--strategy fsdp] (or accelerate launch -m lmctl train ...).
Several machines: --num-machines 2 --machine-rank R --main-process-ip HOST on each (docs/scale.md).
"""


METAVARS = {
    "model": "NAME|DIR", "train": "FILE|DIR", "validation": "FILE", "out": "DIR", "family": "FAMILY",
    "model_config": "KEY=VALUE", "preset": "tiny|small", "tokenizer": "NAME|DIR|TRAINER", "document_split": "lines|blank-lines|file",
    "text_column": "COLUMN", "schedule": "cosine|linear|constant|inverse-sqrt", "precision": "auto|fp32|bf16|fp16",
    "resume": "auto|DIR", "report_to": "TRACKER", "on_nan": "stop|skip", "generator_config": "KEY=VALUE",
    "family_options": "KEY=VALUE", "strategy": "ddp|fsdp|deepspeed", "main_process_ip": "ADDRESS", "quantize": "4bit",
    "lora_targets": "all-linear|NAMES", "callbacks": "NAME",
}  # fmt: skip


def metavar(name: str) -> str:
    """What the option takes, in words (Typer would show Python types: <str>, <list[str]>); flags take nothing."""
    if name in METAVARS:
        return METAVARS[name]
    kind = str(FIELDS[name].type)
    if kind.startswith("bool"):
        return ""
    if kind.startswith("int"):
        return "N"
    if kind.startswith("float"):
        return "NUMBER"
    return "VALUE"


def shown_default(name: str) -> str:
    """The TrainConfig default as `` [default: X]`` (the options themselves default to None so that
    a --config file is only overridden by flags given); empty where the help text says it."""
    default = FIELDS[name].default
    if name == "compile":
        return " [default: no-compile]"
    if isinstance(default, bool) or default is None or not isinstance(default, (int, float, str)):
        return ""
    return f" [default: {default:g}]" if isinstance(default, float) else f" [default: {default}]"


def train_option(name: str, *flags: str, panel: str, help: str | None = None) -> Any:
    """A `lmctl train` option for TrainConfig field ``name``: its help, metavar and default."""
    text = help if help is not None else field_help(name)
    if "[default:" not in text:
        text += shown_default(name)
    return typer.Option(
        None,
        *flags,
        # Help is rich markup: a literal "[default: 0.15]" must be escaped or it vanishes.
        help=text.replace("[", "\\["),
        metavar=metavar(name),
        show_default=False,
        rich_help_panel=panel,
    )


@friendly_errors
def train_command(
    ctx: typer.Context,
    model: Optional[str] = train_option("model", "--model", "-m", panel="Model"),
    train: Optional[list[str]] = train_option("train", "--train", "-t", panel="Data"),
    validation: Optional[list[str]] = train_option("validation", "--validation", panel="Data"),
    validation_split: Optional[float] = train_option("validation_split", panel="Data"),
    out: Optional[str] = train_option("out", "--out", "-o", panel="Output"),
    config_file: Optional[Path] = typer.Option(None, "--config", metavar="FILE", help="Read settings from a .toml/.yaml/.json file; flags override it.", rich_help_panel='Output'),
    family: Optional[str] = train_option("family", panel="Model"),
    from_scratch: Optional[bool] = train_option("from_scratch", "--from-scratch", panel="Model"),
    model_config: Optional[list[str]] = train_option("model_config", "--model-config", panel="Model"),
    preset: Optional[str] = train_option("preset", panel="Model"),
    tokenizer: Optional[str] = train_option("tokenizer", panel="Data"),
    vocab_size: Optional[int] = train_option("vocab_size", panel="Data"),
    document_split: Optional[str] = train_option("document_split", panel="Data"),
    line_by_line: Optional[bool] = train_option("line_by_line", "--line-by-line", panel="Data"),
    text_column: Optional[str] = train_option("text_column", panel="Data"),
    max_steps: Optional[int] = train_option("max_steps", panel="Optimization"),
    epochs: Optional[float] = train_option("epochs", panel="Optimization"),
    batch_size: Optional[int] = train_option("batch_size", "--batch-size", "-b", panel="Optimization"),
    grad_accum: Optional[int] = train_option("grad_accum", panel="Optimization"),
    block_size: Optional[int] = train_option("block_size", panel="Data"),
    lr: Optional[float] = train_option("lr", panel="Optimization"),
    min_lr: Optional[float] = train_option("min_lr", panel="Optimization"),
    schedule: Optional[str] = train_option("schedule", panel="Optimization"),
    warmup_steps: Optional[int] = train_option("warmup_steps", panel="Optimization"),
    weight_decay: Optional[float] = train_option("weight_decay", panel="Optimization"),
    beta1: Optional[float] = train_option("beta1", panel="Optimization"),
    beta2: Optional[float] = train_option("beta2", panel="Optimization"),
    grad_clip: Optional[float] = train_option("grad_clip", panel="Optimization"),
    dropout: Optional[float] = train_option("dropout", panel="Model"),
    label_smoothing: Optional[float] = train_option("label_smoothing", panel="Family objectives"),
    seed: Optional[int] = train_option("seed", panel="Optimization"),
    precision: Optional[str] = train_option("precision", panel="Devices"),
    activation_checkpointing: Optional[bool] = train_option("activation_checkpointing", "--activation-checkpointing", "--gradient-checkpointing", panel="Memory"),
    lora: Optional[bool] = train_option("lora", "--lora", panel="Memory"),
    lora_r: Optional[int] = train_option("lora_r", panel="Memory"),
    lora_alpha: Optional[float] = train_option("lora_alpha", panel="Memory"),
    lora_dropout: Optional[float] = train_option("lora_dropout", panel="Memory"),
    lora_targets: Optional[str] = train_option("lora_targets", panel="Memory"),
    quantize: Optional[str] = train_option("quantize", panel="Memory"),
    dry_run: Optional[bool] = train_option("dry_run", "--dry-run", panel="Output"),
    compile: Optional[bool] = train_option("compile", "--compile/--no-compile", panel="Devices"),
    num_processes: Optional[int] = train_option("num_processes", panel="Devices"),
    strategy: Optional[str] = train_option("strategy", panel="Devices"),
    num_machines: Optional[int] = train_option("num_machines", panel="Devices"),
    machine_rank: Optional[int] = train_option("machine_rank", panel="Devices"),
    main_process_ip: Optional[str] = train_option("main_process_ip", panel="Devices"),
    main_process_port: Optional[int] = train_option("main_process_port", panel="Devices"),
    eval_every: Optional[int] = train_option("eval_every", panel="Evaluation and checkpoints"),
    eval_batches: Optional[int] = train_option("eval_batches", panel="Evaluation and checkpoints"),
    save_every: Optional[int] = train_option("save_every", panel="Evaluation and checkpoints"),
    keep_last: Optional[int] = train_option("keep_last", panel="Evaluation and checkpoints"),
    early_stopping_patience: Optional[int] = train_option("early_stopping_patience", panel="Evaluation and checkpoints"),
    resume: Optional[str] = train_option("resume", panel="Evaluation and checkpoints"),
    overwrite: Optional[bool] = train_option("overwrite", "--overwrite", panel="Output"),
    log_every: Optional[int] = train_option("log_every", panel="Output"),
    report_to: Optional[list[str]] = train_option("report_to", panel="Output"),
    on_nan: Optional[str] = train_option("on_nan", panel="Evaluation and checkpoints"),
    callbacks: Optional[list[str]] = train_option("callbacks", "--callback", panel="Output"),
    family_option: Optional[list[str]] = train_option("family_options", "--family-option", panel="Family objectives", help=field_help("family_options") + " `lmctl plugins list` shows each family's options."),
    mlm_probability: Optional[float] = train_option("mlm_probability", panel="Family objectives"),
    plm_probability: Optional[float] = train_option("plm_probability", panel="Family objectives"),
    max_span_length: Optional[int] = train_option("max_span_length", panel="Family objectives"),
    generator_size: Optional[float] = train_option("generator_size", panel="Family objectives"),
    generator_config: Optional[list[str]] = train_option("generator_config", panel="Family objectives"),
    discriminator_weight: Optional[float] = train_option("discriminator_weight", panel="Family objectives"),
    offline: Optional[bool] = train_option("offline", "--offline", panel="Model"),
    trust_remote_code: Optional[bool] = train_option("trust_remote_code", "--trust-remote-code", panel="Model"),
    quiet: bool = typer.Option(False, "--quiet", "-q", metavar="", show_default=False, help="No dashboard or log lines (metrics.jsonl is still written).", rich_help_panel='Output'),
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

    if config.dry_run:
        from lmctl.cli.display import print_plan
        from lmctl.workflows.train.plan import dry_run_plan

        planned = dry_run_plan(config)
        print_plan(planned["plan"], warning=planned["warning"])
        return

    from lmctl.cli.display import PrepareProgress, make_train_display
    from lmctl.cli.waiting import Waiting

    with Waiting("loading torch and transformers", stream=sys.stderr) as waiting:
        from lmctl.workflows.train.trainer import train as run_training

        result = run_training(
            config, quiet=quiet, display=make_train_display, prepare_progress=PrepareProgress("auto"), status=waiting
        )
    if int(os.environ.get("RANK", "0")) != 0 or os.environ.get(HELD_ENV):
        # Under a multi-process launch only the main process reports; under lmctl's own launch
        # (--num-processes, --num-machines) the lmctl process that launched the workers does.
        return
    if config.machine_rank != 0:  # machine 0 writes the model, checkpoints and metrics
        typer.echo(f"machine {config.machine_rank} finished; machine 0 saved the run in its --out", err=True)
        return
    exit_if_signalled(result, config.out)
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
