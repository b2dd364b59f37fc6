"""``TrainConfig``: every ``lmctl train`` setting, its default and its help text, in one place.

The CLI builds its options from these fields (the help text lives in each field's metadata), a
``--config run.toml|.yaml`` file may set any of them, and flags given on the command line win.
The resolved config is written to ``OUT/run.json``.  Import-light: no torch here.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmctl.errors import UsageError


def config_field(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with its CLI help text attached."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **kwargs})
    return field(default=default, metadata={"help": help, **kwargs})


@dataclass
class TrainConfig:
    # --- what to train -------------------------------------------------------------------------
    model: str = config_field("gpt2", "Hub id, local model directory, or (with --from-scratch) an architecture: gpt2, openai-gpt, llama, bert, roberta, distilbert, albert, xlnet, electra, ...")
    train: list[str] = config_field([], "Training data: text/jsonl/csv/parquet files, globs, directories, or a prepared directory (lmctl prepare).")
    validation: list[str] = config_field([], "Validation data files (or use --validation-split).")
    validation_split: float | None = config_field(None, "Hold out the last FRACTION of the training text (contiguous) for validation.")
    out: str = config_field("runs/lmctl", "Output directory: the final model, checkpoints/, metrics.jsonl, run.json.")
    family: str | None = config_field(None, "Architecture family (causal, masked, permuted, electra or a plugin's); default: from the model.")
    from_scratch: bool = config_field(False, "Build the architecture from its config class (no weights download) instead of loading weights.")
    model_config: list[str] = config_field([], "Model config override KEY=VALUE (repeatable), e.g. n_layer=4.")
    preset: str | None = config_field(None, "Model size preset for --from-scratch: tiny (2 layers, 32 wide) or small (4 layers, 128 wide).")
    # --- data preparation (raw files are prepared implicitly and cached) -----------------------
    tokenizer: str | None = config_field(None, "Tokenizer: a directory or hub id, or a trainer (bytelevel-bpe, bpe, wordpiece, unigram, char, word). Default: the model's own; from scratch: the family's trainer.")
    vocab_size: int = config_field(8192, "Vocabulary size when a tokenizer is trained.")
    document_split: str | None = config_field(None, "What a document is in text files: lines, blank-lines (default) or file.")
    line_by_line: bool = config_field(False, "One example per line (padded), instead of packing documents into blocks.")
    text_column: str = config_field("text", "Column holding the text in jsonl/csv/parquet data.")
    # --- schedule ------------------------------------------------------------------------------
    max_steps: int | None = config_field(None, "Optimizer steps to train (overrides --epochs).")
    epochs: float | None = config_field(None, "Passes over the training data (default 1 when --max-steps is not given).")
    batch_size: int = config_field(16, "Sequences per micro-batch on each process.")
    grad_accum: int = config_field(1, "Micro-batches accumulated per optimizer step.")
    block_size: int | None = config_field(None, "Tokens per sequence (default: 128 from scratch, min(512, model limit) fine-tuning).")
    lr: float | None = config_field(None, "Peak learning rate (default: 1e-3 from scratch, 5e-5 fine-tuning).")
    min_lr: float | None = config_field(None, "Final learning rate of the decay (default: lr / 10).")
    schedule: str = config_field("cosine", "Learning-rate schedule after warm-up: cosine, linear, constant or inverse-sqrt.")
    warmup_steps: int | None = config_field(None, "Linear warm-up steps (default: min(100, 10% of the steps)).")
    weight_decay: float = config_field(0.1, "AdamW weight decay (applied to matrices, not to biases or norms).")
    beta1: float = config_field(0.9, "AdamW beta1.")
    beta2: float = config_field(0.95, "AdamW beta2.")
    grad_clip: float = config_field(1.0, "Clip the gradient norm to this value (0 disables).")
    dropout: float | None = config_field(None, "Set every dropout probability of the model (default: 0 from scratch, the model's own when fine-tuning).")
    label_smoothing: float | None = config_field(None, "Label smoothing of the cross-entropy loss (a family option: causal, masked, permuted, electra). [default: 0]")
    seed: int = config_field(0, "Random seed (weights, data order, masking, dropout).")
    # --- speed ---------------------------------------------------------------------------------
    precision: str = config_field("auto", "auto, fp32, bf16 or fp16 (auto: bf16 where the hardware has it and it is faster).")
    activation_checkpointing: bool = config_field(False, "Recompute each block's activations in the backward instead of keeping them (less memory, ~30% slower steps); alias --gradient-checkpointing.")
    compile: bool = config_field(False, "torch.compile the model (faster steps after a compile pause).")
    num_processes: int = config_field(1, "Processes to start on this machine (one per GPU; on CPUs gloo processes); 1 runs in this process.")
    strategy: str = config_field("ddp", "How several processes share the work: ddp (a whole copy of the model each), fsdp (parameters, gradients and optimizer sharded; FSDP2), or deepspeed (ZeRO through Accelerate; needs CUDA).")
    num_machines: int = config_field(1, "Machines taking part; run the same command on each with its own --machine-rank.")
    machine_rank: int = config_field(0, "This machine's number, 0 to --num-machines - 1 (0 writes the model, checkpoints and metrics).")
    main_process_ip: str | None = config_field(None, "Address of machine 0, reachable from the others (several machines).")
    main_process_port: int = config_field(29500, "Port on machine 0 for the processes to meet (several machines).")
    # --- adapters (LoRA / QLoRA through peft) ----------------------------------------------------
    lora: bool = config_field(False, "Train LoRA adapters (peft) instead of all weights; the output is a peft adapter directory.")
    lora_r: int = config_field(8, "LoRA rank.")
    lora_alpha: float | None = config_field(None, "LoRA alpha (scale alpha/r; default 2 x rank).")
    lora_dropout: float = config_field(0.0, "Dropout on the LoRA branch.")
    lora_targets: str = config_field("all-linear", "Modules LoRA adapts: all-linear (every linear layer of the blocks, not the output layer) or comma-separated module names (e.g. c_attn,c_proj).")
    quantize: str | None = config_field(None, "With --lora: load the base weights in 4bit (bitsandbytes NF4, i.e. QLoRA; pip install 'lmctl[qlora]').")
    dry_run: bool = config_field(False, "Print the plan (parameters, estimated peak memory) and exit without training or writing anything.")
    # --- evaluation, checkpoints, logging ------------------------------------------------------
    eval_every: int | None = config_field(None, "Evaluate every N optimizer steps (0 disables; default: 10 times per run).")
    eval_batches: int = config_field(20, "Batches per evaluation during training (the final evaluation uses all).")
    save_every: int | None = config_field(None, "Checkpoint every N steps (0: only at the end; default: with each evaluation).")
    keep_last: int = config_field(2, "Checkpoints to keep (the best by eval loss is kept as well).")
    early_stopping_patience: int = config_field(0, "Stop after N evaluations without improvement (0 disables).")
    resume: str | None = config_field(None, "Resume from 'auto' (the latest checkpoint in --out) or a checkpoint directory; --max-steps/--epochs may change (docs/train.md).")
    overwrite: bool = config_field(False, "Replace an earlier run in --out (its model, checkpoints and logs) instead of refusing to start.")
    log_every: int = config_field(10, "Log training metrics every N optimizer steps.")
    report_to: list[str] = config_field([], "Also log to these Accelerate trackers: tensorboard, wandb, mlflow, ...")
    callbacks: list[str] = config_field([], "Run this training callback, by name (repeatable; `lmctl plugins list` shows the installed ones). Plugin callbacks run only when chosen.")
    on_nan: str = config_field("stop", "On a NaN/inf loss: stop (save the last good state) or skip (skip the step; stop after 10 in a row).")
    # --- family options (each family declares its own; `lmctl plugins list` shows them) ---------
    family_options: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "A setting of the chosen family, KEY=VALUE (repeatable); a [family_options] table in config files."},
    )
    # Shorthands for built-in families' options, kept from earlier versions: each sets the family
    # option of the same name and is refused for a family that has no such option.
    mlm_probability: float | None = config_field(None, "masked/electra: fraction of tokens masked (family option mlm_probability). [default: 0.15]")
    plm_probability: float | None = config_field(None, "permuted: ratio of span length to context length (family option plm_probability). [default: 1/6]")
    max_span_length: int | None = config_field(None, "permuted: longest span of masked tokens (family option max_span_length). [default: 5]")
    generator_size: float | None = config_field(None, "electra: generator hidden size as a fraction of the discriminator's (family option generator_size). [default: 0.25]")
    generator_config: list[str] = config_field([], "electra: generator config override KEY=VALUE (repeatable; family option generator_config).")
    discriminator_weight: float | None = config_field(None, "electra: weight of the discriminator loss (family option discriminator_weight). [default: 50]")
    # --- environment ---------------------------------------------------------------------------
    offline: bool = config_field(False, "Never touch the network (HF_HUB_OFFLINE=1).")
    trust_remote_code: bool = config_field(False, "Allow model code from the hub (off by default: it runs arbitrary code).")

    # ------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Refuse impossible settings with one clear line each."""
        if not self.train:
            raise UsageError("no training data: pass --train FILE (or a prepared directory)")
        for name in ("batch_size", "grad_accum", "log_every", "num_processes"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(self, name)}")
        if self.lr is not None and self.lr <= 0:
            raise UsageError(f"--lr must be positive, got {self.lr}")
        if self.min_lr is not None and self.min_lr < 0:
            raise UsageError(f"--min-lr must not be negative, got {self.min_lr}")
        if self.max_steps is not None and self.max_steps < 1:
            raise UsageError(f"--max-steps must be a positive integer, got {self.max_steps}")
        if self.epochs is not None and self.epochs <= 0:
            raise UsageError(f"--epochs must be positive, got {self.epochs}")
        if self.block_size is not None and self.block_size < 2:
            raise UsageError(f"--block-size must be at least 2, got {self.block_size}")
        if self.validation and self.validation_split is not None:
            raise UsageError("--validation and --validation-split conflict: use one of them")
        if self.validation_split is not None and not 0 < self.validation_split < 1:
            raise UsageError(f"--validation-split must be between 0 and 1, got {self.validation_split}")
        if self.schedule not in ("cosine", "linear", "constant", "inverse-sqrt"):
            raise UsageError(f"--schedule must be cosine, linear, constant or inverse-sqrt, got {self.schedule!r}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise UsageError(f"--precision must be auto, fp32, bf16 or fp16, got {self.precision!r}")
        if self.on_nan not in ("stop", "skip"):
            raise UsageError(f"--on-nan must be stop or skip, got {self.on_nan!r}")
        if self.preset and not self.from_scratch:
            raise UsageError("--preset only applies with --from-scratch")
        if self.model_config and not self.from_scratch:
            raise UsageError("--model-config only applies with --from-scratch (a pretrained model keeps its config)")
        for name in ("eval_every", "save_every", "keep_last", "early_stopping_patience", "warmup_steps"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise UsageError(f"--{name.replace('_', '-')} must not be negative, got {value}")
        if self.mlm_probability is not None and not 0 < self.mlm_probability < 1:
            raise UsageError(f"--mlm-probability must be between 0 and 1, got {self.mlm_probability}")
        if self.strategy not in ("ddp", "fsdp", "deepspeed"):
            raise UsageError(f"--strategy must be ddp, fsdp or deepspeed, got {self.strategy!r}")
        if self.num_machines < 1 or not 0 <= self.machine_rank < self.num_machines:
            raise UsageError(
                f"--machine-rank must be between 0 and --num-machines - 1 ({self.num_machines - 1}), got {self.machine_rank}"
            )
        if self.num_machines > 1 and not self.main_process_ip:
            raise UsageError("--num-machines > 1 needs --main-process-ip: the address of machine 0")
        if self.lora and self.from_scratch:
            raise UsageError("--lora adapts pretrained weights: drop --from-scratch, or train all weights without --lora")
        if self.quantize is not None and self.quantize != "4bit":
            raise UsageError(f"--quantize must be 4bit, got {self.quantize!r}")
        if self.quantize and not self.lora:
            raise UsageError("--quantize 4bit freezes the base weights: add --lora to train adapters on them")
        if self.lora and self.lora_r < 1:
            raise UsageError(f"--lora-r must be a positive integer, got {self.lora_r}")
        if self.lora and not 0 <= self.lora_dropout < 1:
            raise UsageError(f"--lora-dropout must be in [0, 1), got {self.lora_dropout}")
        if self.resume and self.overwrite:
            raise UsageError("--resume and --overwrite conflict: continue the earlier run, or replace it")
        if self.grad_clip < 0 or self.weight_decay < 0:
            raise UsageError("--grad-clip and --weight-decay must not be negative")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def lora_settings(self) -> Any:
        """The LoRA settings (``lmctl.kit.adapters.LoraSettings``), or None without --lora."""
        if not self.lora:
            return None
        from lmctl.kit.adapters import LoraSettings

        return LoraSettings(
            r=self.lora_r, alpha=self.lora_alpha, dropout=self.lora_dropout, targets=self.lora_targets, quantize=self.quantize
        )

    def family_option_values(self) -> dict[str, Any]:
        """``--family-option`` settings plus the shorthand flags that were given (as option names);
        the same option set two ways with different values is refused."""
        from lmctl.families.base import parse_override

        values = dict(self.family_options)
        for name in FAMILY_OPTION_SHORTHANDS:
            value = getattr(self, name)
            if value is None or value == []:
                continue
            if name == "generator_config":
                value = dict(parse_override(item) for item in value)
            if name in values and values[name] != value:
                flag = "--" + name.replace("_", "-")
                raise UsageError(f"{flag} and --family-option {name}=... disagree: give one of them")
            values[name] = value
        return values


FAMILY_OPTION_SHORTHANDS = (
    "mlm_probability", "plm_probability", "max_span_length", "generator_size", "generator_config",
    "discriminator_weight", "label_smoothing",
)  # fmt: skip


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def field_help(name: str) -> str:
    return FIELDS[name].metadata.get("help", "")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a ``.toml``, ``.yaml``/``.yml`` or ``.json`` run config into a dict of TrainConfig fields.

    Keys may use dashes or underscores; unknown keys are an error (a typo must not pass silently).
    A ``[train]`` table (TOML) or ``train:`` mapping holding the settings is accepted too.
    """
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"config file not found: {p}")
    text = p.read_text(encoding="utf-8")
    suffix = p.suffix.lower()
    try:
        if suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise UsageError(f"config file {p} must be .toml, .yaml, .yml or .json")
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - parse errors of three libraries
        raise UsageError(f"could not parse {p}: {str(exc).splitlines()[0]}") from None
    if isinstance(data.get("train"), dict):
        family_table = data.get("family_options")
        data = dict(data["train"])
        if isinstance(family_table, dict):
            data.setdefault("family_options", family_table)
    if not isinstance(data, dict):
        raise UsageError(f"{p} must hold a table/mapping of settings")
    settings: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in FIELDS:
            raise UsageError(f"{p}: unknown setting '{key}' (see `lmctl train --help`)")
        if name in ("train", "validation", "model_config", "generator_config", "report_to", "callbacks") and isinstance(value, str):
            value = [value]
        if name == "family_options" and not isinstance(value, dict):
            raise UsageError(f"{p}: family_options must be a table of KEY = VALUE settings")
        settings[name] = value
    # Relative data paths in a config file are relative to the file, so examples run from anywhere.
    base = p.resolve().parent
    for name in ("train", "validation"):
        if name in settings:
            settings[name] = [str(base / v) if not Path(v).is_absolute() and (base / v).exists() else v for v in settings[name]]
    return settings


def merge(file_settings: dict[str, Any], cli_settings: dict[str, Any]) -> TrainConfig:
    """Defaults < config file < command-line flags (a flag counts when it was given, i.e. not None)."""
    merged: dict[str, Any] = dict(file_settings)
    for key, value in cli_settings.items():
        if value is None or (isinstance(value, (list, dict)) and not value and key in merged):
            continue
        if key == "family_options" and isinstance(merged.get(key), dict):
            value = {**merged[key], **value}
        merged[key] = value
    return TrainConfig(**merged)
