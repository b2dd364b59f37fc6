"""``lmctl export``: a checkpoint (or a part of it) as a standalone Hugging Face model directory.

Checkpoints already hold a loadable model; export copies just the model files (no optimizer or
RNG state) and, for ELECTRA, picks the generator or the discriminator.  A LoRA adapter (a run's
output or checkpoint, ``adapter_config.json``) is copied as an adapter, or with ``merge`` loaded
onto its base model, merged into the weights and written as a plain model directory.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lmctl.errors import UsageError

TRAINING_STATE = ("optimizer.safetensors", "optimizer.json", "trainer_state.json")


def export_checkpoint(
    checkpoint: str | Path, out: str | Path, part: str = "model", *, force: bool = False, merge: bool = False
) -> Path:
    """Copy the model in ``checkpoint`` to ``out``; ``part`` is model, discriminator or generator;
    ``merge``: a LoRA adapter merged into its base model's weights."""
    from lmctl.kit.adapters import is_adapter_dir

    src = Path(checkpoint)
    adapter = is_adapter_dir(src)
    if merge and not adapter:
        raise UsageError(f"--merge: {src} is not a LoRA adapter (no adapter_config.json); export it without --merge")
    if not adapter and not (src / "config.json").is_file():
        raise UsageError(f"{src} is not a checkpoint or model directory (no config.json)")
    has_generator = (src / "generator" / "config.json").is_file()
    if part == "generator":
        if not has_generator:
            raise UsageError(f"{src} has no generator/ (only ELECTRA checkpoints do); use --part model")
        src = src / "generator"
    elif part not in ("model", "discriminator"):
        raise UsageError(f"--part must be model, discriminator or generator, got {part!r}")
    elif part == "discriminator" and not has_generator:
        raise UsageError(f"{src} is not an ELECTRA checkpoint; use --part model")
    dest = Path(out)
    if dest.exists() and any(dest.iterdir()) and not force:
        raise UsageError(f"{dest} exists and is not empty; choose another --out or pass --force")
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if merge:
        try:
            _write_merged(src, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return _commit(tmp, dest)
    for entry in src.iterdir():
        if entry.name in TRAINING_STATE or entry.name.startswith("rng-") or entry.name == "generator":
            continue
        if entry.is_file():
            shutil.copy2(entry, tmp / entry.name)
    return _commit(tmp, dest)


def _commit(tmp: Path, dest: Path) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return dest


def _write_merged(adapter_dir: Path, out: Path) -> None:
    """The adapter's base model (full precision, even for a QLoRA adapter) with the adapter merged in."""
    from lmctl.core.hub import load_tokenizer
    from lmctl.plugins.registry import resolve_family

    family = resolve_family(str(adapter_dir))
    model = family.load_for_inference(str(adapter_dir))
    tokenizer = load_tokenizer(str(adapter_dir))
    family.save(model, tokenizer, out)
