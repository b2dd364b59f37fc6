"""Run directories (what ``lmctl train --out DIR`` writes) as a whole: what is in one, which model
in it a command should use, and how a new run may start in it.

A run directory holds ``run.json``, ``metrics.jsonl``, ``checkpoints/step-N/`` and, once the run
finished, the final model (a plain Hugging Face directory: ``config.json``, weights, tokenizer,
``README.md``) and ``curves.png``.  Everything here reads files only (no torch), so the CLI can
answer before the heavy imports.

Kept small on purpose: adapter runs and sharded checkpoints extend :func:`resolve_model_dir`
(a new kind of directory is one more branch that returns a :class:`ResolvedModel`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmctl.core import checkpoint as ckpt
from lmctl.errors import UsageError

RUN_FILES = ("run.json", "metrics.jsonl", "curves.png", "README.md")
# What ``Family.save`` / ``save_pretrained`` write for a final model, for runs whose run.json does
# not list its final files (written by lmctl before it recorded them).
MODEL_FILE_PATTERNS = (
    "config.json", "generation_config.json", "model.safetensors", "model-*.safetensors", "model.safetensors.index.json",
    "pytorch_model*.bin", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
    "vocab.txt", "merges.txt", "spiece.model", "added_tokens.json", "chat_template.jinja", "lmctl_model.json",
    "generator",
)  # fmt: skip
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json")


def read_run_record(out: str | Path) -> dict[str, Any]:
    """``run.json`` as a dict ({} when absent or unreadable)."""
    try:
        record = json.loads((Path(out) / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def final_model_present(path: str | Path) -> bool:
    """A loadable model directory: config.json and weights."""
    p = Path(path)
    return (p / "config.json").is_file() and any(next(p.glob(pattern), None) for pattern in WEIGHT_PATTERNS)


def has_earlier_run(out: str | Path) -> bool:
    """Whether lmctl trained into ``out`` before (its run files, checkpoints or a final model)."""
    p = Path(out)
    if not p.is_dir():
        return False
    if bool(ckpt.list_checkpoints(p)) or final_model_present(p):
        return True
    # A run.json alone is an earlier run that saved nothing (killed while starting): starting again
    # loses nothing, so it is not refused; a finished or interrupted one has a model or checkpoints.
    record = read_run_record(p)
    return bool(record) and record.get("status") not in (None, "running")


def has_unfinished_checkpoints(out: str | Path) -> bool:
    """Checkpoints of a run that did not finish (interrupted, stopped on NaN): ``--resume auto`` continues it."""
    return bool(ckpt.list_checkpoints(out)) and read_run_record(out).get("status") != "finished"


def describe_earlier_run(out: str | Path) -> str:
    record = read_run_record(out)
    status = record.get("status") or "unknown"
    steps = (record.get("result") or {}).get("steps")
    found = ckpt.list_checkpoints(out)
    if steps is None and found:
        steps = found[-1][0]
    return status + (f" at step {steps}" if steps is not None else "")


def check_new_run_dir(out: str | Path, *, resume: str | None, overwrite: bool, machine_rank: int = 0) -> None:
    """A run without --resume may start only in a directory with no earlier run, or with
    --overwrite: mixing two runs' files in one directory leaves it inconsistent.  A directory
    another live run is writing is refused first, whatever the flags (see :mod:`lmctl.core.run_lock`;
    ``machine_rank``: this machine's --machine-rank, whose lock only machine 0 takes)."""
    from lmctl.core.run_lock import refuse_if_held_elsewhere

    refuse_if_held_elsewhere(out, machine_rank=machine_rank)
    if resume or overwrite or not has_earlier_run(out):
        return
    raise UsageError(
        f"{out} already holds an earlier run ({describe_earlier_run(out)}): pass --resume auto to continue it "
        "(with a new --max-steps to train it longer), --overwrite to replace it, or choose another --out"
    )


def final_model_files(out: str | Path) -> list[Path]:
    """The final model's files in a run directory (as listed in run.json, else by name)."""
    p = Path(out)
    listed = (read_run_record(p).get("result") or {}).get("final_files")
    names: set[Path] = set()
    if isinstance(listed, list):
        names.update(p / str(name) for name in listed if "/" not in str(name) and str(name) not in ("", ".", ".."))
    for pattern in MODEL_FILE_PATTERNS:
        names.update(p.glob(pattern))
    return sorted(path for path in names if path.exists())


def remove_paths(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def remove_final_model(out: str | Path) -> None:
    """Remove a finished run's final model, card and curves (a resumed run is about to go past
    them; until it finishes, its checkpoints are the model)."""
    p = Path(out)
    remove_paths(final_model_files(p) + [p / "README.md", p / "curves.png"])


def clear_run(out: str | Path) -> None:
    """``--overwrite``: remove everything an earlier lmctl run wrote in ``out`` (only those files)."""
    p = Path(out)
    remove_paths(final_model_files(p) + [p / name for name in RUN_FILES] + [ckpt.checkpoints_dir(p)])


# --- which model of a run directory a command uses ------------------------------------------------


@dataclass
class ResolvedModel:
    path: Path
    note: str | None = None  # what was chosen and why, for stderr (None: the directory itself)


def resolve_model_dir(model: str, checkpoint: str | None = None) -> ResolvedModel:
    """``--model RUN_DIR``: the run's final model, else its latest checkpoint; ``checkpoint``
    ("latest", "best", "step-N" or N) picks a checkpoint explicitly.  Hub ids and ordinary
    model directories are returned unchanged."""
    p = Path(model).expanduser()
    if not p.is_dir():
        if checkpoint:
            raise UsageError(f"--checkpoint {checkpoint}: {model} is not a run directory")
        return ResolvedModel(Path(model))
    found = ckpt.list_checkpoints(p)
    if checkpoint:
        if not found:
            raise UsageError(f"--checkpoint {checkpoint}: {p} has no checkpoints ({ckpt.checkpoints_dir(p)})")
        return ResolvedModel(*_pick_checkpoint(p, found, checkpoint))
    if final_model_present(p) or not found:
        if not final_model_present(p) and (p / "run.json").is_file():
            raise UsageError(
                f"{p} is a run directory with neither a final model nor a checkpoint: "
                "the run stopped before its first save; train again (or resume with --resume auto if it has checkpoints)"
            )
        return ResolvedModel(p)
    step, path = found[-1]
    status = read_run_record(p).get("status") or "unfinished"
    return ResolvedModel(
        path,
        f"{p} has no final model (run {status}); using its latest checkpoint, step {step} ({path}); "
        "--checkpoint best|step-N picks another, and the training command with --resume auto finishes the run",
    )


def _pick_checkpoint(run: Path, found: list[tuple[int, Path]], which: str) -> tuple[Path, str]:
    steps = {step: path for step, path in found}
    if which == "latest":
        step = found[-1][0]
        return steps[step], f"using the latest checkpoint of {run}: step {step} ({steps[step]})"
    if which == "best":
        best = _best_step(run)
        if best is None or best not in steps:
            where = "no evaluation was run" if best is None else f"its checkpoint (step {best}) was not kept"
            raise UsageError(f"--checkpoint best: {run} has no best checkpoint ({where}); use --checkpoint latest")
        return steps[best], f"using the best checkpoint of {run}: step {best} ({steps[best]})"
    text = which.removeprefix("step-")
    if not text.isdigit() or int(text) not in steps:
        have = ", ".join(f"step-{s}" for s in steps) or "none"
        raise UsageError(f"--checkpoint {which}: no such checkpoint in {run} (have: {have}); use best, latest or step-N")
    return steps[int(text)], f"using checkpoint step {int(text)} of {run} ({steps[int(text)]})"


def _best_step(run: Path) -> int | None:
    found = ckpt.list_checkpoints(run)
    for _step, path in reversed(found):
        try:
            best = ckpt.read_state(path).get("best_step")
        except Exception:  # noqa: BLE001 - a damaged state file: try the one before it
            continue
        if isinstance(best, int):
            return best
    return None


# --- how a saved model was trained to see text ----------------------------------------------------

MODEL_INFO = "lmctl_model.json"


def write_model_info(directory: str | Path, info: dict[str, Any]) -> None:
    """``lmctl_model.json`` beside a saved model: the data conventions it was trained with
    (``document_split``, ``line_by_line``, ``block_size``), so ``lmctl eval`` on raw text cuts
    documents and windows the way the model saw them."""
    Path(directory, MODEL_INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_model_info(model: str | Path) -> dict[str, Any]:
    """``lmctl_model.json`` of a local model directory ({} for hub ids and other models)."""
    try:
        info = json.loads(Path(model, MODEL_INFO).expanduser().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}
