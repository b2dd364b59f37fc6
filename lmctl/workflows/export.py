"""``lmctl export``: a checkpoint (or a part of it) as a standalone Hugging Face model directory.

Checkpoints already hold a loadable model; export copies just the model files (no optimizer or
RNG state) and, for ELECTRA, picks the generator or the discriminator.  ``--merge`` turns a LoRA
adapter into a plain model: its base (full precision) with the adapter merged into the weights.
Every file written is verified (safetensors headers, tensor sizes) before it replaces ``--out``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lmctl.errors import LmctlError, UsageError

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
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"--out {dest} is a file; choose a directory path")
    if dest.exists() and any(dest.iterdir()) and not force:
        raise UsageError(f"{dest} exists and is not empty; choose another --out or pass --force")
    files = [
        entry
        for entry in sorted(src.iterdir())
        if entry.is_file() and entry.name not in TRAINING_STATE and not entry.name.startswith("rng-")
    ]
    verify_model_files(src, files)  # a damaged checkpoint is refused before anything is written
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {dest}: cannot create its parent directory ({exc.strerror or exc})") from None
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        if merge:
            _write_merged(src, tmp)
            written = sorted(p for p in tmp.iterdir() if p.is_file())
        else:
            for entry in files:
                shutil.copy2(entry, tmp / entry.name)
            written = [tmp / entry.name for entry in files]
        # What was written is what the checkpoint holds: checked again on the copies.
        verify_model_files(tmp, written, shown=dest)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            from lmctl.core.disk import is_out_of_space, space_reason

            reason = space_reason(exc) if is_out_of_space(exc) else (exc.strerror or str(exc))
            raise LmctlError(f"could not write the export to {dest} ({reason}); nothing was changed there") from None
        raise
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return dest


def verify_model_files(directory: Path, files: list[Path], shown: Path | None = None) -> None:
    """Every weights file's header parses and every tensor's bytes are there; config.json parses."""
    import json

    from lmctl.core.checkpoint import safetensors_problem

    shown = shown or directory
    if not any(f.name.endswith(".safetensors") for f in files):
        raise LmctlError(f"{directory} has no weights (*.safetensors); nothing was exported")
    for path in files:
        if path.name.endswith(".safetensors"):
            problem = safetensors_problem(path)
            if problem:
                raise LmctlError(
                    f"{shown / path.name} is damaged ({problem}); nothing was exported: export an intact checkpoint"
                )
        elif path.name == "config.json":
            try:
                json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                raise LmctlError(f"{shown / path.name} is not valid JSON; nothing was exported") from None


def _write_merged(adapter_dir: Path, out: Path) -> None:
    """The adapter's base model (full precision, even for a QLoRA adapter) with the adapter merged in."""
    from lmctl.core.hub import load_tokenizer
    from lmctl.plugins.registry import resolve_family

    family = resolve_family(str(adapter_dir))
    model = family.load_for_inference(str(adapter_dir))
    tokenizer = load_tokenizer(str(adapter_dir))
    family.save(model, tokenizer, out)
