"""Finding, loading and building models and tokenizers.

``--model`` is a local directory or a Hugging Face Hub id.  Local directories are read directly;
hub ids go through the real ``from_pretrained`` path (which works online) and a failure to reach
the hub becomes one clear line telling the user what to do instead.
"""

from __future__ import annotations

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


def hub_call(name_or_path: str, load: Callable[[], T]) -> T:
    """Run a ``from_pretrained``-style call, turning hub and file errors into one clear line."""
    local = is_local_model(name_or_path)
    if not local and looks_like_path(name_or_path):
        raise LmctlError(f"model directory not found: {name_or_path}")
    if local:
        check_model_dir(name_or_path)
    try:
        return load()
    except LmctlError:
        raise
    except (OSError, ValueError) as exc:
        text = str(exc)
        if local:
            if "safetensors" in text.lower() or "header" in text.lower() or "deserializ" in text.lower():
                raise LmctlError(f"the weights in {name_or_path} are damaged or not safetensors: {first_line(text)}") from None
            raise LmctlError(f"could not load the model in {name_or_path}: {first_line(text)}") from None
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        reason = "offline mode is on" if offline else "the Hub is unreachable or the id does not exist"
        raise LmctlError(
            f"could not download '{name_or_path}' from the Hugging Face Hub ({reason}); "
            "use a local model directory, or --from-scratch to build the architecture without weights"
        ) from None


def first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else ""


def load_config_dict(name_or_path: str, *, trust_remote_code: bool = False) -> dict[str, Any]:
    """config.json as a dict: read from disk for a directory, through AutoConfig for a hub id."""
    from lmctl.families.base import read_config_json

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
        except (OSError, ValueError) as exc:
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
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"


def count_parameters(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())
