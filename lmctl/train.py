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
import hashlib
import json
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmctl import checkpoint as ckpt
from lmctl.errors import LmctlError, UsageError
from lmctl.families.base import Family, FamilyOptions, parse_override
from lmctl.train_config import TrainConfig

# Settings that must not change between a run and its resumption.
FINGERPRINT_KEYS = (
    "model", "family", "from_scratch", "model_config", "preset", "block_size", "global_batch", "seed",
    "data_hash", "schedule", "lr", "min_lr", "warmup_steps", "total_steps", "weight_decay", "beta1", "beta2",
    "line_by_line", "mlm_probability", "plm_probability", "max_span_length", "generator_size",
    "discriminator_weight", "label_smoothing", "dropout",
)  # fmt: skip


@dataclass
class TrainResult:
    """What :func:`train` returns (and ``run.json`` records)."""

    out: Path
    steps: int
    total_steps: int
    final_train_loss: float | None = None
    final_eval: dict[str, Any] | None = None
    best_eval_loss: float | None = None
    best_checkpoint: str | None = None
    interrupted: str | None = None  # "SIGINT" / "SIGTERM" / "nan" / "early-stopping"
    wall_seconds: float = 0.0
    tokens_per_s: float | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)


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


# --- data order -----------------------------------------------------------------------------------


class ExampleOrder:
    """A seeded permutation of ``n`` examples per epoch; position ``p`` -> example index."""

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.seed = seed
        self._epoch = -1
        self._perm: np.ndarray | None = None

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            self._epoch = epoch
        assert self._perm is not None
        return self._perm

    def indices(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Example indices at positions ``start .. start + count`` and the epoch of each."""
        positions = np.arange(start, start + count)
        epochs = positions // self.n
        out = np.empty(count, dtype=np.int64)
        for epoch in np.unique(epochs):
            sel = epochs == epoch
            out[sel] = self._permutation(int(epoch))[positions[sel] % self.n]
        return out, epochs


class BatchSource:
    """Turns example indices into padded token tensors from a prepared split (memory-mapped).

    Packed data: example ``i`` of epoch ``e`` is the row ``tokens[o + i*T : o + (i+1)*T + L]``,
    ``L`` being the family's ``block_lookahead`` (causal: 1, the target of the block's last
    position).  The offset ``o`` is 0 in the first epoch and a seeded value in ``[0, T)`` in later
    ones, so repeated epochs see new windows (nanoGPT samples random windows for the same reason)
    while the data order stays a pure function of (seed, position) and resuming stays exact.
    """

    def __init__(self, split: Any, block_size: int, pad_id: int, seed: int = 0, lookahead: int = 0) -> None:
        self.split = split
        self.block_size = block_size
        self.width = block_size + lookahead
        self.pad_id = pad_id
        self.seed = seed
        self._offsets: dict[int, int] = {}
        self.line_by_line = split.offsets is not None
        self.max_offset = 0
        if self.line_by_line:
            self.n = split.num_blocks(block_size)
        else:
            usable = split.num_tokens - lookahead  # every row needs its lookahead tokens after it
            shifted = (usable - (block_size - 1)) // block_size
            if shifted >= 1:
                self.n, self.max_offset = shifted, block_size - 1
            else:  # under two blocks of data: fixed boundaries
                self.n = max(0, usable) // block_size

    def __len__(self) -> int:
        return self.n

    def offset(self, epoch: int) -> int:
        if epoch == 0 or self.max_offset == 0:
            return 0
        # Cached: batch() asks once per example, on the hot path of every step.
        if epoch not in self._offsets:
            self._offsets[epoch] = int(np.random.default_rng([self.seed, epoch, 1]).integers(self.max_offset + 1))
        return self._offsets[epoch]

    def batch(self, indices: np.ndarray, epochs: np.ndarray | None = None) -> tuple[Any, Any]:
        import torch

        if not self.line_by_line:
            epochs = np.zeros_like(indices) if epochs is None else epochs
            offsets = np.array([self.offset(int(e)) for e in epochs], dtype=np.int64)
            # Sorted reads are kinder to the page cache; the order within a batch does not matter.
            starts = np.sort(offsets + indices * self.block_size)
            rows = self.split.tokens[starts[:, None] + np.arange(self.width)]
            return torch.from_numpy(rows.astype(np.int64)), None
        examples = [self.split.example(int(i), self.block_size) for i in indices]
        width = max(len(e) for e in examples)
        ids = np.full((len(examples), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(examples), width), dtype=np.int64)
        for row, example in enumerate(examples):
            ids[row, : len(example)] = example
            mask[row, : len(example)] = 1
        return torch.from_numpy(ids), torch.from_numpy(mask)


# --- setup ----------------------------------------------------------------------------------------


def family_options(config: TrainConfig) -> FamilyOptions:
    return FamilyOptions(
        mlm_probability=config.mlm_probability,
        plm_probability=config.plm_probability,
        max_span_length=config.max_span_length,
        generator_size=config.generator_size,
        discriminator_weight=config.discriminator_weight,
        label_smoothing=config.label_smoothing,
        generator_config=dict(parse_override(item) for item in config.generator_config),
    )


def resolve_data(config: TrainConfig, family: Family, tokenizer_source: str, block_size: int, accelerator: Any) -> Any:
    """A :class:`PreparedData`: the given prepared directory, or raw files prepared into the cache."""
    from lmctl.prepared import PreparedData

    if len(config.train) == 1 and PreparedData.is_prepared(config.train[0]):
        if config.validation:
            raise UsageError("--validation cannot be combined with a prepared --train directory; prepare both together")
        return PreparedData(config.train[0])
    for item in config.train:
        if PreparedData.is_prepared(item):
            raise UsageError(f"{item} is a prepared directory: pass it alone as --train")
    from lmctl.prepare import PrepareConfig, prepare_cached

    prepare_config = PrepareConfig(
        train=list(config.train),
        validation=list(config.validation),
        validation_split=config.validation_split,
        tokenizer=tokenizer_source,
        vocab_size=config.vocab_size,
        family=family.name,
        block_size=block_size,
        document_split=config.document_split,
        line_by_line=config.line_by_line,
        text_column=config.text_column,
    )
    with accelerator.main_process_first():
        path = prepare_cached(prepare_config)
    return PreparedData(path)


def data_hash(data: Any) -> str:
    manifest = data.manifest
    keys = {k: manifest.get(k) for k in ("inputs", "splits", "tokenizer", "document_split", "line_by_line")}
    return hashlib.sha256(json.dumps(keys, sort_keys=True, default=str).encode()).hexdigest()[:16]


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


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


# --- the trainer ----------------------------------------------------------------------------------


class StopTraining(Exception):
    """Raised inside the loop to end it early (signal, NaN, early stopping)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Trainer:
    """Owns one training run: state, the loop, evaluation, checkpoints and outputs."""

    def __init__(self, config: TrainConfig, *, quiet: bool = False) -> None:
        self.config = config
        self.quiet = quiet
        self.out = Path(config.out)
        self.metrics: list[dict[str, Any]] = []
        self.stop_signal: str | None = None
        self.best_eval_loss: float | None = None
        self.best_step: int | None = None
        self.evals_without_improvement = 0
        self.nan_in_a_row = 0
        self.nan_skipped = 0

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        import torch
        from accelerate import Accelerator, PartialState
        from accelerate.utils import set_seed

        from lmctl.families.base import max_positions
        from lmctl.models import HubUnavailableError, check_tokenizer_matches, count_parameters
        from lmctl.plugins import resolve_family
        from lmctl.precision import (
            decision_key,
            measure_faster_precision,
            remember_precision,
            remembered_precision,
            resolve_precision,
            should_measure,
        )
        from lmctl.presets import preset_overrides

        config = self.config
        quiet_libraries()
        try:
            family = resolve_family(
                config.model, family=config.family, from_scratch=config.from_scratch, trust_remote_code=config.trust_remote_code
            )
            self.family = family
            self.options = family_options(config)

            # Model first when pretrained (its tokenizer and position limit shape the data).
            model = None
            if not config.from_scratch:
                model = family.load_pretrained(config.model, trust_remote_code=config.trust_remote_code)
        except HubUnavailableError as exc:
            raise LmctlError(f"{exc}, or --from-scratch to build the architecture without weights") from None
        limit = max_positions(model.config) if model is not None else None
        block_size = config.block_size or (128 if model is None else min(512, limit or 512))
        if family.requires_even_block_size and block_size % 2 and config.block_size is None:
            block_size -= 1
        family.check_block_size(block_size, model)
        self.block_size = block_size

        tokenizer_source = config.tokenizer or (config.model if not config.from_scratch else family.tokenizer_kind)
        report_to = [r for r in config.report_to if r and r != "none"]
        # PartialState knows the device and process layout; the Accelerator itself is created once
        # the model size is known, because "auto" precision depends on it.
        # With no accelerator, say so: Accelerate then runs multi-process CPU training over gloo.
        self.use_cpu = not torch.cuda.is_available() and not torch.backends.mps.is_available()
        state = PartialState(cpu=self.use_cpu)
        self.data = resolve_data(config, family, tokenizer_source, block_size, state)
        tokenizer = self.data.load_tokenizer()
        self.tokenizer = tokenizer
        set_seed(config.seed)
        if model is None:
            overrides = preset_overrides(config.model, config.preset)
            overrides.update(dict(parse_override(item) for item in config.model_config))
            # From scratch, dropout defaults to 0 (as nanoGPT and LitGPT pretrain): on short runs it
            # only slows learning, and its random masks cost ~10% of a small model's CPU step.
            model = family.build_from_scratch(
                config.model,
                tokenizer=tokenizer,
                block_size=block_size,
                overrides=overrides,
                dropout=config.dropout if config.dropout is not None else 0.0,
                options=self.options,
            )
        elif config.dropout is not None:
            from lmctl.families.base import dropout_settings

            for module in model.modules():
                if isinstance(module, torch.nn.Dropout):
                    module.p = config.dropout
            for key, value in dropout_settings(model.config, config.dropout).items():
                setattr(model.config, key, value)
        check_tokenizer_matches(tokenizer, model)
        family.check_block_size(block_size, model)
        self.n_params = count_parameters(model)
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
        elif should_measure(requested, state.device, self.n_params):
            shape = {
                "family": family.name, "model_type": getattr(model.config, "model_type", "?"),
                "parameters": self.n_params, "layers": getattr(model.config, "num_hidden_layers", None),
                "vocab": getattr(model.config, "vocab_size", None), "block": block_size, "batch": config.batch_size,
            }  # fmt: skip
            key = decision_key(shape)
            remembered = remembered_precision(key)
            if remembered:
                self.precision, self.precision_timings = remembered["precision"], remembered.get("timings_s", {})
                self.precision_source = "remembered"
            else:
                self.precision, self.precision_timings = measure_faster_precision(
                    lambda precision: self._probe_step(model, tokenizer, block_size, precision)
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
        mixed = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[self.precision]
        # AcceleratorState is a process-wide singleton that refuses a second, different
        # mixed_precision: forget the previous run's settings (the process layout is kept), so
        # train() can run again in the same process (notebooks, tests) with another precision.
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state()
        self.accelerator = Accelerator(
            cpu=self.use_cpu,
            mixed_precision=mixed, log_with=report_to or None, project_dir=str(self.out) if report_to else None
        )
        acc = self.accelerator
        self.world = acc.num_processes
        self.rank = acc.process_index
        self.is_main = acc.is_main_process

        train_split = self.data.split("train")
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.train_source = BatchSource(
            train_split, block_size, pad_id, seed=config.seed, lookahead=family.block_lookahead
        )
        if len(self.train_source) == 0:
            raise UsageError(
                f"the training data has {train_split.num_tokens} tokens, less than one block of {block_size}: "
                "use more data or a smaller --block-size"
            )
        self.val_split = self.data.split("validation") if self.data.has_split("validation") else None
        self.order = ExampleOrder(len(self.train_source), config.seed)

        self.micro_batch = config.batch_size
        self.grad_accum = config.grad_accum
        self.global_batch = self.micro_batch * self.grad_accum * self.world
        steps_per_epoch = len(self.train_source) / self.global_batch
        if config.max_steps:
            self.total_steps = config.max_steps
        else:
            self.total_steps = max(1, math.ceil((config.epochs or 1.0) * steps_per_epoch))
        self.lr = config.lr if config.lr is not None else (1e-3 if config.from_scratch else 5e-5)
        self.min_lr = config.min_lr if config.min_lr is not None else self.lr / 10
        self.warmup = config.warmup_steps if config.warmup_steps is not None else min(100, self.total_steps // 10)
        self.eval_every = config.eval_every if config.eval_every is not None else max(1, self.total_steps // 10)
        if self.val_split is None:
            self.eval_every = 0
        self.save_every = config.save_every if config.save_every is not None else self.eval_every

        self.model = model
        self.optimizer = make_optimizer(model, config, self.lr, acc.device)
        self.collate = family.make_collator(tokenizer, self.options)
        self.collate_generator = torch.Generator().manual_seed(config.seed)
        self.start_step = 0
        self.fingerprint = self._fingerprint()
        if config.resume:
            self._resume(config.resume)
        elif self.is_main and ckpt.list_checkpoints(self.out):
            raise UsageError(
                f"{self.out} already has checkpoints from an earlier run: pass --resume auto to continue it, "
                "or choose another --out"
            )
        if config.compile:
            self.model = torch.compile(self.model)
        self.model, self.optimizer = acc.prepare(self.model, self.optimizer)
        self.model.train()
        if report_to:
            acc.init_trackers("lmctl", config={k: v for k, v in config.to_dict().items() if isinstance(v, (int, float, str, bool))})

    def _saved_precision(self, config: TrainConfig) -> str | None:
        """The precision a checkpoint being resumed was trained in (None when not resuming)."""
        if not config.resume:
            return None
        try:
            path = ckpt.find_resume_checkpoint(self.out, config.resume)
        except UsageError:
            return None  # reported properly when resuming
        return ckpt.read_state(path).get("precision")

    def _probe_step(self, model: Any, tokenizer: Any, block_size: int, precision: str) -> float:
        """Seconds for one forward/backward pass on the first training examples (for --precision auto).

        Uses its own generator and restores torch's RNG, so measuring changes nothing that follows.
        """
        import torch

        from lmctl.precision import autocast_context

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
            "global_batch": self.global_batch, "seed": c.seed, "data_hash": data_hash(self.data),
            "schedule": c.schedule, "lr": self.lr, "min_lr": self.min_lr, "warmup_steps": self.warmup,
            "total_steps": self.total_steps, "weight_decay": c.weight_decay, "beta1": c.beta1, "beta2": c.beta2,
            "line_by_line": c.line_by_line, "mlm_probability": c.mlm_probability,
            "plm_probability": c.plm_probability, "max_span_length": c.max_span_length,
            "generator_size": c.generator_size, "discriminator_weight": c.discriminator_weight,
            "label_smoothing": c.label_smoothing, "dropout": c.dropout,
        }  # fmt: skip

    def _resume(self, resume: str) -> None:
        path = ckpt.find_resume_checkpoint(self.out, resume)
        state = ckpt.read_state(path)
        saved = state.get("fingerprint", {})
        changed = [k for k in FINGERPRINT_KEYS if saved.get(k) != self.fingerprint.get(k)]
        if changed:
            details = ", ".join(f"{k}: {saved.get(k)!r} -> {self.fingerprint.get(k)!r}" for k in changed[:4])
            raise UsageError(f"cannot resume from {path}: the run config changed ({details}); start a new --out")
        self.family.load_weights(self.model, path)
        ckpt.load_optimizer(self.optimizer, path)
        ckpt.load_rng(path, self.rank, self.collate_generator)
        self.start_step = int(state["step"])
        self.best_eval_loss = state.get("best_eval_loss")
        self.best_step = state.get("best_step")
        self.evals_without_improvement = int(state.get("evals_without_improvement", 0))
        self.resumed_from = str(path)

    # ------------------------------------------------------------------ plan
    def plan(self) -> dict[str, Any]:
        tokens_per_step = self.global_batch * self.block_size
        return {
            "model": self.config.model + (" (from scratch)" if self.config.from_scratch else ""),
            "family": self.family.name,
            "parameters": self.n_params,
            "device": f"{self.accelerator.device} x {self.world}",
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
            "resume from": getattr(self, "resumed_from", None) or "-",
        }

    # ------------------------------------------------------------------ loop
    def run(self) -> TrainResult:
        import torch

        config, acc = self.config, self.accelerator
        started = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        if self.is_main:
            ckpt.clean_temporary(self.out)
            write_json_atomic(self.out / "run.json", self._run_record(status="running"))
        self.display = make_display(self.is_main, self.quiet)
        self.callbacks = _callbacks() if self.is_main else []
        plan = self.plan()
        self.display.start(plan)
        self._callback("on_train_begin", plan)
        if self.is_main:
            from lmctl.runs import open_metrics_log

            self.metrics_file = open_metrics_log(self.out, self.start_step)
        else:
            self.metrics_file = None

        interval_loss = torch.zeros((), device=acc.device)
        interval_extra: dict[str, Any] = {}
        interval_steps = 0
        interval_start = time.perf_counter()
        run_tokens = 0
        loop_start = None
        step = self.start_step
        last_train_loss = None
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
                for key, value in step_extra.items():
                    interval_extra[key] = interval_extra.get(key, 0.0) + value
                # The one per-step host sync: never let a NaN/inf step reach the weights.
                if not bool(torch.isfinite(step_loss + grad_norm)):
                    self.optimizer.zero_grad(set_to_none=True)
                    self._on_nan(step)
                    step += 1
                    continue
                self.nan_in_a_row = 0
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                step += 1
                self.display.progress(step)
                interval_loss += step_loss
                interval_steps += 1
                run_tokens += self.global_batch * self.block_size
                if loop_start is None:
                    loop_start = time.perf_counter()  # the first step pays one-off costs; ETA skips it
                    run_tokens = 0
                    first_step_done = step

                if step % config.log_every == 0 or step == self.total_steps:
                    mean = acc.reduce(interval_loss / max(1, interval_steps), reduction="mean")
                    last_train_loss = float(mean)
                    now = time.perf_counter()
                    elapsed = now - interval_start
                    event = {
                        "step": step,
                        "total_steps": self.total_steps,
                        "epoch": round(step * self.global_batch / len(self.train_source), 4),
                        "train/loss": last_train_loss,
                        "lr": lr,
                        "grad_norm": float(grad_norm),
                        "tokens_per_s": round(interval_steps * self.global_batch * self.block_size / max(elapsed, 1e-9), 1),
                        "elapsed_s": round(now - started, 2),
                    }
                    if self.family.loss_is_nll:
                        event["train/perplexity"] = safe_exp(last_train_loss)
                    for key, value in interval_extra.items():
                        event[f"train/{key}"] = float(acc.reduce(value / max(1, interval_steps), reduction="mean"))
                    if loop_start is not None and step > first_step_done:
                        per_step = (now - loop_start) / (step - first_step_done)
                        event["eta_s"] = round(per_step * (self.total_steps - step), 1)
                    if self.nan_skipped:
                        event["nan_skipped"] = self.nan_skipped
                    self._log(event)
                    interval_loss.zero_()
                    interval_extra = {}
                    interval_steps = 0
                    interval_start = time.perf_counter()

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
        except StopTraining as stop:
            result.interrupted = stop.reason
            if stop.reason != "nan":
                self.save_checkpoint(step)
        finally:
            restore_signal_handlers(previous_handlers)

        result.steps = step
        result.final_train_loss = last_train_loss
        if result.interrupted in (None, "early-stopping"):
            if self.val_split is not None:
                result.final_eval = self._evaluate(step, max_batches=None, final=True)
            self.save_final(result)
        if loop_start is not None and run_tokens:
            result.tokens_per_s = round(run_tokens / max(1e-9, time.perf_counter() - loop_start), 1)
        result.wall_seconds = round(time.perf_counter() - started, 2)
        result.best_eval_loss = self.best_eval_loss
        result.best_checkpoint = str(ckpt.checkpoints_dir(self.out) / f"step-{self.best_step}") if self.best_step else None
        result.metrics = self.metrics
        if self.is_main:
            write_json_atomic(self.out / "run.json", self._run_record(status=result.interrupted or "finished", result=result))
        self._callback("on_train_end", {"steps": step, "interrupted": result.interrupted, "out": str(self.out)})
        self.display.close()
        if self.metrics_file:
            self.metrics_file.close()
        self.accelerator.end_training()
        self._close_process_group()
        return result

    def _close_process_group(self) -> None:
        """Tear the process group down in step: a gloo group left to process exit can abort
        ("terminate called without an active exception") and fail the whole launch."""
        import torch.distributed as dist

        if self.world > 1 and dist.is_available() and dist.is_initialized():
            self.accelerator.wait_for_everyone()
            dist.destroy_process_group()

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

    def _accumulate(self, step: int) -> tuple[Any, Any, dict[str, Any]]:
        import torch

        acc = self.accelerator
        step_loss = torch.zeros((), device=acc.device)
        extra: dict[str, Any] = {}
        for micro in range(self.grad_accum):
            # Position of this micro-batch in the global example order (see the module docstring).
            start = ((step * self.grad_accum + micro) * self.world + self.rank) * self.micro_batch
            input_ids, mask = self.train_source.batch(*self.order.indices(start, self.micro_batch))
            batch = self.collate(input_ids, mask, self.collate_generator)
            batch = {k: v.to(acc.device, non_blocking=True) if hasattr(v, "to") else v for k, v in batch.items()}
            sync = contextlib.nullcontext() if micro == self.grad_accum - 1 else acc.no_sync(self.model)
            with sync:
                # The whole loss under autocast, not only the model's forward (which Accelerate
                # wraps): a family's own output layer (the fused cross-entropy) runs in bf16 too.
                with acc.autocast():
                    out = self.family.compute_loss(self.model, batch, self.options)
                acc.backward(out.loss / self.grad_accum)
            step_loss += out.loss.detach() / self.grad_accum
            for key, value in out.metrics.items():
                extra[key] = extra.get(key, 0.0) + value.detach().float() / self.grad_accum
        if self.config.grad_clip > 0:
            grad_norm = acc.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
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
        from lmctl.evaluate import evaluate_model
        from lmctl.precision import autocast_context

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
        for callback in list(self.callbacks):
            fn = getattr(callback, method, None)
            if fn is None:
                continue
            try:
                fn(dict(info))
            except Exception as exc:  # noqa: BLE001 - a broken callback must not end training
                self.display.message(f"warning: callback {type(callback).__name__}.{method} failed ({exc}); disabled")
                self.callbacks.remove(callback)

    def save_checkpoint(self, step: int) -> Path | None:
        """Write ``checkpoints/step-N`` atomically (all processes take part; the main one writes)."""
        acc = self.accelerator
        acc.wait_for_everyone()
        tmp = ckpt.temporary_dir(self.out, step) if self.is_main else None
        # Every process writes its own RNG state into the main process's temporary directory.
        tmp_name = [str(tmp) if tmp else ""]
        if self.world > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(tmp_name)
        ckpt.save_rng(Path(tmp_name[0]), self.rank, self.collate_generator)
        acc.wait_for_everyone()
        final = None
        if self.is_main:
            assert tmp is not None
            try:
                self._write_checkpoint(tmp, step)
                final = ckpt.commit(tmp, self.out, step)
            except OSError as exc:
                # A failed save (disk full, quota, I/O error) must not touch the previous checkpoints.
                shutil.rmtree(tmp, ignore_errors=True)
                previous = ckpt.list_checkpoints(self.out)
                kept = f"; {previous[-1][1]} is intact" if previous else ""
                raise LmctlError(
                    f"could not save the checkpoint of step {step} ({exc.strerror or exc}){kept}: "
                    "free some disk space and resume with --resume auto"
                ) from None
            protect = {self.best_step} if self.best_step else set()
            ckpt.prune(self.out, self.config.keep_last, protect)
            self._callback("on_save", {"step": step, "path": str(final)})
        acc.wait_for_everyone()
        return final

    def _write_checkpoint(self, tmp: Path, step: int) -> None:
        self.family.save(self.accelerator.unwrap_model(self.model), self.tokenizer, tmp)
        optimizer = self.optimizer.optimizer if hasattr(self.optimizer, "optimizer") else self.optimizer
        ckpt.save_optimizer(optimizer, tmp)
        state = {
            "step": step,
            "samples_seen": step * self.global_batch,
            "accumulation_phase": 0,  # checkpoints are taken between optimizer steps only
            "world_size": self.world,
            "best_eval_loss": self.best_eval_loss,
            "best_step": self.best_step,
            "evals_without_improvement": self.evals_without_improvement,
            "fingerprint": self.fingerprint,
            "precision": self.precision,
            "lmctl_version": library_versions().get("lmctl"),
        }
        # Written last: a checkpoint counts as complete only with its trainer_state.json.
        (tmp / ckpt.STATE_FILE).write_text(json.dumps(state, indent=2))

    def save_final(self, result: TrainResult) -> None:
        """The final model as a plain Hugging Face directory in OUT, plus the model card."""
        acc = self.accelerator
        acc.wait_for_everyone()
        if not self.is_main:
            return
        tmp = self.out / f".final-tmp-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        try:
            self.family.save(acc.unwrap_model(self.model), self.tokenizer, tmp)
            (tmp / "README.md").write_text(model_card(self, result))
            ckpt.fsync_tree(tmp)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise LmctlError(
                f"could not save the final model to {self.out} ({exc.strerror or exc}); the checkpoints are intact: "
                "free some disk space and resume with --resume auto"
            ) from None
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
        from lmctl.runs import write_png

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
                "parameters": self.n_params,
                "data": str(self.data.path.resolve()),
                "data_hash": data_hash(self.data),
            },
            "versions": library_versions(),
        }
        if result is not None:
            record["result"] = {
                k: v for k, v in dataclasses.asdict(result).items() if k not in ("metrics", "out")
            }
        return record


def safe_exp(x: float) -> float:
    return math.exp(x) if x < 700 else float("inf")


def make_display(main_process: bool, quiet: bool) -> Any:
    from lmctl.ui import make_train_display

    return make_train_display(main_process, quiet)


def _callbacks() -> list[Any]:
    from lmctl.plugins import get_registry

    return list(get_registry().callbacks)


def install_signal_handlers(trainer: Trainer) -> dict[int, Any]:
    """SIGINT/SIGTERM: finish the current step, save a checkpoint, exit.  A second SIGINT aborts."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if trainer.stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        trainer.stop_signal = name

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    return previous


def restore_signal_handlers(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def quiet_libraries() -> None:
    """Silence library chatter a user cannot act on (advice about other frameworks, etc.)."""
    from lmctl.quiet import quiet_libraries as quiet_all

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_all()


def model_card(trainer: Trainer, result: TrainResult) -> str:
    """A Hugging Face model card: metadata the Hub reads, then what was trained and how well."""
    family = trainer.family
    c = trainer.config
    final = result.final_eval or {}
    lines = [
        "---",
        "library_name: transformers",
        f"pipeline_tag: {family.pipeline_tag}",
        "tags:",
        "- lmctl",
        f"- {family.name}",
        "---",
        "",
        f"# {trainer.out.name}",
        "",
        f"A {family.name} language model ({trainer.model_type()}, {trainer.n_params:,} parameters) trained with "
        f"[lmctl](https://github.com/lmctl/lmctl) {'from scratch' if c.from_scratch else 'from ' + c.model}.",
        "",
        "## Results",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| steps | {result.steps} |",
        f"| final train loss | {fmt(result.final_train_loss)} |",
        f"| eval loss (nats/token) | {fmt(final.get('loss'))} |",
        f"| eval perplexity | {fmt(final.get('perplexity'))} |",
        "",
        "## Training settings",
        "",
        "| setting | value |",
        "| --- | --- |",
    ]
    for key, value in trainer.plan().items():
        lines.append(f"| {key} | {value} |")
    lines += [
        "",
        "## Use",
        "",
        "```python",
        f"from transformers import {family.auto_class}, AutoTokenizer",
        f'model = {family.auto_class}.from_pretrained("{trainer.out.name}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{trainer.out.name}")',
        "```",
        "",
        f"or `lmctl generate --model {trainer.out.name} ...`.",
        "",
    ]
    return "\n".join(lines)


def fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("-" if value is None else str(value))


# --- entry point ----------------------------------------------------------------------------------


def train(config: TrainConfig, *, quiet: bool = False) -> TrainResult:
    """Train a model as ``config`` says and return what happened.  See the module docstring."""
    from lmctl.models import apply_offline

    config.validate()
    apply_offline(config.offline)
    check_inputs(config)
    if config.num_processes > 1 and "LOCAL_RANK" not in os.environ and "RANK" not in os.environ:
        return launch_processes(config)
    trainer = Trainer(config, quiet=quiet)
    trainer.setup()
    return trainer.run()


def check_inputs(config: TrainConfig) -> None:
    """A missing or empty data file is reported before any model is downloaded or built."""
    from lmctl.prepare import resolve_inputs
    from lmctl.prepared import PreparedData

    if len(config.train) == 1 and PreparedData.is_prepared(config.train[0]):
        return
    resolve_inputs([item for item in config.train if not PreparedData.is_prepared(item)])
    if config.validation:
        resolve_inputs(list(config.validation), role="--validation")


def launch_processes(config: TrainConfig) -> TrainResult:
    """``--num-processes N``: re-run this training under N processes (torch's elastic launcher on
    CPU, ``accelerate launch`` where GPUs exist), then read back the result."""
    import subprocess
    import tempfile

    import torch

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = dataclasses.replace(config, num_processes=1).to_dict()
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir=out, prefix=".launch-", delete=False) as handle:
        json.dump(settings, handle)
        config_path = handle.name
    try:
        if torch.cuda.is_available():
            launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(config.num_processes)]
        else:
            launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(config.num_processes)]
        command = [*launcher, "-m", "lmctl", "train", "--config", config_path]
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // config.num_processes)))
        completed = subprocess.run(command, env=env)
        if completed.returncode != 0:
            raise LmctlError(f"the {config.num_processes}-process run failed (exit code {completed.returncode}); see its output above")
    finally:
        os.unlink(config_path)
    record = json.loads((out / "run.json").read_text())
    res = record.get("result", {})
    return TrainResult(
        out=out,
        steps=res.get("steps", 0),
        total_steps=res.get("total_steps", 0),
        final_train_loss=res.get("final_train_loss"),
        final_eval=res.get("final_eval"),
        best_eval_loss=res.get("best_eval_loss"),
        best_checkpoint=res.get("best_checkpoint"),
        interrupted=res.get("interrupted"),
        wall_seconds=res.get("wall_seconds", 0.0),
        tokens_per_s=res.get("tokens_per_s"),
    )
