"""LoRA adapters (through ``peft``), 4-bit base weights (bitsandbytes) and activation checkpointing.

What lmctl adds to peft is small and lives here: the settings, one-line refusals, and loading
an adapter directory (``adapter_config.json`` + ``adapter_model.safetensors``) the way the rest of
lmctl loads a model.  Targets default to peft's ``"all-linear"``: every linear projection of the
transformer blocks, found by module type (``nn.Linear``, GPT-2's ``Conv1D`` with ``fan_in_fan_out``
set by peft itself), the output layer excluded.

torch, transformers and peft are imported inside functions (``lmctl --help`` stays fast).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lmctl.errors import LmctlError, UsageError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


@dataclass(frozen=True)
class LoraSettings:
    r: int = 8
    alpha: float | None = None  # default 2 * r
    dropout: float = 0.0
    targets: str = "all-linear"  # "all-linear" or comma-separated module names (c_attn,c_proj)
    quantize: str | None = None  # None or "4bit"

    @property
    def scaling_alpha(self) -> float:
        return self.alpha if self.alpha is not None else 2.0 * self.r

    def target_modules(self) -> str | list[str]:
        if self.targets.strip() == "all-linear":
            return "all-linear"
        return [name.strip() for name in self.targets.split(",") if name.strip()]

    def record(self) -> dict[str, Any]:
        """What run.json and the resume fingerprint keep."""
        out = asdict(self)
        out["alpha"] = self.scaling_alpha
        return out


def is_adapter_dir(path: str | Path) -> bool:
    """Whether ``path`` is a peft adapter directory (lmctl's ``--lora`` output or a checkpoint of it)."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base_model(path: str | Path) -> str:
    """The base model an adapter directory was trained on (its ``base_model_name_or_path``)."""
    try:
        config = json.loads((Path(path) / ADAPTER_CONFIG).read_text())
    except (OSError, ValueError) as exc:
        raise LmctlError(f"could not read {Path(path) / ADAPTER_CONFIG} ({exc})") from None
    base = config.get("base_model_name_or_path")
    if not base:
        raise UsageError(f"{path} is an adapter without base_model_name_or_path in {ADAPTER_CONFIG}: set it to the base model")
    return str(base)


def model_source(name: str) -> str:
    """Where the architecture, config and family of ``name`` come from: the base model of an
    adapter directory, else ``name`` itself."""
    return adapter_base_model(name) if is_adapter_dir(name) else name


def require_peft() -> None:
    import importlib.util

    if importlib.util.find_spec("peft") is None:
        raise LmctlError("--lora needs peft: pip install peft")


def require_bitsandbytes() -> None:
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise LmctlError("--quantize 4bit needs bitsandbytes: pip install 'lmctl[qlora]' (or pip install bitsandbytes)")


def quantization_config(compute_dtype: str = "float32") -> Any:
    """bitsandbytes NF4 (QLoRA's 4-bit NormalFloat, double-quantised scales)."""
    import torch
    from transformers import BitsAndBytesConfig

    require_bitsandbytes()
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=getattr(torch, compute_dtype),
    )


def enable_activation_checkpointing(model: Any) -> None:
    """Recompute each block's activations in the backward instead of keeping them (transformers 5:
    ``activation_checkpointing_enable``; non-reentrant, so frozen inputs under LoRA need no hook)."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise UsageError(
            f"--activation-checkpointing: {type(model).__name__} does not support activation checkpointing; drop the flag"
        )
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:  # transformers < 5
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if getattr(model, "config", None) is not None and hasattr(model.config, "use_cache"):
        model.config.use_cache = False


def keep_4bit_training_layout(model: Any) -> None:
    """Stop bitsandbytes from repacking 4-bit weights for CPU inference at the first no-grad
    forward (an evaluation): after the repack, training steps fail in ``matmul_4bit`` ("a view of
    a leaf Variable ... in-place operation"; bitsandbytes 0.50 on AVX512-BF16 CPUs)."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def task_type(auto_class: str) -> str | None:
    """peft's task type for a family's Auto class: CAUSAL_LM gives adapters that
    ``peft.AutoPeftModelForCausalLM`` loads; other heads are recorded by class (``AutoPeftModel``)."""
    return "CAUSAL_LM" if auto_class == "AutoModelForCausalLM" else None


def apply_lora(model: Any, settings: LoraSettings, *, auto_class: str) -> Any:
    """Wrap ``model`` with LoRA adapters (only they train); a 4-bit model is prepared first
    (its norms and embeddings kept in fp32, as QLoRA does)."""
    require_peft()
    import warnings

    from peft import LoraConfig, get_peft_model

    if settings.r < 1:
        raise UsageError(f"--lora-r must be a positive integer, got {settings.r}")
    if not 0 <= settings.dropout < 1:
        raise UsageError(f"--lora-dropout must be in [0, 1), got {settings.dropout}")
    if settings.quantize:
        from peft import prepare_model_for_kbit_training

        # Checkpointing (if asked for) was enabled on the model already; do not let peft change it.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        keep_4bit_training_layout(model)
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.scaling_alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules(),
        task_type=task_type(auto_class),
    )
    with warnings.catch_warnings():
        # "fan_in_fan_out is set to False but the target module is Conv1D": peft fixes it (GPT-2).
        warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
        try:
            return get_peft_model(model, config)
        except ValueError as exc:
            raise UsageError(f"--lora-targets {settings.targets}: {exc}") from None


def trainable_parameters(model: Any) -> int:
    seen: set[int] = set()
    total = 0
    for param in model.parameters():
        if param.requires_grad and id(param) not in seen:
            seen.add(id(param))
            total += param.numel()
    return total


def load_adapter_weights(model: Any, directory: str | Path) -> None:
    """Load a checkpoint's adapter weights into a peft model (resume)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(directory) / ADAPTER_WEIGHTS
    try:
        state = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - a truncated or damaged file
        raise LmctlError(f"could not read {path} ({exc}); resume from another checkpoint") from None
    result = set_peft_model_state_dict(model, state)
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise UsageError(f"the adapter in {directory} does not fit this model ({len(unexpected)} unexpected weights)")


def load_merged(base_model: Any, adapter_dir: str | Path) -> Any:
    """``base_model`` with the adapter of ``adapter_dir`` merged into its weights (a plain model)."""
    require_peft()
    import warnings

    from peft import PeftModel

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
        model = PeftModel.from_pretrained(base_model, str(adapter_dir))
        return model.merge_and_unload()
