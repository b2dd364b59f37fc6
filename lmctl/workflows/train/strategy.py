"""How a run is spread over processes: ``--strategy ddp|fsdp|deepspeed``, or what an accelerate
config given through ``accelerate launch`` asked for.

Accelerate reads FSDP and DeepSpeed settings from ``ACCELERATE_*``/``FSDP_*`` variables that
``accelerate launch`` exports.  On a machine without GPUs it ignores an FSDP v2 request (the run
silently becomes DDP), raises on an FSDP v1 request, and ``accelerate launch --num_processes 2``
without ``--multi_gpu`` starts one process.  So lmctl reads the request itself, before the
Accelerator exists, applies FSDP (version 2, ``fully_shard``) on its own on every device, and
honours or refuses each setting by name: no configuration silently trains as something else.
Import-light: no torch at import time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmctl.errors import UsageError

STRATEGIES = ("ddp", "fsdp", "deepspeed")


def truthy(value: str | None) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


@dataclass
class Strategy:
    """The resolved way of spreading the run; ``settings`` lists what was honoured (for the plan)."""

    name: str = "ddp"
    source: str = "--strategy"
    reshard_after_forward: bool = True
    block_names: list[str] | None = None
    activation_checkpointing: bool = False
    deepspeed_stage: int | None = None
    settings: list[str] = field(default_factory=list)

    def describe(self) -> str:
        names = {"ddp": "DDP (whole model on every process)", "fsdp": "FSDP2 (parameters, gradients and optimizer sharded)",
                 "deepspeed": f"DeepSpeed ZeRO-{self.deepspeed_stage}"}  # fmt: skip
        text = names[self.name]
        if self.source != "--strategy":
            text += f", from {self.source}"
        return text + (f"; {', '.join(self.settings)}" if self.settings else "")


# Accelerate's FSDP settings and what lmctl does with each (FSDP2 through fully_shard).
FSDP_SETTINGS_IGNORED_UNDER_FSDP2 = (
    "FSDP_MIN_NUM_PARAMS", "FSDP_BACKWARD_PREFETCH", "FSDP_FORWARD_PREFETCH", "FSDP_USE_ORIG_PARAMS",
    "FSDP_SYNC_MODULE_STATES", "FSDP_CPU_RAM_EFFICIENT_LOADING",
)  # fmt: skip


def resolve_strategy(requested: str, env: dict[str, str] | None = None) -> Strategy:
    """``--strategy`` plus whatever ``accelerate launch`` exported; a request that cannot be honoured
    is refused with one line naming the setting."""
    env = dict(os.environ if env is None else env)
    if requested not in STRATEGIES:
        raise UsageError(f"--strategy must be ddp, fsdp or deepspeed, got {requested!r}")
    if truthy(env.get("ACCELERATE_USE_FSDP")) and truthy(env.get("ACCELERATE_USE_DEEPSPEED")):
        raise UsageError("the accelerate config asks for both FSDP and DeepSpeed: choose one")
    if truthy(env.get("ACCELERATE_USE_FSDP")):
        if requested == "deepspeed":
            raise UsageError("--strategy deepspeed conflicts with the accelerate config's FSDP: choose one")
        return fsdp_from_accelerate(env)
    if truthy(env.get("ACCELERATE_USE_DEEPSPEED")):
        if requested == "fsdp":
            raise UsageError("--strategy fsdp conflicts with the accelerate config's DeepSpeed: choose one")
        strategy = Strategy("deepspeed", source="the accelerate config")
        stage = env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") or "2"
        strategy.deepspeed_stage = int(stage) if stage.isdigit() else 2
        for name in ("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE"):
            if env.get(name, "none") not in ("none", ""):
                strategy.settings.append(f"{name.removeprefix('ACCELERATE_DEEPSPEED_').lower()}={env[name]}")
        return strategy
    strategy = Strategy(requested)
    if requested == "deepspeed":
        strategy.deepspeed_stage = 2
    return strategy


def fsdp_from_accelerate(env: dict[str, str]) -> Strategy:
    """An accelerate FSDP config: version 2 runs as lmctl's own FSDP2; each setting honoured or refused."""
    version = env.get("FSDP_VERSION", "1")
    if version != "2":
        raise UsageError(
            f"the accelerate config asks for FSDP version {version}; lmctl trains FSDP version 2 (fully_shard): "
            "set fsdp_version: 2 in the config, or run `lmctl train --strategy fsdp`"
        )
    strategy = Strategy("fsdp", source="the accelerate config")
    sharding = env.get("FSDP_SHARDING_STRATEGY", "FULL_SHARD").upper()
    sharding = {"1": "FULL_SHARD", "2": "SHARD_GRAD_OP", "3": "NO_SHARD", "4": "HYBRID_SHARD", "5": "HYBRID_SHARD_ZERO2"}.get(sharding, sharding)
    if sharding in ("NO_SHARD", "HYBRID_SHARD", "HYBRID_SHARD_ZERO2"):
        hint = "use --strategy ddp" if sharding == "NO_SHARD" else "use FULL_SHARD or SHARD_GRAD_OP"
        raise UsageError(f"fsdp_sharding_strategy {sharding} is not supported by lmctl: {hint}")
    if sharding == "SHARD_GRAD_OP" or env.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower() == "false":
        strategy.reshard_after_forward = False
        strategy.settings.append("reshard_after_forward=false")
    if truthy(env.get("FSDP_OFFLOAD_PARAMS")):
        raise UsageError("fsdp_offload_params is not supported by lmctl: set it to false (or use DeepSpeed's offload on GPUs)")
    if truthy(env.get("FSDP_ACTIVATION_CHECKPOINTING_OFFLOAD")):
        raise UsageError("fsdp_activation_checkpointing_offload is not supported by lmctl: set it to false")
    if env.get("FSDP_IGNORED_MODULES"):
        raise UsageError("fsdp_ignored_modules is not supported by lmctl: remove it from the config")
    policy = env.get("FSDP_AUTO_WRAP_POLICY", "TRANSFORMER_BASED_WRAP").upper()
    if policy == "SIZE_BASED_WRAP":
        raise UsageError("fsdp_auto_wrap_policy SIZE_BASED_WRAP is not supported by lmctl: use TRANSFORMER_BASED_WRAP")
    if policy == "NO_WRAP":
        strategy.block_names = []
        strategy.settings.append("no_wrap (one unit)")
    elif env.get("FSDP_TRANSFORMER_CLS_TO_WRAP"):
        strategy.block_names = [n.strip() for n in env["FSDP_TRANSFORMER_CLS_TO_WRAP"].split(",") if n.strip()]
        strategy.settings.append(f"blocks {','.join(strategy.block_names)}")
    state_dict_type = env.get("FSDP_STATE_DICT_TYPE", "SHARDED_STATE_DICT").upper()
    if state_dict_type not in ("SHARDED_STATE_DICT", "FULL_STATE_DICT"):
        raise UsageError(f"fsdp_state_dict_type {state_dict_type} is not supported: use SHARDED_STATE_DICT")
    # FULL_STATE_DICT: checkpoints stay sharded (resumable on any process count); the final model is full anyway.
    if truthy(env.get("FSDP_ACTIVATION_CHECKPOINTING")):
        strategy.activation_checkpointing = True
        strategy.settings.append("activation checkpointing")
    return strategy


def check_deepspeed_can_run() -> None:
    """DeepSpeed needs CUDA and the deepspeed package: otherwise one line, before anything is built."""
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise UsageError(
            "--strategy deepspeed needs CUDA GPUs and this machine has none: use --strategy fsdp "
            "(it shards the same way and runs on CPUs too)"
        )
    if importlib.util.find_spec("deepspeed") is None:
        raise UsageError("--strategy deepspeed needs the deepspeed package: pip install deepspeed (or use --strategy fsdp)")


def deepspeed_plugin(strategy: Strategy, grad_accum: int, grad_clip: float) -> Any:
    from accelerate import DeepSpeedPlugin

    if strategy.deepspeed_stage not in (1, 2):
        raise UsageError(
            f"DeepSpeed ZeRO stage {strategy.deepspeed_stage} is not supported by lmctl: use stage 1 or 2, "
            "or --strategy fsdp to shard the parameters too"
        )
    return DeepSpeedPlugin(
        zero_stage=strategy.deepspeed_stage, gradient_accumulation_steps=grad_accum, gradient_clipping=grad_clip or None
    )


# --- processes asked for, processes started -----------------------------------------------------


def asked_world_size(config_processes: int, config_machines: int, env: dict[str, str] | None = None) -> int | None:
    """The number of processes the user asked for: lmctl's own launch records it; ``accelerate
    launch`` does not export it, so its command line (or its config file) is read."""
    env = dict(os.environ if env is None else env)
    if env.get("LMCTL_ASKED_WORLD_SIZE", "").isdigit():
        return int(env["LMCTL_ASKED_WORLD_SIZE"])
    if "ACCELERATE_MIXED_PRECISION" in env or "ACCELERATE_USE_CPU" in env:
        asked = accelerate_launch_processes()
        if asked:
            return asked
    if config_processes > 1 or config_machines > 1:
        return config_processes * config_machines
    return None


def accelerate_launch_processes() -> int | None:
    """``--num_processes N`` of the ``accelerate launch`` that started this process (its parent, or
    torch's elastic agent's parent), else ``num_processes`` of the config file it used."""
    for pid in _ancestors(3):
        try:
            argv = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]
        except OSError:
            continue
        if not any("accelerate" in a for a in argv[:4]):
            continue
        for i, arg in enumerate(argv):
            if arg in ("--num_processes", "--num-processes") and i + 1 < len(argv) and argv[i + 1].isdigit():
                return int(argv[i + 1])
            if arg.startswith(("--num_processes=", "--num-processes=")) and arg.split("=", 1)[1].isdigit():
                return int(arg.split("=", 1)[1])
        config_file = None
        for i, arg in enumerate(argv):
            if arg in ("--config_file", "--config-file") and i + 1 < len(argv):
                config_file = argv[i + 1]
        if config_file is None:
            try:
                from accelerate.commands.config import default_config_file

                config_file = default_config_file if Path(default_config_file).is_file() else None
            except Exception:  # noqa: BLE001 - no config to read
                config_file = None
        if config_file:
            try:
                import yaml

                value = (yaml.safe_load(Path(config_file).read_text()) or {}).get("num_processes")
                return int(value) if value else None
            except Exception:  # noqa: BLE001 - an unreadable config says nothing
                return None
        return None
    return None


def _ancestors(depth: int) -> list[int]:
    pids, pid = [], os.getpid()
    for _ in range(depth):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            pid = int(fields[1])
        except (OSError, IndexError, ValueError):
            break
        if pid <= 1:
            break
        pids.append(pid)
    return pids


def check_world_size(asked: int | None, world: int) -> None:
    """``accelerate launch --num_processes 2`` without ``--multi_gpu`` starts one process: refused,
    because the run would silently train with half the global batch."""
    if asked and asked > 1 and world == 1:
        raise UsageError(
            f"accelerate launch started 1 process although {asked} were asked: add --multi_gpu (it also works "
            f"on CPUs), or run `lmctl train --num-processes {asked}`"
        )


def elastic_batch(global_batch: int, world: int, batch_size: int) -> tuple[int, int]:
    """Micro-batch and accumulation that keep ``global_batch`` on ``world`` processes, the
    micro-batch as close to ``batch_size`` as possible without exceeding it."""
    if global_batch % world:
        raise UsageError(
            f"the checkpoint's global batch of {global_batch} sequences cannot be split over {world} processes: "
            f"resume on a number of processes that divides {global_batch}"
        )
    per_process = global_batch // world
    accum = max(1, -(-per_process // max(1, batch_size)))
    while per_process % accum:
        accum += 1
    return per_process // accum, accum
