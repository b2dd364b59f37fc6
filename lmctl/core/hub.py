"""Finding, loading and building models and tokenizers.

``--model`` is a local directory or a Hugging Face Hub id.  Local directories are read directly;
hub ids go through the real ``from_pretrained`` path (which works online) and a failure to reach
the hub becomes one clear line telling the user what to do instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from lmctl.errors import LmctlError, UsageError

T = TypeVar("T")


def looks_like_path(name: str) -> bool:
    """Hub ids look like ``name`` or ``org/name``; anything else is meant as a local path."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def is_local_model(name_or_path: str) -> bool:
    return Path(name_or_path).expanduser().is_dir()


def check_model_dir(path: str | os.PathLike) -> Path:
    """A local model directory must hold config.json and weights; say which is missing."""
    p = Path(path).expanduser()
    if not p.exists():
        raise LmctlError(f"model directory not found: {p}")
    if not p.is_dir():
        raise LmctlError(f"{p} is a file, not a model directory (expected config.json and weights inside)")
    if not (p / "config.json").is_file():
        raise LmctlError(f"{p} is not a model directory: it has no config.json")
    weights = list(p.glob("*.safetensors")) + list(p.glob("pytorch_model*.bin")) + list(p.glob("*.safetensors.index.json"))
    if not weights:
        raise LmctlError(f"{p} has a config.json but no weights (model.safetensors); was the save interrupted?")
    return p


class HubUnavailableError(LmctlError):
    """A hub id that could not be fetched (offline, unreachable, or no such repository)."""


def offline_mode() -> bool:
    return any(os.environ.get(k, "") not in ("", "0") for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_call(name_or_path: str, load: Callable[[], T]) -> T:
    """Run a ``from_pretrained``-style call, turning hub and file errors into one clear line.

    The hint fits every command (eval and generate have no --from-scratch); ``train`` catches
    :class:`HubUnavailableError` and adds its own.
    """
    import warnings

    local = is_local_model(name_or_path)
    if not local and looks_like_path(name_or_path):
        raise LmctlError(f"model directory not found: {name_or_path}")
    if local:
        check_model_dir(name_or_path)
    try:
        with warnings.catch_warnings():
            # torch's weights_only unpickler warns about the pickle protocol before refusing a
            # file; the refusal itself becomes the one error line below.
            warnings.filterwarnings("ignore", message=".*weights_only Unpickler.*")
            return load()
    except LmctlError:
        raise
    except Exception as exc:  # noqa: BLE001 - classified below; anything else propagates unchanged
        problem = load_problem(name_or_path, exc, local=local)
        if problem is None:
            raise
        raise problem from None


def load_problem(name_or_path: str, exc: BaseException, *, local: bool) -> LmctlError | None:
    """The one-line error for an exception raised while loading a model or config (None: not ours)."""
    import pickle

    text = str(exc)
    lowered = text.lower()
    if isinstance(exc, pickle.UnpicklingError) or "weights only load failed" in lowered:
        return LmctlError(
            f"refused to load the weights of {name_or_path}: its pytorch_model.bin holds Python objects besides "
            "tensors, and unpickling them could run code; use a copy saved as safetensors"
        )
    if "custom code" in lowered or "trust_remote_code" in lowered:
        return UsageError(
            f"{name_or_path} needs its own Python code to load (auto_map in config.json), which lmctl does not run "
            "unless you pass --trust-remote-code: do so only if you trust that code"
        )
    if local:
        if "mismatched_sizes" in lowered or "size mismatch" in lowered:
            return LmctlError(
                f"the weights in {name_or_path} do not fit its config.json (tensor shapes differ): "
                "the directory mixes files of two models"
            )
        if type(exc).__name__ == "SafetensorError" or any(w in lowered for w in ("safetensors", "header", "deserializ")):
            return LmctlError(f"the weights in {name_or_path} are damaged or not safetensors: {first_line(text)}")
        if isinstance(exc, (OSError, ValueError, RuntimeError)):
            return LmctlError(f"could not load the model in {name_or_path}: {first_line(text)}")
        return None
    if isinstance(exc, (OSError, ValueError)):
        reason = "offline mode is on: --offline or HF_HUB_OFFLINE=1" if offline_mode() else "the Hub is unreachable or there is no such model"
        return HubUnavailableError(
            f"could not download '{name_or_path}' from the Hugging Face Hub ({reason}); check the name or pass a local model directory"
        )
    return None


def first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else ""


def load_config_dict(name_or_path: str, *, trust_remote_code: bool = False) -> dict[str, Any]:
    """config.json as a dict: read from disk for a directory, through AutoConfig for a hub id."""

    if is_local_model(name_or_path):
        return read_config_json(name_or_path)
    if looks_like_path(name_or_path):
        raise LmctlError(f"model directory not found: {name_or_path}")

    def fetch() -> dict[str, Any]:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code).to_dict()

    return hub_call(name_or_path, fetch)


def load_tokenizer(name_or_path: str, *, trust_remote_code: bool = False) -> Any:
    """A ``transformers`` tokenizer from a directory or hub id, with one-line errors."""
    from transformers import AutoTokenizer

    path = Path(name_or_path).expanduser()
    if path.is_dir() and not any((path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json")):
        raise LmctlError(f"{path} has no tokenizer files (tokenizer.json); pass --tokenizer or train one with prepare")

    def load() -> Any:
        return AutoTokenizer.from_pretrained(str(path) if path.is_dir() else name_or_path, trust_remote_code=trust_remote_code)

    if path.is_dir():
        try:
            return load()
        except Exception as exc:  # noqa: BLE001 - the tokenizers library raises plain Exception for a damaged tokenizer.json
            if isinstance(problem := load_problem(str(path), exc, local=True), UsageError):
                raise problem from None  # a tokenizer whose code lives in the directory
            raise LmctlError(f"could not load the tokenizer in {path}: {first_line(str(exc))}") from None
    return hub_call(name_or_path, load)


def check_tokenizer_matches(tokenizer: Any, model: Any) -> None:
    """Refuse a tokenizer whose ids do not fit the model's embedding table."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    size = embeddings.weight.shape[0] if embeddings is not None else getattr(model.config, "vocab_size", None)
    if size is not None and len(tokenizer) > size:
        raise UsageError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's vocabulary has {size}: "
            "use the tokenizer saved with the model (or --from-scratch to build a model for this tokenizer)"
        )


def apply_offline(offline: bool) -> None:
    """``--offline``: set the Hugging Face offline switches before transformers is imported."""
    if offline:
        import sys

        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        # huggingface_hub and datasets read the variables once, at import: when they are already
        # imported (library use, notebooks), switch their flags too.
        hub_constants = sys.modules.get("huggingface_hub.constants")
        if hub_constants is not None:
            hub_constants.HF_HUB_OFFLINE = True
        datasets_config = sys.modules.get("datasets.config")
        if datasets_config is not None:
            datasets_config.HF_HUB_OFFLINE = True
            datasets_config.HF_DATASETS_OFFLINE = True


def count_parameters(model: Any) -> int:
    """Parameters of ``model``; a 4-bit (bitsandbytes) weight counts as its original shape."""
    import math

    total = 0
    for p in model.parameters():
        shape = getattr(getattr(p, "quant_state", None), "shape", None)
        total += math.prod(shape) if shape is not None else p.numel()
    return total


def read_config_json(path: str | os.PathLike) -> dict[str, Any]:
    """Read ``config.json`` of a model directory, with a clear error when it is not a model."""
    config_path = Path(path) / "config.json"
    if not config_path.is_file():
        raise LmctlError(f"{path} is not a model directory: it has no config.json")
    try:
        return json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LmctlError(f"{config_path} is not valid JSON ({exc}); the model directory is damaged") from None
