"""``lmctl export``: a checkpoint (or a part of it) as a standalone Hugging Face model directory.

Checkpoints already hold a loadable model; export copies just the model files (no optimizer or
RNG state) and, for ELECTRA, picks the generator or the discriminator.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lmctl.errors import UsageError

TRAINING_STATE = ("optimizer.safetensors", "optimizer.json", "trainer_state.json")


def export_checkpoint(checkpoint: str | Path, out: str | Path, part: str = "model", *, force: bool = False) -> Path:
    """Copy the model in ``checkpoint`` to ``out``; ``part`` is model, discriminator or generator."""
    src = Path(checkpoint)
    if not (src / "config.json").is_file():
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
    for entry in src.iterdir():
        if entry.name in TRAINING_STATE or entry.name.startswith("rng-") or entry.name == "generator":
            continue
        if entry.is_file():
            shutil.copy2(entry, tmp / entry.name)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return dest
