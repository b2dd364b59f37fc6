"""Checks that need no model: run before torch and transformers are imported (~0.5 s instead of
20-40 s on a busy machine), so a mistyped path, a directory holding another run, a missing data
file or an offline hub id not in the cache is one line at once.

Everything here reads files and settings only; the same conditions are checked again where the
work happens (library users do not go through the CLI).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmctl.core import checkpoint as ckpt
from lmctl.core.hub import looks_like_path, offline_mode
from lmctl.core.run_dir import check_new_run_dir
from lmctl.errors import LmctlError, UsageError

SMALL_TEXT_BYTES = 1 << 20  # text inputs up to this size are read to bound their token count


def check_model_reference(name: str, *, offline: bool = False, role: str = "--model", hint: str = "") -> None:
    """A local path must exist; a hub id in offline mode must be in the local Hugging Face cache.

    ``runs/x`` is a path when ``runs/`` exists here (hub ids look like ``org/name`` too)."""
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise LmctlError(f"{role} {name} is a file, not a model directory (expected config.json and weights inside)")
        return
    parts = Path(name).parts
    if looks_like_path(name) or (len(parts) > 1 and Path(parts[0]).expanduser().is_dir()):
        raise LmctlError(f"model directory not found: {name} ({role}: no such directory{_nearby(path)})")
    if offline or offline_mode():
        if not in_hub_cache(name):
            raise LmctlError(
                f"{role} {name}: not in the local Hugging Face cache, and offline mode is on (--offline or "
                f"HF_HUB_OFFLINE=1): download it once while online, or pass a local model directory{hint}"
            )


def _nearby(path: Path) -> str:
    """`; run directories in runs/: a, b` when the parent exists (the likely typo's neighbours)."""
    parent = path.parent
    if not parent.is_dir():
        return ""
    names = sorted(p.name for p in parent.iterdir() if p.is_dir() and not p.name.startswith("."))[:6]
    return f" (in {parent}: {', '.join(names)})" if names else ""


def in_hub_cache(repo_id: str) -> bool:
    """Whether ``repo_id``'s config.json is in the local Hugging Face cache (no network, no torch)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return True  # cannot tell: let the real load decide
    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 - an id the hub library refuses (bad characters): not cached
        return False
    return isinstance(found, str)


def check_train(config: Any) -> None:
    """``lmctl train``: settings, data files, the --out directory and --model, before any import."""
    config.validate()
    inputs = _check_train_inputs(config)
    _check_out(config)
    if not config.from_scratch:
        check_model_reference(config.model, offline=config.offline, hint=", or --from-scratch to build the architecture without weights")
    if config.tokenizer and not config.from_scratch and "/" in config.tokenizer:
        check_model_reference(config.tokenizer, offline=config.offline, role="--tokenizer")
    _check_enough_text(config, inputs)


def _check_train_inputs(config: Any) -> list[Any]:
    from lmctl.core.prepared import PreparedData
    from lmctl.workflows.prepare import resolve_inputs

    if len(config.train) == 1 and PreparedData.is_prepared(config.train[0]):
        return []
    inputs = resolve_inputs([item for item in config.train if not PreparedData.is_prepared(item)])
    if config.validation:
        resolve_inputs(list(config.validation), role="--validation")
    if config.validation_split is not None and inputs and all(item.reader == "text" for item in inputs):
        from lmctl.workflows.prepare import _text_validation_cut

        _text_validation_cut(inputs, config.validation_split)  # e.g. a one-line file: nothing to hold out
    return inputs


def _check_out(config: Any) -> None:
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; choose a directory path")
    machine_rank = config.machine_rank
    if config.resume:
        # Only machine 0's --out is sure to hold the checkpoint: under --num-machines it finds it and
        # sends its state to the others (a DDP machine's --out stays empty; FSDP shards are checked
        # by the trainer), so a machine other than 0 must not refuse here while machine 0 starts
        # and waits for it at the rendezvous.
        if machine_rank == 0:
            ckpt.find_resume_checkpoint(out, config.resume)  # "no checkpoint in ..." at once
    else:
        check_new_run_dir(out, resume=None, overwrite=config.overwrite, machine_rank=machine_rank)


def _check_enough_text(config: Any, inputs: list[Any]) -> None:
    """Small text files can be bounded without a tokenizer: every token covers at least one
    character, plus at most one separator per line.  Only a sure failure is reported here."""
    block = config.block_size or (128 if config.from_scratch else None)
    if not block or not inputs or config.validation_split is not None or config.line_by_line:
        return
    if any(item.reader != "text" for item in inputs) or sum(item.size for item in inputs) > SMALL_TEXT_BYTES:
        return
    chars = lines = 0
    for item in inputs:
        text = Path(item.path).read_text(encoding="utf-8", errors="replace")
        chars += len(text)
        lines += text.count("\n") + 1
    most = chars + lines + 1
    if most < block + 1:
        raise UsageError(
            f"the training data has at most {most} tokens, less than one block of {block}: "
            "use more data or a smaller --block-size"
        )


def check_eval(data: list[str], *, document_split: str | None, line_by_line: bool, precision: str, batch_size: int) -> None:
    """``lmctl eval``: the data paths and options, before any import."""
    from lmctl.data.readers import DOCUMENT_SPLITS
    from lmctl.workflows.evaluate import check_data_paths

    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise UsageError(f"--precision must be auto, fp32, bf16 or fp16, got {precision!r}")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    if document_split is not None and document_split not in DOCUMENT_SPLITS:
        raise UsageError(f"--document-split must be one of {', '.join(DOCUMENT_SPLITS)}, got {document_split!r}")
    if line_by_line and document_split not in (None, "lines"):
        raise UsageError("--line-by-line makes every line an example; leave out --document-split (or use lines)")
    prepared, _raw = check_data_paths(data)
    if prepared and (document_split or line_by_line):
        raise UsageError("--document-split and --line-by-line apply to raw text files; prepared data keeps its own")
