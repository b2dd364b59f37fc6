"""``lmctl train``: the training loop, on Accelerate, for every family.

Read top to bottom: :func:`train` resolves the family, data, tokenizer and model, prints the
plan, then runs :class:`Trainer`, whose loop is deliberately plain:

    for each optimizer step:
        set the learning rate (warm-up, then cosine/linear/constant/inverse-sqrt decay)
        for each micro-batch: collate -> family.compute_loss -> backward (no DDP sync but the last)
        clip, check the step is finite, optimizer step
        every log_every steps: one host sync, log; eval_every: evaluate; save_every: checkpoint

Design choices (why):

* Data order is a pure function of (seed, epoch): a per-epoch permutation of the blocks.  The
  examples of optimizer step ``s`` are positions ``[s * G, (s + 1) * G)`` of that order (G = the
  global batch), split between accumulation steps and processes.  So resuming needs only the step
  (no batch skipping), and N processes x batch B see exactly the examples of 1 process x N*B.
* Randomness of collators (masking) comes from a dedicated ``torch.Generator`` saved in checkpoints;
  dropout uses torch's global RNG, also saved.  Resuming is therefore exact.
* No ``.item()`` per step except one scalar to catch a NaN/inf before the optimizer applies it.
* The learning rate is computed from the step (no scheduler object to save).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lmctl.core import checkpoint as ckpt
from lmctl.core.device import available_memory_bytes, host_to_device, peak_memory_bytes, started_by_a_launcher
from lmctl.core.disk import (
    checkpoint_bytes_estimate,
    free_bytes,
    human_bytes,
    is_out_of_space,
    space_reason,
    tree_bytes,
)
from lmctl.core.files import write_json_atomic
from lmctl.core.quiet import quiet_libraries
from lmctl.core.run_lock import run_lock
from lmctl.errors import LmctlError, UsageError
from lmctl.families.base import Family, Options, parse_options, parse_override
from lmctl.kit.scoring import safe_exp
from lmctl.workflows.train.card import model_card
from lmctl.workflows.train.config import TrainConfig
from lmctl.workflows.train.data import BatchSource, ExampleOrder, prepared_data_hash, resolve_data
from lmctl.workflows.train.launch import install_signal_handlers, launch_processes, restore_signal_handlers
from lmctl.workflows.train.result import TrainResult
from lmctl.workflows.train.strategy import (
    asked_world_size,
    check_deepspeed_can_run,
    check_world_size,
    deepspeed_plugin,
    elastic_batch,
    resolve_strategy,
)

# Settings that must not change between a run and its resumption.  The step budget
# (total_steps: --max-steps / --epochs) is recorded but may change: see docs/train.md, "Resuming".
FINGERPRINT_KEYS = (
    "model", "family", "from_scratch", "model_config", "preset", "block_size", "global_batch", "seed",
    "data_hash", "schedule", "lr", "min_lr", "warmup_steps", "weight_decay", "beta1", "beta2",
    "line_by_line", "family_options", "dropout", "lora",
)  # fmt: skip


# --- learning rate --------------------------------------------------------------------------------


def learning_rate(step: int, *, lr: float, min_lr: float, warmup: int, total: int, schedule: str) -> float:
    """The learning rate of optimizer step ``step`` (0-based); nanoGPT's warm-up and cosine decay."""
    if step < warmup:
        return lr * (step + 1) / (warmup + 1)
    if schedule == "constant":
        return lr
    if schedule == "inverse-sqrt":
        return max(min_lr, lr * math.sqrt(max(warmup, 1)) / math.sqrt(step + 1))
    ratio = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "linear":
        return min_lr + (1.0 - ratio) * (lr - min_lr)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


# --- setup ----------------------------------------------------------------------------------------


def family_options(config: TrainConfig, family: Family) -> Options:
    """The chosen family's options from ``--family-option`` and the shorthand flags; a setting the
    family does not have is refused with one line listing the ones it has."""
    return parse_options(family, config.family_option_values())


def optimizer_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices (weights of linear/embedding layers), not biases and norm scales (nanoGPT)."""
    decay, no_decay, seen = [], [], set()
    for _name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        (decay if param.dim() >= 2 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: Any, config: TrainConfig, lr: float, device: Any) -> Any:
    import torch

    groups = optimizer_groups(model, config.weight_decay)
    kwargs = dict(lr=lr, betas=(config.beta1, config.beta2), eps=1e-8)
    # The fused kernel is one pass over all parameters; it exists for CPU and CUDA in torch >= 2.4.
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, **kwargs)


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for name in ("lmctl", "torch", "transformers", "tokenizers", "accelerate", "datasets", "safetensors", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def step_is_finite(step_loss: Any, grad_norm: Any, *, loss_scaled: bool = False) -> bool:
    """Whether a step may reach the weights: its loss and gradient norm are finite (one host sync).

    Under fp16 loss scaling (``loss_scaled``) only the loss is checked: gradients overflow now and
    then by design while the scaler searches for its scale, and the scaler's own step skips those
    updates and lowers the scale.  Treating them as NaN steps would stop fp16 training at its first
    overflow, and, since the scaler would then never lower its scale, skip every step after it.
    """
    import torch

    return bool(torch.isfinite(step_loss if loss_scaled else step_loss + grad_norm))


# --- memory plan ----------------------------------------------------------------------------------


def estimate_run_memory(
    model_config: dict[str, Any],
    *,
    config: TrainConfig,
    lora: Any,
    micro_batch: int,
    block_size: int,
    precision: str,
    fused_loss: bool,
    device: str,
    total_params: int | None = None,
    trainable_params: int | None = None,
) -> Any:
    """The documented peak-memory formula (:mod:`lmctl.core.memory_plan`) for one process's run."""
    from lmctl.core.memory_plan import estimate_memory

    return estimate_memory(
        model_config,
        batch_size=micro_batch,
        block_size=block_size,
        precision=precision if precision in ("fp32", "bf16", "fp16") else "fp32",
        activation_checkpointing=config.activation_checkpointing,
        lora={"r": lora.r} if lora is not None else None,
        quantize=lora.quantize if lora is not None else None,
        fused_loss=fused_loss,
        device="cuda" if device.startswith("cuda") else "cpu",
        total_params=total_params,
        trainable_params=trainable_params,
    )


def _size(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.0f} MiB"


def memory_summary(memory: Any) -> str:
    if memory is None:
        return "unknown (the formula cannot read this model's config)"
    parts = ", ".join(
        f"{name} {_size(getattr(memory, name))}"
        for name in ("weights", "gradients", "optimizer", "activations", "loss", "overhead")
    )
    return f"{_size(memory.total)} ({parts})"


def memory_record(memory: Any) -> dict[str, Any] | None:
    if memory is None:
        return None
    fields = ("weights", "gradients", "optimizer", "activations", "loss", "overhead")
    return {"total_bytes": memory.total, **{f"{name}_bytes": getattr(memory, name) for name in fields},
            "notes": list(memory.notes)}  # fmt: skip


def memory_warning(estimate: int, available: int | None) -> str | None:
    """One line when the estimated peak exceeds the memory available now (None otherwise)."""
    if available is None or estimate <= available:
        return None
    return (
        f"warning: the estimated peak memory ({_size(estimate)}) exceeds the available memory ({_size(available)}): "
        "lower --batch-size or --block-size, or add --activation-checkpointing or --lora"
    )


def trainable_summary(trainable: int, total: int) -> str:
    return f"{trainable:,} ({100.0 * trainable / max(1, total):.2f}%)"


def lora_summary(lora: Any) -> str:
    if lora is None:
        return "none (all weights train)"
    text = f"LoRA r={lora.r} alpha={lora.scaling_alpha:g} dropout={lora.dropout:g} on {lora.targets}"
    return text + (" over 4-bit NF4 base weights" if lora.quantize else "")


# --- the trainer ----------------------------------------------------------------------------------


class StopTraining(Exception):
    """Raised inside the loop to end it early (signal, NaN, early stopping)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Trainer:
    """Owns one training run: state, the loop, evaluation, checkpoints and outputs."""

    def __init__(
        self,
        config: TrainConfig,
        *,
        quiet: bool = False,
        display: DisplayFactory | None = None,
        prepare_progress: Any = None,
        status: Callable[[str | None], None] | None = None,
    ) -> None:
        self.config = config
        # What the run is waiting for before its first step (the CLI shows a spinner); None: nothing.
        self.status: Callable[[str | None], None] = status or (lambda text: None)
        self.quiet = quiet
        self.display_factory = display
        self.prepare_progress = prepare_progress
        self.out = Path(config.out)
        self.metrics: list[dict[str, Any]] = []
        self.callbacks: dict[str, Any] = {}  # name -> callback, chosen with --callback (main process)
        self.failed_callbacks: dict[str, str] = {}  # name -> the error that disabled it
        self.stop_signal: str | None = None
        self.best_eval_loss: float | None = None
        self.best_step: int | None = None
        self.evals_without_improvement = 0
        self.nan_in_a_row = 0
        self.nan_skipped = 0
        self.warn: Callable[[str], None] = stderr_line  # warnings that must be seen, even with --quiet
        self.elapsed_before = 0.0  # training seconds of the sessions before a resume

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Build everything the loop needs, in order; each step is a method below."""
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        quiet_libraries()
        self._setup_strategy()  # first: a request that cannot run is refused before anything is built
        model = self._setup_family()  # a pretrained model first: its tokenizer and limit shape the data
        self._check_model_config()  # before preparing data: a config that cannot be built fails in seconds
        self._setup_data(model)
        model = self._setup_model(model)
        model = self._setup_adapters(model)
        self._setup_precision(model)
        self._setup_accelerator()
        self._setup_schedule()
        model = self._setup_sharding(model)  # after the model is final (adapters, checkpointing)
        self._setup_optimizer(model)
        self._setup_resume()
        self._prepare_for_training()

    def _setup_strategy(self) -> None:
        """DDP, FSDP or DeepSpeed: asked with --strategy or by an accelerate config; refused in one
        line when it cannot run here, never silently replaced (see :mod:`strategy`)."""
        config = self.config
        self.strategy = resolve_strategy(config.strategy)
        if self.strategy.name == "fsdp":
            # lmctl shards the model itself; Accelerate would ignore the request (CPU), raise
            # (version 1) or wrap the model a second time (GPU).
            os.environ["ACCELERATE_USE_FSDP"] = "false"
        if self.strategy.name == "deepspeed":
            check_deepspeed_can_run()
        self.launch_world = int(os.environ.get("WORLD_SIZE", "1"))
        self.launch_rank = int(os.environ.get("RANK", "0"))
        self.asked_world = asked_world_size(config.num_processes, config.num_machines)
        check_world_size(self.asked_world, self.launch_world)
        if self.strategy.name == "fsdp" and config.precision == "fp16":
            raise UsageError("--strategy fsdp trains in fp32 or bf16: use --precision bf16 (fp16 needs a sharded loss scaler)")
        if self.strategy.name == "fsdp" and config.compile:
            raise UsageError("--compile is not supported with --strategy fsdp yet: leave it out")

    def _setup_family(self) -> Any:
        """The family, its options, and the pretrained model (None when training from scratch)."""
        from lmctl.core.hub import HubUnavailableError
        from lmctl.families.base import max_positions
        from lmctl.plugins.registry import resolve_family

        config = self.config
        try:
            family = resolve_family(
                config.model, family=config.family, from_scratch=config.from_scratch, trust_remote_code=config.trust_remote_code
            )
            self.family = family
            self.options = family_options(config, family)
            self.lora = config.lora_settings()
            if self.lora is not None and not family.lora:
                raise UsageError(f"--lora: the {family.name} family does not support LoRA adapters; train all weights without --lora")
            model = None
            if not config.from_scratch:
                self.status(f"loading {config.model}")
            if not config.from_scratch and self._reads_weights_on_main_only():
                # FSDP: rank 0 reads the weights; the others build the architecture on the meta
                # device and receive their shards from it when the model is sharded.
                model = family.load_pretrained_empty(config.model, trust_remote_code=config.trust_remote_code)
            if not config.from_scratch and model is None:
                model = family.load_pretrained(
                    config.model, trust_remote_code=config.trust_remote_code, **self._quantized_loading()
                )
        except HubUnavailableError as exc:
            raise LmctlError(f"{exc}, or --from-scratch to build the architecture without weights") from None
        limit = max_positions(model.config) if model is not None else None
        block_size = config.block_size or (128 if model is None else min(512, limit or 512))
        if family.requires_even_block_size and block_size % 2 and config.block_size is None:
            block_size -= 1
        family.check_block_size(block_size, model)
        self.block_size = block_size
        return model

    def _reads_weights_on_main_only(self) -> bool:
        return self.strategy.name == "fsdp" and self.launch_world > 1 and self.launch_rank != 0

    def _check_model_config(self) -> None:
        """From scratch, build the model once on the meta device (no memory, no data yet) with a
        placeholder vocabulary, so ``--model-config n_embd=65`` with 4 heads is refused before
        minutes of preparing data rather than after."""
        if not self.config.from_scratch:
            return
        import torch

        class PlaceholderTokenizer:
            def __len__(self) -> int:
                return 1024

        try:
            with torch.device("meta"):
                self._build_from_scratch(PlaceholderTokenizer())
        except (AttributeError, NotImplementedError, RuntimeError):
            pass  # a family (maybe a plugin's) that needs the real tokenizer or device: checked when built

    def _build_from_scratch(self, tokenizer: Any) -> Any:
        """The model from scratch; a config the architecture rejects is one line naming --model-config."""
        from lmctl.core.presets import preset_overrides

        config = self.config
        overrides = preset_overrides(config.model, config.preset)
        overrides.update(dict(parse_override(item) for item in config.model_config))
        try:
            # From scratch, dropout defaults to 0 (as nanoGPT and LitGPT pretrain): on short runs it
            # only slows learning, and its random masks cost ~10% of a small model's CPU step.
            return self.family.build_from_scratch(
                config.model,
                tokenizer=tokenizer,
                block_size=self.block_size,
                overrides=overrides,
                dropout=config.dropout if config.dropout is not None else 0.0,
                options=self.options,
            )
        except (ValueError, TypeError, AssertionError, ZeroDivisionError) as exc:
            settings = " ".join(f"{k}={v}" for k, v in overrides.items()) or "the defaults"
            detail = " ".join(str(exc).split()) or type(exc).__name__
            raise UsageError(
                f"the '{config.model}' model cannot be built with {settings} ({detail}); change --model-config"
            ) from None

    def _setup_data(self, model: Any) -> None:
        """The process layout, the prepared data (raw files are prepared into the cache once) and its tokenizer."""
        import torch
        from accelerate import PartialState

        config, family = self.config, self.family
        tokenizer_source = config.tokenizer or (config.model if not config.from_scratch else family.tokenizer_kind)
        # PartialState knows the device and process layout; the Accelerator itself is created once
        # the model size is known, because "auto" precision depends on it.
        # With no accelerator, say so: Accelerate then runs multi-process CPU training over gloo.
        self.use_cpu = not torch.cuda.is_available() and not torch.backends.mps.is_available()
        self.state = PartialState(cpu=self.use_cpu)
        self.status(None)  # preparing raw files shows its own progress
        self.data = resolve_data(config, family, tokenizer_source, self.block_size, self.state, self.prepare_progress)
        self.tokenizer = self.data.load_tokenizer()
        self._check_same_data()

    def _check_same_data(self) -> None:
        """Each machine reads its own copy of the data: all must hold the same, or the run is refused."""
        from lmctl.core.sharding import all_gather

        if self.state.num_processes == 1:
            return
        hashes = all_gather(prepared_data_hash(self.data))
        if len(set(hashes)) > 1:
            differing = [rank for rank, h in enumerate(hashes) if h != hashes[0]]
            raise LmctlError(
                f"the processes read different training data (data hash {hashes[0]} on process 0, "
                f"{hashes[differing[0]]} on process {differing[0]}): give every machine the same files"
            )

    def _setup_model(self, model: Any) -> Any:
        """The model from scratch (seeded), or the pretrained one with the requested dropout."""
        import torch
        from accelerate.utils import set_seed

        from lmctl.core.hub import check_tokenizer_matches, count_parameters

        config, family, tokenizer = self.config, self.family, self.tokenizer
        set_seed(config.seed)
        self.status(f"building {config.model}" if model is None else f"setting up {config.model}")
        if model is None:
            model = self._build_from_scratch(tokenizer)
        elif config.dropout is not None:
            from lmctl.families.base import dropout_settings

            for module in model.modules():
                if isinstance(module, torch.nn.Dropout):
                    module.p = config.dropout
            for key, value in dropout_settings(model.config, config.dropout).items():
                setattr(model.config, key, value)
        check_tokenizer_matches(tokenizer, model)
        family.check_block_size(self.block_size, model)
        self.n_params = count_parameters(model)
        return model

    def _quantized_loading(self) -> dict[str, Any]:
        """``from_pretrained`` arguments that load the base weights in 4 bits (--quantize 4bit)."""
        if self.lora is None or not self.lora.quantize:
            return {}
        import torch

        from lmctl.kit.adapters import quantization_config

        compute = "bfloat16" if self.config.precision == "bf16" else "float32"
        device_map: Any = {"": torch.cuda.current_device()} if torch.cuda.is_available() else "cpu"
        return {"quantization_config": quantization_config(compute), "device_map": device_map}

    def _setup_adapters(self, model: Any) -> Any:
        """Activation checkpointing, then LoRA adapters (--lora; only they train), on the built model."""
        from lmctl.kit.adapters import apply_lora, enable_activation_checkpointing, trainable_parameters

        if self.config.activation_checkpointing:
            enable_activation_checkpointing(model)
        if self.lora is not None:
            model = apply_lora(model, self.lora, auto_class=self.family.auto_class)
        self.n_trainable = trainable_parameters(model)
        return model

    def _setup_precision(self, model: Any) -> None:
        """fp32/bf16/fp16: asked for, kept from the checkpoint, remembered, measured, or by rule."""
        from lmctl.core.precision import (
            decision_key,
            measure_faster_precision,
            remember_precision,
            remembered_precision,
            resolve_precision,
            should_measure,
        )

        config, state = self.config, self.state
        requested = config.precision
        launcher_choice = os.environ.get("ACCELERATE_MIXED_PRECISION")  # accelerate launch --mixed_precision / config
        if requested == "auto" and launcher_choice in ("no", "bf16", "fp16"):
            requested = {"no": "fp32"}.get(launcher_choice, launcher_choice)
        self.precision_timings: dict[str, float] = {}
        self.precision_source = "requested" if requested != "auto" else "rule"
        saved_precision = self._saved_precision(config)
        if saved_precision and requested == "auto":
            self.precision = saved_precision  # a resumed run keeps the precision it started with
            self.precision_source = "checkpoint"
        elif should_measure(requested, state.device, self.n_params) and not self._reads_weights_on_main_only():
            shape = {
                "family": self.family.name, "model_type": getattr(model.config, "model_type", "?"),
                "parameters": self.n_params, "layers": getattr(model.config, "num_hidden_layers", None),
                "vocab": getattr(model.config, "vocab_size", None), "block": self.block_size, "batch": config.batch_size,
            }  # fmt: skip
            key = decision_key(shape)
            remembered = remembered_precision(key)
            if remembered:
                self.precision, self.precision_timings = remembered["precision"], remembered.get("timings_s", {})
                self.precision_source = "remembered"
            else:
                # A few forward/backward passes in fp32 and bf16: not training steps, so the
                # dashboard (not started yet) never counts them; the CLI says what it waits for.
                self.status("measuring precision (fp32 vs bf16 steps)")
                self.precision, self.precision_timings = measure_faster_precision(
                    lambda precision: self._probe_step(model, self.tokenizer, self.block_size, precision)
                )
                if state.is_main_process:  # the others follow its choice (broadcast below)
                    remember_precision(key, self.precision, self.precision_timings)
                self.precision_source = "measured"
        else:
            self.precision = resolve_precision(requested, state.device, self.n_params)
        if state.num_processes > 1:  # every process must train in the main process's precision
            from accelerate.utils import broadcast_object_list

            choice = [self.precision]
            broadcast_object_list(choice)
            self.precision = choice[0]

    def _setup_accelerator(self) -> None:
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState

        self.report_to = [r for r in self.config.report_to if r and r != "none"]
        mixed = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[self.precision]
        # AcceleratorState is a process-wide singleton that refuses a second, different
        # mixed_precision: forget the previous run's settings (the process layout is kept), so
        # train() can run again in the same process (notebooks, tests) with another precision.
        AcceleratorState._reset_state()
        plugin = None
        if self.strategy.name == "deepspeed":
            plugin = deepspeed_plugin(self.strategy, self.config.grad_accum, self.config.grad_clip)
        self.accelerator = Accelerator(
            cpu=self.use_cpu,
            mixed_precision=mixed,
            log_with=self.report_to or None,
            project_dir=str(self.out) if self.report_to else None,
            deepspeed_plugin=plugin,
        )
        self.world = self.accelerator.num_processes
        self.rank = self.accelerator.process_index
        self.is_main = self.accelerator.is_main_process

    def _setup_schedule(self) -> None:
        """Data order, batch sizes, steps, learning rate and the eval/save intervals."""
        config, tokenizer = self.config, self.tokenizer
        train_split = self.data.split("train")
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.train_source = BatchSource(
            train_split, self.block_size, pad_id, seed=config.seed, lookahead=self.family.block_lookahead
        )
        if len(self.train_source) == 0:
            raise UsageError(
                f"the training data has {train_split.num_tokens} tokens, less than one block of {self.block_size}: "
                "use more data or a smaller --block-size"
            )
        self.val_split = self.data.split("validation") if self.data.has_split("validation") else None
        self.order = ExampleOrder(len(self.train_source), config.seed)

        self.micro_batch = config.batch_size
        self.grad_accum = config.grad_accum
        self.global_batch = self.micro_batch * self.grad_accum * self.world
        self._keep_checkpoint_batch()
        steps_per_epoch = len(self.train_source) / self.global_batch
        if config.max_steps:
            self.total_steps = config.max_steps
        else:
            self.total_steps = max(1, math.ceil((config.epochs or 1.0) * steps_per_epoch))
        self.lr = config.lr if config.lr is not None else (1e-3 if config.from_scratch else 5e-5)
        self.min_lr = config.min_lr if config.min_lr is not None else self.lr / 10
        self.warmup = config.warmup_steps if config.warmup_steps is not None else min(100, self.total_steps // 10)
        saved = self._resume_state()
        if saved is not None:
            # A resumed run may have a new step budget; what was derived from the old one stays
            # (the warm-up already happened), so the schedule changes only where it must.
            resolved = saved.get("fingerprint", {})
            if config.warmup_steps is None and isinstance(resolved.get("warmup_steps"), int):
                self.warmup = resolved["warmup_steps"]
        self.eval_every = config.eval_every if config.eval_every is not None else max(1, self.total_steps // 10)
        if self.val_split is None:
            self.eval_every = 0
        self.save_every = config.save_every if config.save_every is not None else self.eval_every

    def _keep_checkpoint_batch(self) -> None:
        """Elastic resume: a checkpoint written by N processes resumes on M keeping its global batch
        (and so its data order, a function of the position only): micro-batch x accumulation are
        re-derived for M processes."""
        saved = self._saved_state()
        if not saved or saved.get("world_size", self.world) == self.world:
            return
        saved_batch = saved.get("fingerprint", {}).get("global_batch")
        if not saved_batch or saved_batch == self.global_batch:
            return
        self.micro_batch, self.grad_accum = elastic_batch(saved_batch, self.world, self.config.batch_size)
        self.global_batch = saved_batch
        self.elastic_note = (
            f"resumed on {self.world} process(es) from a {saved['world_size']}-process checkpoint: "
            f"{self.micro_batch} x {self.grad_accum} accum x {self.world} proc keeps its global batch of {saved_batch}"
        )

    def _setup_sharding(self, model: Any) -> Any:
        """FSDP: ``fully_shard`` each block then the root, on every device (Accelerate ignores FSDP
        on CPUs); where only rank 0 read the weights, the others receive their shards now."""
        from lmctl.core.sharding import dist_ready, materialize_and_broadcast, parameter_bytes, shard_model

        self.sharded = self.strategy.name == "fsdp" and dist_ready()
        self.sharded_layout = self.strategy.name == "fsdp"  # checkpoints: DCP shards, even from 1 process
        if self.strategy.activation_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if self.sharded:
            if not any(p.is_meta for p in model.parameters()):  # meta: materialized after sharding
                model.to(self.accelerator.device)
            model.float()  # every rank the same dtype: the shards are reduced together
            weights_from_main = not self.config.from_scratch
            full_state = model.state_dict() if weights_from_main and self.rank == 0 else None
            shard_model(model, reshard_after_forward=self.strategy.reshard_after_forward, block_names=self.strategy.block_names)
            if weights_from_main:
                materialize_and_broadcast(model, full_state, self.accelerator.device)
                del full_state
        local, full = parameter_bytes(model)
        from lmctl.core.sharding import all_gather

        self.parameter_bytes = {"per_process": all_gather(local), "model": full}
        return model

    def _setup_optimizer(self, model: Any) -> None:
        import torch

        self.model = model
        self.optimizer = make_optimizer(model, self.config, self.lr, self.accelerator.device)
        self.collate = self.family.make_collator(self.tokenizer, self.options)
        self.collate_generator = torch.Generator().manual_seed(self.config.seed)

    def _resume_state(self) -> dict[str, Any] | None:
        """The trainer state of the checkpoint being resumed (None when not resuming or not found)."""
        if not self.config.resume:
            return None
        try:
            return ckpt.read_state(ckpt.find_resume_checkpoint(self.out, self.config.resume))
        except (UsageError, LmctlError):
            return None  # reported properly by _resume

    def _setup_resume(self) -> None:
        """Continue from a checkpoint (same settings), or refuse to mix runs in one directory."""
        from lmctl.core.run_dir import check_new_run_dir, clear_run, has_earlier_run

        self.start_step = 0
        self.fingerprint = self._fingerprint()
        if self.config.resume:
            self._resume(self.config.resume)
        elif self.is_main:
            check_new_run_dir(self.out, resume=None, overwrite=self.config.overwrite)
            if self.config.overwrite and has_earlier_run(self.out):
                clear_run(self.out)  # only an earlier lmctl run's own files

    def _prepare_for_training(self) -> None:
        import torch

        if self.config.compile:
            self.model = torch.compile(self.model)
        if not self.sharded:  # a sharded model is already spread over the processes: no DDP wrapper
            self.model, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)
            self._wrap_ddp_for_a_launcher_of_one()
        self.model.train()
        if self.report_to:
            settings = {k: v for k, v in self.config.to_dict().items() if isinstance(v, (int, float, str, bool))}
            self.accelerator.init_trackers("lmctl", config=settings)

    def _wrap_ddp_for_a_launcher_of_one(self) -> None:
        """Under a distributed launcher with one process (``torchrun --nproc_per_node 1``), a DDP
        wrapper all the same: Accelerate leaves it out at world size 1, but a launched run should
        run the code that N processes run (gradient hooks, NCCL/gloo all-reduce), e.g. to try a
        cluster job on one GPU; plain ``lmctl train`` starts no process group and gets none."""
        import torch
        import torch.distributed as dist

        if (
            self.world != 1
            or self.strategy.name != "ddp"
            or not (dist.is_available() and dist.is_initialized())
        ):
            return
        if isinstance(self.model, torch.nn.parallel.DistributedDataParallel):
            return
        device = self.accelerator.device
        ids = (
            [device.index if device.index is not None else torch.cuda.current_device()]
            if device.type == "cuda"
            else None
        )
        self.model = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

    def _saved_precision(self, config: TrainConfig) -> str | None:
        """The precision a checkpoint being resumed was trained in (None when not resuming)."""
        saved = self._saved_state()
        return saved.get("precision") if saved else None

    def _saved_state(self) -> dict[str, Any] | None:
        """The trainer state of the checkpoint being resumed (None when not resuming), read by the
        main process (other machines may have no copy of it) and sent to all."""
        from lmctl.core.sharding import broadcast_from_main

        if not self.config.resume:
            return None
        if getattr(self, "_resume_found", None) is None:
            found: dict[str, Any] | None = None
            if self.state.is_main_process:
                try:
                    path = ckpt.find_resume_checkpoint(self.out, self.config.resume)
                    found = {"path": str(path), "state": ckpt.read_state(path)}
                except LmctlError as exc:
                    found = {"error": str(exc), "usage": isinstance(exc, UsageError)}
            found = broadcast_from_main(found)
            assert found is not None
            if "error" in found:
                raise (UsageError if found["usage"] else LmctlError)(found["error"])
            self._resume_found = found
        return dict(self._resume_found["state"], path=self._resume_found["path"])

    def _probe_step(self, model: Any, tokenizer: Any, block_size: int, precision: str) -> float:
        """Seconds for one forward/backward pass on the first training examples (for --precision auto).

        Uses its own generator and restores torch's RNG, so measuring changes nothing that follows.
        """
        import torch

        from lmctl.core.precision import autocast_context

        rng = torch.get_rng_state()
        try:
            source = BatchSource(
                self.data.split("train"), block_size, tokenizer.pad_token_id or 0, lookahead=self.family.block_lookahead
            )
            count = min(self.config.batch_size, len(source))
            input_ids, mask = source.batch(np.arange(count))  # first-epoch blocks
            batch = self.family.make_collator(tokenizer, self.options)(input_ids, mask, torch.Generator().manual_seed(0))
            model.train()
            start = time.perf_counter()
            with autocast_context(precision, torch.device("cpu")):
                out = self.family.compute_loss(model, batch, self.options)
            out.loss.backward()
            elapsed = time.perf_counter() - start
            model.zero_grad(set_to_none=True)
            return elapsed
        finally:
            torch.set_rng_state(rng)

    def _fingerprint(self) -> dict[str, Any]:
        c = self.config
        return {
            "model": c.model, "family": self.family.name, "from_scratch": c.from_scratch,
            "model_config": list(c.model_config), "preset": c.preset, "block_size": self.block_size,
            "global_batch": self.global_batch, "seed": c.seed, "data_hash": prepared_data_hash(self.data),
            "schedule": c.schedule, "lr": self.lr, "min_lr": self.min_lr, "warmup_steps": self.warmup,
            "total_steps": self.total_steps, "weight_decay": c.weight_decay, "beta1": c.beta1, "beta2": c.beta2,
            "line_by_line": c.line_by_line, "family_options": self.options.training_values(),
            "dropout": c.dropout, "lora": self.lora.record() if self.lora is not None else None,
        }  # fmt: skip

    def _resume(self, resume: str) -> None:
        state = self._saved_state()
        assert state is not None
        path = Path(state["path"])
        saved = state.get("fingerprint", {})
        changed = [k for k in FINGERPRINT_KEYS if saved.get(k) != self.fingerprint.get(k)]
        if changed:
            details = ", ".join(f"{k}: {saved.get(k)!r} -> {self.fingerprint.get(k)!r}" for k in changed[:4])
            raise UsageError(
                f"cannot resume from {path}: the run config changed ({details}); only --max-steps/--epochs and the "
                "settings listed in docs/train.md (Resuming) may change: start a new --out (or pass --overwrite)"
            )
        if int(state["step"]) > self.total_steps:
            raise UsageError(
                f"cannot resume from {path}: it is at step {state['step']}, past the {self.total_steps} steps asked for; "
                f"pass --max-steps {state['step']} or more"
            )
        layout = state.get("layout", "whole")
        wanted = "sharded" if self.strategy.name == "fsdp" else "whole"
        if layout != wanted:
            written = "--strategy fsdp" if layout == "sharded" else "--strategy ddp"
            raise UsageError(f"{path} was written with {written}: resume it with {written}")
        if self.strategy.name == "deepspeed":
            raise UsageError("resuming a DeepSpeed run is not supported by lmctl yet: resume with --strategy ddp or fsdp")
        if layout == "sharded":
            self._load_sharded_checkpoint(path, state)
        else:
            self._load_whole_checkpoint(path)
        self._load_rng(path, int(state["step"]))
        self.start_step = int(state["step"])
        self.best_eval_loss = state.get("best_eval_loss")
        self.best_step = state.get("best_step")
        self.evals_without_improvement = int(state.get("evals_without_improvement", 0))
        self.elapsed_before = float(state.get("elapsed_s") or 0.0)
        self.resumed_from = str(path)
        previous_total = saved.get("total_steps")
        if isinstance(previous_total, int) and previous_total != self.total_steps:
            self.budget_change = (previous_total, self.total_steps)

    def _load_whole_checkpoint(self, path: Path) -> None:
        """DDP: the main process reads the weights and optimizer (other machines have no copy) and
        sends them to the other processes over the process group."""
        from lmctl.core.sharding import broadcast_module, broadcast_optimizer

        if self.is_main:
            if self.lora is not None:
                from lmctl.kit.adapters import load_adapter_weights

                load_adapter_weights(self.model, path)  # an adapter run's checkpoints hold the adapter only
            else:
                self.family.load_weights(self.model, path)
            ckpt.load_optimizer(self.optimizer, path)
        if self.world > 1:
            broadcast_module(self.model)
            broadcast_optimizer(self.optimizer, self.accelerator.device)

    def _load_sharded_checkpoint(self, path: Path, state: dict[str, Any]) -> None:
        """FSDP: every process reads its own shard from its machine's copy of the checkpoint (or
        re-shards a checkpoint of another process count, from one directory holding all shards)."""
        from lmctl.core.sharding import all_gather, load_sharded

        local = path if self.config.resume != "auto" else ckpt.checkpoints_dir(self.out) / path.name
        present = all_gather(local.is_dir())
        if not all(present):
            missing = [rank for rank, ok in enumerate(present) if not ok]
            raise UsageError(
                f"process {missing[0]} has no {local}: each machine resumes from its own --out, which must hold "
                f"this step's checkpoint"
            )
        load_sharded(self.model, self.optimizer, local, saved_world=int(state.get("world_size", 1)))

    def _load_rng(self, path: Path, step: int) -> None:
        """Every process's RNG state, read by the main process and handed out; a process the
        checkpoint did not have (more processes now) starts from seed, step and rank."""
        import torch

        from lmctl.core.sharding import broadcast_from_main, set_rng_state

        states = None
        if self.is_main:
            states = [ckpt.read_rng(path, rank) for rank in range(max(self.world, ckpt.saved_rng_ranks(path)))]
        states = broadcast_from_main(states)
        mine = states[self.rank] if self.rank < len(states) else None
        if mine is not None:
            set_rng_state(mine, self.collate_generator)
        else:
            seed = self.config.seed + 1_000_003 * (self.rank + 1) + step
            torch.manual_seed(seed)
            self.collate_generator.manual_seed(seed)

    # ------------------------------------------------------------------ plan
    def memory_estimate(self) -> Any:
        """The peak-memory estimate of this run (:func:`lmctl.core.memory_plan.estimate_memory`),
        or None for a config the formula cannot read (a plugin architecture with other names)."""
        from lmctl.kit.losses import fused_output_layer

        model = self.accelerator.unwrap_model(self.model) if hasattr(self, "accelerator") else self.model
        try:
            return self._memory_estimate(model, fused_output_layer(model) is not None)
        except (ValueError, TypeError, KeyError, ZeroDivisionError):
            return None

    def _memory_estimate(self, model: Any, fused_loss: bool) -> Any:
        return estimate_run_memory(
            model.config.to_dict(),
            config=self.config,
            lora=self.lora,
            micro_batch=self.micro_batch,
            block_size=self.block_size,
            precision=self.precision,
            fused_loss=fused_loss,
            device=str(self.accelerator.device),
            total_params=self.n_params,
            trainable_params=self.n_trainable,
        )

    def plan(self) -> dict[str, Any]:
        tokens_per_step = self.global_batch * self.block_size
        memory = self.memory if hasattr(self, "memory") else self.memory_estimate()
        plan = {
            "model": self.config.model + (" (from scratch)" if self.config.from_scratch else ""),
            "family": self.family.name,
            "parameters": self.n_params,
            "trainable parameters": trainable_summary(self.n_trainable, self.n_params),
            "adapters": lora_summary(self.lora),
            "activation checkpointing": "on" if self.config.activation_checkpointing else "off",
            "estimated peak memory": memory_summary(memory),
            "device": f"{self.accelerator.device} x {self.world}",
            "strategy": self.strategy.describe()
            + ("; one process: nothing to shard, checkpoints in the sharded format" if self.strategy.name == "fsdp" and not self.sharded else ""),
            "processes": self._processes_line(),
            "parameter bytes": self._parameter_bytes_line(),
            "precision": self.precision,
            "block size": self.block_size,
            "batch": f"{self.micro_batch} x {self.grad_accum} accum x {self.world} proc = {self.global_batch} seq",
            "tokens per step": tokens_per_step,
            "optimizer steps": self.total_steps,
            "tokens per epoch": len(self.train_source) * self.block_size,
            "epochs": round(self.total_steps * self.global_batch / len(self.train_source), 3),
            "lr": f"{self.lr:g} -> {self.min_lr:g} ({self.config.schedule}), warmup {self.warmup}",
            "eval": f"every {self.eval_every} steps, {self.config.eval_batches} batches" if self.eval_every else "off",
            "save": f"every {self.save_every} steps, keep {self.config.keep_last}" if self.save_every else "at the end",
            "resume from": (getattr(self, "resumed_from", None) or "-")
            + (f" ({self.elastic_note})" if getattr(self, "elastic_note", None) else ""),
        }
        if self.world == 1 and self.strategy.name == "ddp" and not self.asked_world:  # one process: nothing to spread
            for key in ("strategy", "processes", "parameter bytes"):
                del plan[key]
        return plan

    def _processes_line(self) -> str:
        machines = self.config.num_machines if self.world > 1 else 1
        text = f"{self.world} on {machines} machine{'s' if machines > 1 else ''}"
        if self.asked_world and self.asked_world != self.world:
            text += f" (asked for {self.asked_world}: the launcher started {self.world})"
        return text

    def _parameter_bytes_line(self) -> str:
        per_process = self.parameter_bytes["per_process"]
        full = self.parameter_bytes["model"]
        if len(set(per_process)) == 1:
            return f"{per_process[0]:,} per process of {full:,}"
        return f"{', '.join(f'{b:,}' for b in per_process)} per process of {full:,}"

    # ------------------------------------------------------------------ loop
    def run(self) -> TrainResult:
        """The loop: for each optimizer step, set the lr, accumulate micro-batches, check, step;
        then log, evaluate, checkpoint and stop as the intervals say."""
        config = self.config
        # Elapsed time continues across resumes: the checkpoint holds the seconds trained before.
        started = time.perf_counter() - self.elapsed_before
        self.started = started
        self._start_outputs()
        meter = IntervalMeter(self, started)
        step = self.start_step
        result = TrainResult(out=self.out, steps=step, total_steps=self.total_steps)
        previous_handlers = install_signal_handlers(self)
        try:
            while step < self.total_steps:
                lr = learning_rate(
                    step, lr=self.lr, min_lr=self.min_lr, warmup=self.warmup, total=self.total_steps, schedule=config.schedule
                )
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                step_loss, grad_norm, step_extra = self._train_step(step)
                # The one per-step host sync.  With fp16's loss scaling, an infinite gradient is
                # the scaler's business: optimizer.step() skips that update and lowers the scale.
                if not step_is_finite(step_loss, grad_norm, loss_scaled=self.precision == "fp16"):
                    self.optimizer.zero_grad(set_to_none=True)
                    self._on_nan(step)
                    step += 1
                    continue
                self.nan_in_a_row = 0
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                step += 1
                self.display.progress(step)
                meter.add(step, step_loss, step_extra)
                if step % config.log_every == 0 or step == self.total_steps:
                    self._log(meter.event(step, lr, grad_norm))
                self._between_steps(step)
        except StopTraining as stop:
            result.interrupted = stop.reason
            if stop.reason != "nan":
                self.save_checkpoint(step)
        finally:
            restore_signal_handlers(previous_handlers)
        return self._finish(result, step, meter, started)

    def _start_outputs(self) -> None:
        """run.json (status running), the display, callbacks and metrics.jsonl."""
        self.memory = self.memory_estimate()
        self.callbacks = _callbacks(self.config.callbacks) if self.is_main else {}
        if self.is_main or (self.sharded_layout and self.accelerator.is_local_main_process):
            self.out.mkdir(parents=True, exist_ok=True)
            ckpt.clean_temporary(self.out)
        self.accelerator.wait_for_everyone()
        if self.is_main:
            self._warn_if_disk_is_short()
            if self.config.resume:
                from lmctl.core.run_dir import remove_final_model

                # An earlier completion's final model, card and curves would now disagree with
                # run.json and metrics.jsonl; its weights are in the checkpoint being resumed.
                remove_final_model(self.out)
            write_json_atomic(self.out / "run.json", self._run_record(status="running"))
        self.status(None)
        self.display = (
            self.display_factory(self.is_main) if self.display_factory and not self.quiet else SilentDisplay()
        )
        plan = self.plan()
        self.display.start(plan)
        warning = self.memory and memory_warning(self.memory.total, available_memory_bytes(self.accelerator.device))
        if warning:
            self.display.message(warning)
        # Where the run stands before its first step: the dashboard's step counter, total and
        # (after a resume) the whole run's best evaluation and elapsed time.
        self.display.update(
            {
                "step": self.start_step, "total_steps": self.total_steps, "best_eval_loss": self.best_eval_loss,
                "best_eval_step": self.best_step, "elapsed_s": round(self.elapsed_before, 2), "initial": True,
            }
        )  # fmt: skip
        if getattr(self, "budget_change", None):
            before, after = self.budget_change
            self.display.message(
                f"resuming at step {self.start_step} with a new budget: {before} -> {after} steps; the {self.config.schedule} "
                f"learning-rate schedule now runs over {after} steps (lr at step {self.start_step}: "
                f"{learning_rate(self.start_step, lr=self.lr, min_lr=self.min_lr, warmup=self.warmup, total=self.total_steps, schedule=self.config.schedule):.3g})"
            )
        self._callback("on_train_begin", self.callback_info(plan))
        self.metrics_file = None
        if self.is_main:
            from lmctl.workflows.runs import open_metrics_log

            self.metrics_file = open_metrics_log(self.out, self.start_step)

    def _between_steps(self, step: int) -> None:
        """Evaluate, checkpoint, stop early or on a signal, as the intervals say."""
        config = self.config
        evaluated = False
        if self.eval_every and step % self.eval_every == 0 and step < self.total_steps:
            self._evaluate(step, max_batches=config.eval_batches)
            evaluated = True
        if self.save_every and step % self.save_every == 0 and step < self.total_steps:
            self.save_checkpoint(step)
        if evaluated and config.early_stopping_patience and self.evals_without_improvement >= config.early_stopping_patience:
            raise StopTraining("early-stopping")
        if self._should_stop():
            raise StopTraining(self.stop_signal or "signal")

    def _finish(self, result: TrainResult, step: int, meter: IntervalMeter, started: float) -> TrainResult:
        """Final evaluation and model, run.json, callbacks; close everything."""
        result.steps = step
        result.final_train_loss = meter.last_train_loss
        if result.interrupted is None and not self._has_checkpoint(step):
            # The last step's full state, so that `--resume auto --max-steps N` can continue a finished run.
            self.save_checkpoint(step)
        if result.interrupted in (None, "early-stopping"):
            if self.val_split is not None:
                result.final_eval = self._evaluate(step, max_batches=None, final=True)
            self.save_final(result)
        result.tokens_per_s = meter.tokens_per_s()
        result.peak_memory_bytes = peak_memory_bytes(self.accelerator.device)
        result.estimated_peak_memory_bytes = self.memory.total if self.memory is not None else None
        result.wall_seconds = round(time.perf_counter() - started, 2)
        result.best_eval_loss = self.best_eval_loss
        best_dir = ckpt.checkpoints_dir(self.out) / f"step-{self.best_step}" if self.best_step else None
        # Only a checkpoint that exists (the best step is kept when it was saved; an evaluation
        # between two saves has none).
        result.best_checkpoint = str(best_dir) if best_dir is not None and best_dir.is_dir() else None
        result.final_files = getattr(self, "final_files", None)
        result.metrics = self.metrics
        if self.is_main:
            write_json_atomic(self.out / "run.json", self._run_record(status=result.interrupted or "finished", result=result))
        self._callback(
            "on_train_end",
            {
                "steps": step,
                "interrupted": result.interrupted,
                "out": str(self.out),
                "model": self.accelerator.unwrap_model(self.model),
                "final_eval": result.final_eval,
                "final_train_loss": result.final_train_loss,
            },
        )
        self.display.close()
        if self.metrics_file:
            self.metrics_file.close()
        self._end_training()
        return result

    def _end_training(self) -> None:
        """``Accelerator.end_training`` (trackers finished) without its ``destroy_process_group``,
        then end together: no process leaves while another may still talk to it.

        The process group is left alive: its owner is whoever created it (the launched process, or
        the caller's own script), and destroying a gloo group while a run-loop thread still
        releases a finished collective's tensors deadlocks (the destructor joins that thread while
        holding the GIL the thread waits for; 2 of 27 two-process DDP runs hung at exit).
        ``lmctl``'s workers end with ``os._exit`` (``lmctl.cli.endings.run_worker_and_exit``), so
        the group is never torn down at all."""
        for tracker in self.accelerator.trackers:
            tracker.finish()
        if self.world > 1:
            self.accelerator.wait_for_everyone()

    # ------------------------------------------------------------------ pieces
    def _train_step(self, step: int) -> tuple[Any, Any, dict[str, Any]]:
        """Forward/backward over the step's micro-batches and clip; on out-of-memory, halve the
        micro-batch and double accumulation (same examples, same effective batch) and retry."""
        import torch

        while True:
            try:
                return self._accumulate(step)
            except torch.OutOfMemoryError:
                self.optimizer.zero_grad(set_to_none=True)
                if self.micro_batch == 1 or self.micro_batch % 2:
                    raise LmctlError(
                        f"out of memory at step {step + 1} with a micro-batch of {self.micro_batch}; "
                        "lower --block-size or use a smaller model"
                    ) from None
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                self.micro_batch //= 2
                self.grad_accum *= 2
                self.display.message(
                    f"out of memory at step {step + 1}: micro-batch halved to {self.micro_batch}, "
                    f"gradient accumulation doubled to {self.grad_accum} (same effective batch)"
                )
                self._log({"step": step, "total_steps": self.total_steps, "oom_micro_batch": self.micro_batch})

    def _to_device(self, value: Any) -> Any:
        """A batch entry on the training device (tensors through pinned memory on a GPU)."""
        import torch

        if isinstance(value, torch.Tensor):
            return host_to_device(value, self.accelerator.device)
        return value.to(self.accelerator.device, non_blocking=True) if hasattr(value, "to") else value

    def _accumulate(self, step: int) -> tuple[Any, Any, dict[str, Any]]:
        import torch

        from lmctl.core.sharding import clip_grad_norm, set_gradient_sync

        acc = self.accelerator
        step_loss = torch.zeros((), device=acc.device)
        extra: dict[str, Any] = {}
        for micro in range(self.grad_accum):
            # Position of this micro-batch in the global example order (see the module docstring).
            start = ((step * self.grad_accum + micro) * self.world + self.rank) * self.micro_batch
            input_ids, mask = self.train_source.batch(*self.order.indices(start, self.micro_batch))
            batch = self.collate(input_ids, mask, self.collate_generator)
            batch = {k: self._to_device(v) for k, v in batch.items()}
            last = micro == self.grad_accum - 1
            if self.sharded:
                set_gradient_sync(self.model, last)  # reduce-scatter on the last micro-batch only
                sync: Any = contextlib.nullcontext()
            else:
                # Accelerate's no_sync is a no-op at world size 1: use a DDP wrapper's own (above).
                own = self.world == 1 and isinstance(self.model, torch.nn.parallel.DistributedDataParallel)
                sync = (
                    contextlib.nullcontext()
                    if last
                    else (self.model.no_sync() if own else acc.no_sync(self.model))
                )
            with sync:
                # The whole loss under autocast, not only the model's forward (which Accelerate
                # wraps): a family's own output layer (the fused cross-entropy) runs in bf16 too.
                with acc.autocast():
                    out = self.family.compute_loss(self.model, batch, self.options)
                # DeepSpeed's engine divides by its own gradient_accumulation_steps (set to ours).
                acc.backward(out.loss if self.strategy.name == "deepspeed" else out.loss / self.grad_accum)
            step_loss += out.loss.detach() / self.grad_accum
            for key, value in out.metrics.items():
                extra[key] = extra.get(key, 0.0) + value.detach().float() / self.grad_accum
        if self.config.grad_clip > 0 and self.sharded:
            grad_norm = clip_grad_norm(self.model.parameters(), self.config.grad_clip)
        elif self.config.grad_clip > 0:
            grad_norm = acc.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            if grad_norm is None:  # DeepSpeed clips inside its engine and reports no norm here
                grad_norm = torch.zeros((), device=acc.device)
        else:
            grad_norm = torch.zeros((), device=acc.device)
        return step_loss, grad_norm, extra

    def _log(self, event: dict[str, Any]) -> None:
        self.metrics.append(event)
        if self.is_main:
            assert self.metrics_file is not None
            self.metrics_file.write(json.dumps(event) + "\n")
            self.metrics_file.flush()
            self.display.update(event)
            self._callback("on_log", event)
            scalars = {k: v for k, v in event.items() if isinstance(v, (int, float)) and k != "step"}
            self.accelerator.log(scalars, step=event["step"])

    def _evaluate(self, step: int, *, max_batches: int | None, final: bool = False) -> dict[str, Any]:
        from lmctl.core.precision import autocast_context
        from lmctl.workflows.evaluate import evaluate_model

        model = self.accelerator.unwrap_model(self.model)
        result = evaluate_model(
            model,
            self.family,
            self.tokenizer,
            self.val_split,
            block_size=self.block_size,
            batch_size=self.micro_batch,
            max_batches=max_batches,
            seed=self.config.seed,
            options=self.options,
            autocast=lambda: autocast_context(self.precision, self.accelerator.device),
            device=self.accelerator.device,
        )
        loss = float(result["loss"])
        event = {"step": step, "total_steps": self.total_steps, "eval/loss": loss, "eval/perplexity": safe_exp(loss)}
        for key, value in result.items():
            if key not in ("loss", "perplexity") and isinstance(value, (int, float)):
                event[f"eval/{key}"] = value
        if final:
            event["final"] = True
        elif self.best_eval_loss is None or loss < self.best_eval_loss:
            self.best_eval_loss, self.best_step = loss, step
            self.evals_without_improvement = 0
        else:
            self.evals_without_improvement += 1
        event["best_eval_loss"] = self.best_eval_loss
        self._log(event)
        return result

    def _on_nan(self, step: int) -> None:
        self.nan_in_a_row += 1
        self.nan_skipped += 1
        if self.config.on_nan == "stop":
            self.display.message(
                f"non-finite loss or gradient at step {step + 1}; stopped. The last good state is saved "
                f"(resume with --resume auto --on-nan skip, or start a new --out with a lower --lr)"
            )
            self.save_checkpoint(step)
            raise StopTraining("nan")
        self.display.message(f"non-finite loss or gradient at step {step + 1}: step skipped ({self.nan_in_a_row} in a row)")
        if self.nan_in_a_row >= 10:
            self.display.message("10 non-finite steps in a row: stopping (try a lower --lr)")
            # The weights are still those of the last good step (skipped steps never reach them).
            self.save_checkpoint(step)
            raise StopTraining("nan")

    def _should_stop(self) -> bool:
        import torch

        if self.world == 1:
            return self.stop_signal is not None
        flag = torch.tensor([1.0 if self.stop_signal else 0.0], device=self.accelerator.device)
        return bool(self.accelerator.reduce(flag, reduction="sum").item() > 0)

    def _callback(self, method: str, info: dict[str, Any]) -> None:
        for name, callback in list(self.callbacks.items()):
            fn = getattr(callback, method, None)
            if fn is None:
                continue
            try:
                fn(dict(info))
            except Exception as exc:  # noqa: BLE001 - a broken callback must not end training
                self.display.message(f"warning: callback '{name}' ({type(callback).__name__}.{method}) failed ({exc}); disabled")
                del self.callbacks[name]
                self.failed_callbacks[name] = f"{method}: {type(exc).__name__}: {exc}"

    def callback_info(self, plan: dict[str, Any]) -> dict[str, Any]:
        """What ``on_train_begin`` receives: stable machine keys (documented in the
        ``register_callbacks`` hook; keys are only ever added) plus the dashboard's ``plan``."""
        c = self.config
        return {
            "out": str(self.out),
            "model": self.accelerator.unwrap_model(self.model),
            "tokenizer": self.tokenizer,
            "model_name": c.model,
            "from_scratch": c.from_scratch,
            "family": self.family.name,
            "family_options": self.options.values(),
            "parameters": self.n_params,
            "device": str(self.accelerator.device),
            "world_size": self.world,
            "precision": self.precision,
            "block_size": self.block_size,
            "micro_batch": self.micro_batch,
            "grad_accum": self.grad_accum,
            "global_batch": self.global_batch,
            "tokens_per_step": self.global_batch * self.block_size,
            "optimizer_steps": self.total_steps,
            "start_step": self.start_step,
            "tokens_per_epoch": len(self.train_source) * self.block_size,
            "lr": self.lr,
            "min_lr": self.min_lr,
            "schedule": c.schedule,
            "warmup_steps": self.warmup,
            "eval_every": self.eval_every,
            "save_every": self.save_every,
            "seed": c.seed,
            "resumed_from": getattr(self, "resumed_from", None),
            "callbacks": list(self.callbacks),
            "config": c.to_dict(),
            "plan": dict(plan),
        }

    def save_checkpoint(self, step: int) -> Path | None:
        """Write ``checkpoints/step-N`` atomically.  Whole weights (DDP): the main process alone
        writes, with every process's RNG state gathered to it, so other machines need no shared
        filesystem.  Sharded (FSDP): every process writes its shard into its machine's --out."""
        from lmctl.core.sharding import gather_to_main, rng_state, save_sharded

        acc = self.accelerator
        acc.wait_for_everyone()
        rng_states = gather_to_main(rng_state(self.collate_generator))
        tmp, writes = self._checkpoint_tmp(step)
        failure = None
        try:
            if self.sharded_layout:
                assert tmp is not None or not writes
                save_sharded(self.model, self.optimizer, tmp)
        except Exception as exc:  # noqa: BLE001 - every writer's way of failing (see _failed_save)
            failure = exc
        failed = self._any_process(failure is not None)
        final = None
        if writes and tmp is not None:
            try:
                if failed:
                    raise failure or OSError("another process could not write its shard")
                self._write_checkpoint(tmp, step, rng_states)
                final = ckpt.commit(tmp, self.out, step)
            except Exception as exc:  # noqa: BLE001 - every writer's way of failing (see _failed_save)
                # A failed save (disk full, quota, I/O error) must not touch the previous checkpoints.
                shutil.rmtree(tmp, ignore_errors=True)
                failure = exc
            else:
                protect = {self.best_step} if self.best_step else set()
                ckpt.prune(self.out, self.config.keep_last, protect)
                if self.is_main:
                    self._callback("on_save", {"step": step, "path": str(final), "out": str(self.out)})
        if self._any_process(failure is not None):
            if tmp is not None and not writes:
                tmp = None  # the process that commits removes the directory
            self._failed_save(failure or OSError("another process could not write its part"), tmp, f"the checkpoint of step {step}")
        acc.wait_for_everyone()
        return final

    def model_info(self) -> dict[str, Any]:
        """What ``lmctl_model.json`` records beside every saved model (see lmctl.core.run_dir)."""
        split = self.data.manifest.get("document_split")
        return {
            "document_split": None if split in (None, "auto") else split,
            "line_by_line": bool(self.data.manifest.get("line_by_line", self.config.line_by_line)),
            "block_size": self.block_size,
        }

    def _save_model(self, directory: Path) -> None:
        from lmctl.core.run_dir import write_model_info

        self.family.save(self.accelerator.unwrap_model(self.model), self.tokenizer, directory)
        write_model_info(directory, self.model_info())

    def _failed_save(self, exc: BaseException, tmp: Path | None, what: str) -> None:
        """A failed save (full disk, quota, I/O error) removes its partial directory, which holds
        the very space that ran out, and never touches the checkpoints before it; then it raises
        one line saying what is intact and what to do."""
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        previous = ckpt.list_checkpoints(self.out)
        intact = (
            f"the last good checkpoint, step {previous[-1][0]} ({previous[-1][1]}), is intact"
            if previous
            else "there is no earlier checkpoint"
        )
        needed = self.checkpoint_bytes()
        if is_out_of_space(exc, self.out, needed=needed):
            free = free_bytes(self.out)
            room = f" and {human_bytes(free)} are free" if free is not None else ""
            raise LmctlError(
                f"could not save {what} in {self.out}: {space_reason(exc)}; {intact}. A checkpoint needs about "
                f"{human_bytes(needed)}{room}: free space, then continue with --resume auto"
            ) from None
        if isinstance(exc, OSError):
            raise LmctlError(
                f"could not save {what} ({exc.strerror or exc}); {intact}: fix that, then continue with --resume auto"
            ) from None
        raise exc

    def checkpoint_bytes(self) -> int:
        """One checkpoint's size: the newest one's on disk, else estimated from the parameters."""
        previous = ckpt.list_checkpoints(self.out)
        if previous:
            return tree_bytes(previous[-1][1])
        model = getattr(self, "model", None)
        weight_bytes = 4
        if model is not None:
            first = next(iter(self.accelerator.unwrap_model(model).parameters()), None)
            weight_bytes = first.element_size() if first is not None else 4
        return checkpoint_bytes_estimate(getattr(self, "n_params", 0), weight_bytes)

    def _warn_if_disk_is_short(self) -> None:
        """At start: checkpoints kept plus the one being written must fit under --out."""
        free = free_bytes(self.out)
        if free is None:
            return
        each = self.checkpoint_bytes()
        count = (max(self.config.keep_last, 0) + 1) if self.save_every else 1
        needed = each * count
        if free < needed:
            self.warn(
                f"warning: {human_bytes(free)} free under {self.out}, but {count} checkpoint(s) of about "
                f"{human_bytes(each)} (--keep-last {self.config.keep_last} + the one being written) need "
                f"{human_bytes(needed)}: free space or lower --keep-last, or a save will fail"
            )

    def _has_checkpoint(self, step: int) -> bool:
        """Whether the run already holds a complete checkpoint of ``step``: one answer on every
        process, since saving is a collective.  Whole weights live in the main process's --out only
        (another machine's --out is empty: its own answer would be no); sharded checkpoints are on
        every machine, and a machine that lacks its part makes all save again."""
        here = any(s == step for s, _ in ckpt.list_checkpoints(self.out))
        if self.world == 1:
            return here
        if self.sharded_layout:
            return not self._any_process(not here)
        from lmctl.core.sharding import broadcast_from_main

        return bool(broadcast_from_main(here))

    def _any_process(self, flag: bool) -> bool:
        from lmctl.core.sharding import all_gather

        return any(all_gather(flag)) if self.world > 1 else flag

    def _checkpoint_tmp(self, step: int) -> tuple[Path | None, bool]:
        """The temporary directory this process writes into, and whether it commits it.  Whole
        weights: the main process's own.  Sharded: one per machine, shared by its processes; the
        main process makes it and marks it with a token, and a machine that does not see the token
        has its own filesystem and makes its own (several machines without a shared filesystem)."""
        import uuid

        from lmctl.core.sharding import broadcast_from_main

        if not self.sharded:
            return (ckpt.temporary_dir(self.out, step) if self.is_main else None), self.is_main
        tmp = ckpt.checkpoints_dir(self.out) / f".tmp-step-{step}"
        token = uuid.uuid4().hex if self.is_main else None
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            (tmp / ".owner").write_text(token or "")
        token = broadcast_from_main(token)
        self.accelerator.wait_for_everyone()
        writes = self.is_main
        if self.accelerator.is_local_main_process and not self.is_main:
            owner = tmp / ".owner"
            if not (owner.is_file() and owner.read_text() == token):  # this machine has its own --out
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
                writes = True
        self.accelerator.wait_for_everyone()
        return tmp, writes

    def _write_checkpoint(self, tmp: Path, step: int, rng_states: list[Any] | None = None) -> None:
        from lmctl.core.sharding import merge_rank_metadata, rng_state

        (tmp / ".owner").unlink(missing_ok=True)
        if self.sharded_layout:
            if all((tmp / f"__{rank}.metadata").is_file() for rank in range(self.world)):
                # Every shard is here (one machine, or a shared filesystem): the global metadata
                # lets this checkpoint resume on another number of processes.
                merge_rank_metadata(tmp, self.world)
        else:
            self._save_model(tmp)
            if self.strategy.name != "deepspeed":
                optimizer = self.optimizer.optimizer if hasattr(self.optimizer, "optimizer") else self.optimizer
                ckpt.save_optimizer(optimizer, tmp)
        for rank, rng in enumerate(rng_states or ([rng_state(self.collate_generator)] if self.is_main else [])):
            ckpt.write_rng(tmp, rank, rng)
        state = {
            "step": step,
            "samples_seen": step * self.global_batch,
            "accumulation_phase": 0,  # checkpoints are taken between optimizer steps only
            "world_size": self.world,
            "strategy": self.strategy.name,
            "layout": "sharded" if self.sharded_layout else "whole",
            "micro_batch": self.micro_batch,
            "grad_accum": self.grad_accum,
            "best_eval_loss": self.best_eval_loss,
            "best_step": self.best_step,
            "evals_without_improvement": self.evals_without_improvement,
            "fingerprint": self.fingerprint,
            "precision": self.precision,
            "elapsed_s": round(time.perf_counter() - self.started, 2) if hasattr(self, "started") else self.elapsed_before,
            "lmctl_version": library_versions().get("lmctl"),
        }
        # Written last: a checkpoint counts as complete only with its trainer_state.json.
        (tmp / ckpt.STATE_FILE).write_text(json.dumps(state, indent=2))

    def save_final(self, result: TrainResult) -> None:
        """The final model as a plain Hugging Face directory in OUT, plus the model card."""
        acc = self.accelerator
        acc.wait_for_everyone()
        model = acc.unwrap_model(self.model)
        if self.sharded:  # consolidated: the shards gathered on the main process (a collective)
            from lmctl.core.sharding import full_model_state, unsharded_copy

            state = full_model_state(model)
            if self.is_main:
                model = unsharded_copy(model, state)
            del state
        if not self.is_main:
            return
        tmp = self.out / f".final-tmp-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        try:
            from lmctl.core.run_dir import write_model_info

            self.family.save(model, self.tokenizer, tmp)
            write_model_info(tmp, self.model_info())
            (tmp / "README.md").write_text(model_card(self, result))
            ckpt.fsync_tree(tmp)
        except Exception as exc:
            self._failed_save(exc, tmp, f"the final model to {self.out}")
        self.final_files = sorted(entry.name for entry in tmp.iterdir())
        for entry in tmp.iterdir():
            target = self.out / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(entry, target)
        tmp.rmdir()
        self._write_curves()

    def _write_curves(self) -> None:
        """``OUT/curves.png`` when matplotlib is installed (optional: the `plot` extra)."""
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            return
        from lmctl.workflows.runs import write_png

        if self.metrics_file:
            self.metrics_file.flush()
        try:
            write_png([self.out], self.out / "curves.png")
        except Exception as exc:  # noqa: BLE001 - a plot must never fail a finished training run
            self.display.message(f"warning: could not draw curves.png ({exc})")

    def model_type(self) -> str:
        return getattr(self.accelerator.unwrap_model(self.model).config, "model_type", "?")

    def _run_record(self, *, status: str, result: TrainResult | None = None) -> dict[str, Any]:
        record = {
            "status": status,
            "config": self.config.to_dict(),
            "resolved": {
                "family": self.family.name,
                "family_options": self.options.values(),
                "block_size": self.block_size,
                "lr": self.lr,
                "min_lr": self.min_lr,
                "warmup_steps": self.warmup,
                "total_steps": self.total_steps,
                "eval_every": self.eval_every,
                "save_every": self.save_every,
                "precision": self.precision,
                "precision_timings_s": self.precision_timings,
                "precision_source": self.precision_source,
                "world_size": self.world,
                "micro_batch": self.micro_batch,
                "grad_accum": self.grad_accum,
                "global_batch": self.global_batch,
                "asked_world_size": self.asked_world,
                "strategy": self.strategy.name,
                "strategy_source": self.strategy.source,
                "strategy_settings": self.strategy.settings,
                "num_machines": self.config.num_machines if self.world > 1 else 1,
                "parameter_bytes_per_process": self.parameter_bytes["per_process"],
                "parameter_bytes": self.parameter_bytes["model"],
                "parameters": self.n_params,
                "trainable_parameters": self.n_trainable,
                "lora": self.lora.record() if self.lora is not None else None,
                "activation_checkpointing": self.config.activation_checkpointing,
                "memory_estimate": memory_record(getattr(self, "memory", None)),
                "data": str(self.data.path.resolve()),
                "data_hash": prepared_data_hash(self.data),
            },
            # The callbacks that ran (chosen with --callback), and those disabled by an error.
            "callbacks": list(getattr(self, "callbacks", {})) + list(getattr(self, "failed_callbacks", {})),
            "callbacks_failed": dict(getattr(self, "failed_callbacks", {})),
            "versions": library_versions(),
        }
        if result is not None:
            record["result"] = {
                k: v for k, v in dataclasses.asdict(result).items() if k not in ("metrics", "out")
            }
        return record


class IntervalMeter:
    """Training metrics between two log lines: summed on the device, read once per log event."""

    def __init__(self, trainer: Trainer, started: float) -> None:
        import torch

        self.trainer = trainer
        self.started = started
        self.loss = torch.zeros((), device=trainer.accelerator.device)
        self.extra: dict[str, Any] = {}
        self.steps = 0
        self.interval_start = time.perf_counter()
        self.loop_start: float | None = None  # after the first step, which pays one-off costs
        self.first_step = 0
        self.run_tokens = 0
        self.last_train_loss: float | None = None

    def add(self, step: int, loss: Any, extra: dict[str, Any]) -> None:
        t = self.trainer
        for key, value in extra.items():
            self.extra[key] = self.extra.get(key, 0.0) + value
        self.loss += loss
        self.steps += 1
        self.run_tokens += t.global_batch * t.block_size
        if self.loop_start is None:
            self.loop_start = time.perf_counter()  # the ETA and throughput skip the first step
            self.run_tokens = 0
            self.first_step = step

    def event(self, step: int, lr: float, grad_norm: Any) -> dict[str, Any]:
        """The log event of the interval that ends at ``step`` (means over all processes); resets."""
        t = self.trainer
        acc = t.accelerator
        self.last_train_loss = float(acc.reduce(self.loss / max(1, self.steps), reduction="mean"))
        now = time.perf_counter()
        elapsed = now - self.interval_start
        event = {
            "step": step,
            "total_steps": t.total_steps,
            "epoch": round(step * t.global_batch / len(t.train_source), 4),
            "train/loss": self.last_train_loss,
            "lr": lr,
            "grad_norm": float(grad_norm),
            "tokens_per_s": round(self.steps * t.global_batch * t.block_size / max(elapsed, 1e-9), 1),
            "elapsed_s": round(now - self.started, 2),
        }
        if t.family.loss_is_nll:
            event["train/perplexity"] = safe_exp(self.last_train_loss)
        for key, value in self.extra.items():
            event[f"train/{key}"] = float(acc.reduce(value / max(1, self.steps), reduction="mean"))
        if self.loop_start is not None and step > self.first_step:
            per_step = (now - self.loop_start) / (step - self.first_step)
            event["eta_s"] = round(per_step * (t.total_steps - step), 1)
        if t.nan_skipped:
            event["nan_skipped"] = t.nan_skipped
        self.loss.zero_()
        self.extra = {}
        self.steps = 0
        self.interval_start = time.perf_counter()
        return event

    def tokens_per_s(self) -> float | None:
        if self.loop_start is None or not self.run_tokens:
            return None
        return round(self.run_tokens / max(1e-9, time.perf_counter() - self.loop_start), 1)


class SilentDisplay:
    """What the trainer reports to: ``start(plan)``, ``update(event)``, ``progress(step)``,
    ``message(text)``, ``close()``.  This one shows nothing (library use, other processes); the
    CLI passes a factory of its dashboard (:func:`lmctl.cli.display.make_train_display`)."""

    def start(self, plan: dict[str, Any]) -> None: ...
    def update(self, event: dict[str, Any]) -> None: ...
    def progress(self, step: int) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...


DisplayFactory = Callable[[bool], Any]
"""``factory(main_process) -> display``: the CLI's dashboard for the main process."""


def _callbacks(names: list[str]) -> dict[str, Any]:
    """The callbacks the run chose by name (``--callback NAME``); none by default."""
    from lmctl.plugins.registry import select_callbacks

    return select_callbacks(names)


# --- entry point ----------------------------------------------------------------------------------


def train(
    config: TrainConfig,
    *,
    quiet: bool = False,
    display: DisplayFactory | None = None,
    prepare_progress: Any = None,
    warn: Callable[[str], None] | None = None,
    status: Callable[[str | None], None] | None = None,
) -> TrainResult:
    """Train a model as ``config`` says and return what happened.  See the module docstring.

    ``display(main_process)`` makes what progress is reported to (see :class:`SilentDisplay`);
    without it, or with ``quiet``, nothing is shown (metrics.jsonl is written all the same).
    ``prepare_progress`` receives the progress of preparing raw files (see
    :class:`lmctl.workflows.prepare.SilentProgress`).  ``warn(line)`` receives warnings and notes
    that must be seen even when quiet (default: stderr).  ``status(text)`` is told what the run waits
    for before its first step (``status(None)``: nothing any more)."""
    from lmctl.core.hub import apply_offline

    config.validate()
    _callbacks(config.callbacks)  # an unknown --callback fails before any work
    apply_offline(config.offline)
    check_inputs(config)
    warn = warn or stderr_line
    # The run owns --out until it ends (see lmctl.core.run_lock); under --num-processes the
    # launching process holds it for its workers, and under --num-machines machine 0's only.
    with run_lock(config.out, command="lmctl train", note=warn, machine_rank=config.machine_rank):
        if (config.num_processes > 1 or config.num_machines > 1) and not started_by_a_launcher():
            return launch_processes(config)
        trainer = Trainer(
            config, quiet=quiet, display=display, prepare_progress=None if quiet else prepare_progress,
            status=None if quiet else status,
        )  # fmt: skip
        trainer.warn = warn
        launcher_fsdp = os.environ.get("ACCELERATE_USE_FSDP")  # masked while lmctl shards (see _setup_strategy)
        try:
            trainer.setup()
            return trainer.run()
        finally:
            if launcher_fsdp is not None:
                os.environ["ACCELERATE_USE_FSDP"] = launcher_fsdp


def stderr_line(text: str) -> None:
    """The default for warnings and notes a user must see (the CLI's display may be quiet)."""
    sys.stderr.write(text.rstrip("\n") + "\n")
    sys.stderr.flush()


def check_inputs(config: TrainConfig) -> None:
    """A missing or empty data file is reported before any model is downloaded or built."""
    from lmctl.core.prepared import PreparedData
    from lmctl.workflows.prepare import resolve_inputs

    if len(config.train) == 1 and PreparedData.is_prepared(config.train[0]):
        return
    resolve_inputs([item for item in config.train if not PreparedData.is_prepared(item)])
    if config.validation:
        resolve_inputs(list(config.validation), role="--validation")


