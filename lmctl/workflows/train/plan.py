"""``lmctl train --dry-run``: the plan of a run (parameters, estimated peak memory) without training.

Nothing is written and nothing heavy is done: the model config comes from ``AutoConfig`` (from
scratch) or the model's config.json, never from instantiated weights; the data is not prepared
(its tokens are estimated from the file sizes); the precision is not measured.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lmctl.workflows.train.config import TrainConfig

BYTES_PER_TOKEN = 4.0  # a rough average of byte-level BPE on English text, for the token estimate


class _VocabularyOnly:
    """Stands in for a tokenizer that is not trained yet: only its size matters to the config."""

    pad_token_id = bos_token_id = eos_token_id = sep_token_id = cls_token_id = None

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size


def _file_bytes(items: list[str]) -> int:
    total = 0
    for item in items:
        path = Path(item)
        if path.is_file():
            total += path.stat().st_size
        elif path.is_dir():
            total += sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        else:
            import glob

            total += sum(os.path.getsize(p) for p in glob.glob(item) if os.path.isfile(p))
    return total


def _parameter_count(family: Any, model_config: Any) -> int:
    """Parameters of the architecture: counted on the meta device (no memory, no initialisation)."""
    import torch

    with torch.device("meta"):
        model = family.model_from_config(model_config)
    return sum(p.numel() for p in model.parameters())


def _estimate(
    config_dict: dict[str, Any], config: TrainConfig, lora: Any, block_size: int, precision: str, family: Any,
    model_type: Any, device: str, n_params: int,
) -> Any:
    from lmctl.kit.losses import FUSED_MODEL_TYPES
    from lmctl.workflows.train.trainer import estimate_run_memory

    return estimate_run_memory(
        config_dict,
        config=config,
        lora=lora,
        micro_batch=config.batch_size,
        block_size=block_size,
        precision=precision,
        fused_loss=family.auto_class == "AutoModelForCausalLM" and model_type in FUSED_MODEL_TYPES,
        device=device,
        total_params=n_params,
        trainable_params=None if lora is not None else n_params,
    )


def dry_run_plan(config: TrainConfig) -> dict[str, Any]:
    """The plan of the run ``config`` describes, and ``warning`` (a line, or None) when its
    estimated peak memory exceeds the memory available now."""
    from lmctl.core.device import available_memory_bytes, pick_device
    from lmctl.core.hub import apply_offline, load_config_dict
    from lmctl.core.precision import resolve_precision
    from lmctl.core.presets import preset_overrides
    from lmctl.core.quiet import quiet_libraries
    from lmctl.families.base import parse_override
    from lmctl.plugins.registry import resolve_family
    from lmctl.workflows.train.trainer import (
        family_options,
        lora_summary,
        memory_record,
        memory_summary,
        memory_warning,
        trainable_summary,
    )

    config.validate()
    apply_offline(config.offline)
    quiet_libraries()
    family = resolve_family(
        config.model, family=config.family, from_scratch=config.from_scratch, trust_remote_code=config.trust_remote_code
    )
    family_options(config, family)  # an unknown --family-option fails here as it would in training
    lora = config.lora_settings()
    if lora is not None and not family.lora:
        from lmctl.errors import UsageError

        raise UsageError(f"--lora: the {family.name} family does not support LoRA adapters; train all weights without --lora")
    if config.from_scratch:
        from lmctl.core.hub import load_tokenizer

        block_size = config.block_size or 128
        overrides = preset_overrides(config.model, config.preset)
        overrides.update(dict(parse_override(item) for item in config.model_config))
        tokenizer_dir = config.tokenizer and Path(config.tokenizer).is_dir()
        tokenizer = load_tokenizer(config.tokenizer) if tokenizer_dir else _VocabularyOnly(config.vocab_size)
        model_config = family.build_config(
            config.model,
            tokenizer=tokenizer,
            block_size=block_size,
            overrides=overrides,
            dropout=config.dropout if config.dropout is not None else 0.0,
        )
        config_dict = model_config.to_dict()
    else:
        from types import SimpleNamespace

        from lmctl.families.base import max_positions

        config_dict = load_config_dict(config.model, trust_remote_code=config.trust_remote_code)
        limit = max_positions(SimpleNamespace(**config_dict))
        block_size = config.block_size or min(512, limit or 512)
        if config.dropout is not None:
            for key, value in list(config_dict.items()):
                if isinstance(value, float) and ("dropout" in key or key.endswith("pdrop")):
                    config_dict[key] = config.dropout
        model_config = None
    from lmctl.core.memory_plan import KNOWN_MODEL_TYPES, count_params

    if config_dict.get("model_type") in KNOWN_MODEL_TYPES or model_config is None:
        n_params = count_params(config_dict)["total"]  # exact for these architectures
    else:
        n_params = _parameter_count(family, model_config)
    device = pick_device("auto")
    precision = config.precision if config.precision != "auto" else resolve_precision("auto", device, n_params)
    model_type = config_dict.get("model_type")
    try:
        memory = _estimate(config_dict, config, lora, block_size, precision, family, model_type, device, n_params)
    except (ValueError, TypeError, KeyError, ZeroDivisionError) as exc:
        from lmctl.errors import LmctlError

        raise LmctlError(f"--dry-run: the memory formula cannot read {config.model}'s config ({exc})") from None
    tokens = int(_file_bytes(list(config.train)) / BYTES_PER_TOKEN)
    global_batch = config.batch_size * config.grad_accum * config.num_processes
    blocks = max(1, tokens // block_size)
    steps = config.max_steps or max(1, int((config.epochs or 1.0) * blocks / global_batch))
    plan = {
        "model": config.model + (" (from scratch)" if config.from_scratch else ""),
        "family": family.name,
        "parameters": n_params,
        "trainable parameters": trainable_summary(memory.trainable_params, n_params),
        "adapters": lora_summary(lora),
        "activation checkpointing": "on" if config.activation_checkpointing else "off",
        "estimated peak memory": memory_summary(memory),
        "device": f"{device} x {config.num_processes}",
        "precision": precision + (" (auto: by rule; a real run may measure)" if config.precision == "auto" else ""),
        "block size": block_size,
        "batch": f"{config.batch_size} x {config.grad_accum} accum x {config.num_processes} proc = {global_batch} seq",
        "tokens per step": global_batch * block_size,
        "optimizer steps": steps,
        "tokens per epoch": f"~{tokens:,} (estimated from the file sizes)",
    }
    for note in memory.notes:
        plan.setdefault("notes", note)
    return {
        "plan": plan,
        "memory": memory_record(memory),
        "warning": memory_warning(memory.total, available_memory_bytes(device)),
    }
