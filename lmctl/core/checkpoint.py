"""Checkpoints: written atomically, found reliably, loaded without unpickling untrusted data.

``OUT/checkpoints/step-N/`` (N not zero-padded) holds:

* the model as a plain Hugging Face directory (``config.json``, ``model.safetensors``, tokenizer;
  ELECTRA adds ``generator/``), so any checkpoint is also a loadable model;
* ``optimizer.safetensors`` + ``optimizer.json``: the optimizer state as tensors and plain JSON
  (no pickle);
* ``rng-R.safetensors`` + ``rng-R.json`` per process R: torch, CUDA, collator and Python RNG states;
* ``trainer_state.json``: step, samples seen, gradient-accumulation phase, world size, layout
  (``whole`` or ``sharded``), best eval, the config fingerprint that resuming checks.  It is written last.

With ``--strategy fsdp`` the model and optimizer are sharded instead (``layout: sharded``):
``__R.metadata`` + ``__R_0.distcp`` per process R (torch.distributed.checkpoint), each machine
holding its own processes' files, and a merged ``.metadata`` where all are in one directory (see
:mod:`lmctl.core.sharding`).  Only the main process writes the model, optimizer and RNG files of a
``whole`` checkpoint (the RNG states of all processes are gathered to it), so machines need no
shared filesystem.  DCP's ``.metadata`` files are pickles (torch's format): the one exception to
"no unpickling", so sharded checkpoints are for resuming your own runs.

Every checkpoint is written to ``checkpoints/.tmp-step-N-PID`` and renamed into place, so a
killed process never leaves a half-written ``step-N`` that ``--resume auto`` would pick.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from lmctl.errors import LmctlError, UsageError

STEP_DIR = re.compile(r"^step-(\d+)$")
STATE_FILE = "trainer_state.json"


def checkpoints_dir(out: str | Path) -> Path:
    return Path(out) / "checkpoints"


def list_checkpoints(out: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``out`` as (step, path), oldest first."""
    root = checkpoints_dir(out)
    found = []
    if root.is_dir():
        for entry in root.iterdir():
            match = STEP_DIR.match(entry.name)
            if match and (entry / STATE_FILE).is_file():
                found.append((int(match.group(1)), entry))
    return sorted(found)


def find_resume_checkpoint(out: str | Path, resume: str) -> Path:
    """``--resume auto``: the latest complete checkpoint in ``out``; else the given directory."""
    if resume == "auto":
        found = list_checkpoints(out)
        if not found:
            raise UsageError(f"--resume auto: no checkpoint in {checkpoints_dir(out)}; start without --resume")
        return found[-1][1]
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise UsageError(f"--resume {resume}: not a complete lmctl checkpoint (no {STATE_FILE})")
    return path


def clean_temporary(out: str | Path) -> None:
    """Remove leftovers of checkpoints whose writing was interrupted."""
    root = checkpoints_dir(out)
    if root.is_dir():
        for entry in root.iterdir():
            if entry.name.startswith(".tmp-"):
                shutil.rmtree(entry, ignore_errors=True)


def temporary_dir(out: str | Path, step: int) -> Path:
    root = checkpoints_dir(out)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-step-{step}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def commit(tmp: Path, out: str | Path, step: int) -> Path:
    """Rename a fully written temporary checkpoint into ``step-N`` (atomic on one filesystem)."""
    final = checkpoints_dir(out) / f"step-{step}"
    fsync_tree(tmp)
    if final.exists():  # a re-save of the same step (e.g. interrupted right after a periodic save)
        old = final.with_name(f".tmp-old-{step}-{os.getpid()}")
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)
    return final


def fsync_tree(path: Path) -> None:
    """Flush files to disk before the rename makes them visible (crash safety, not just kill safety)."""
    for root, _dirs, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def prune(out: str | Path, keep_last: int, protect: set[int]) -> None:
    """Delete all but the newest ``keep_last`` checkpoints, never those in ``protect`` (the best)."""
    found = list_checkpoints(out)
    keep = {step for step, _ in found[-keep_last:]} if keep_last > 0 else set()
    for step, path in found:
        if step not in keep and step not in protect:
            shutil.rmtree(path, ignore_errors=True)


# --- optimizer and RNG state without pickle -------------------------------------------------------


def save_optimizer(optimizer: Any, path: Path) -> None:
    """Optimizer state as safetensors (tensors) + JSON (everything else)."""
    from safetensors.torch import save_file

    state = optimizer.state_dict()
    tensors: dict[str, Any] = {}
    plain_state: dict[str, dict[str, Any]] = {}
    for param_id, values in state["state"].items():
        plain_state[str(param_id)] = {}
        for key, value in values.items():
            if hasattr(value, "detach"):
                tensors[f"{param_id}.{key}"] = value.detach().cpu().contiguous()
                plain_state[str(param_id)][key] = {"tensor": f"{param_id}.{key}"}
            else:
                plain_state[str(param_id)][key] = value
    save_file(tensors, str(path / "optimizer.safetensors"))
    (path / "optimizer.json").write_text(json.dumps({"state": plain_state, "param_groups": state["param_groups"]}))


def load_optimizer(optimizer: Any, path: Path) -> None:
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path / "optimizer.safetensors"))
    except Exception as exc:  # noqa: BLE001 - any damage reads the same to the user
        raise damaged(path, "optimizer.safetensors", exc) from None
    try:
        meta = json.loads((path / "optimizer.json").read_text())
        meta["state"], meta["param_groups"]  # noqa: B018 - both must be there
    except Exception as exc:  # noqa: BLE001
        raise damaged(path, "optimizer.json", exc) from None
    state: dict[int, dict[str, Any]] = {}
    for param_id, values in meta["state"].items():
        state[int(param_id)] = {
            key: tensors[value["tensor"]] if isinstance(value, dict) and "tensor" in value else value
            for key, value in values.items()
        }
    try:
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    except (ValueError, KeyError) as exc:
        raise UsageError(f"the optimizer state in {path} does not fit this model ({exc}); the config changed") from None


def write_rng(path: Path, rank: int, state: dict[str, Any]) -> None:
    """Process ``rank``'s RNG state (:func:`lmctl.core.sharding.rng_state`) as ``rng-R.safetensors`` + ``rng-R.json``.
    The main process writes every rank's state (gathered over the process group), so no other
    process writes into its directory: machines need no shared filesystem."""
    from safetensors.torch import save_file

    tensors = {"torch": state["torch"], "collate": state["collate"]}
    for i, s in enumerate(state.get("cuda") or []):
        tensors[f"cuda.{i}"] = s
    save_file(tensors, str(path / f"rng-{rank}.safetensors"))
    version, internal, gauss = state["python"]
    (path / f"rng-{rank}.json").write_text(json.dumps({"python": [version, list(internal), gauss]}))


def read_rng(path: Path, rank: int) -> dict[str, Any] | None:
    """Process ``rank``'s saved RNG state; None when the checkpoint was written by fewer processes."""
    from safetensors.torch import load_file

    file = path / f"rng-{rank}.safetensors"
    if not file.is_file():
        return None
    try:
        tensors = load_file(str(file))
        state: dict[str, Any] = {"torch": tensors["torch"], "collate": tensors["collate"]}
    except Exception as exc:  # noqa: BLE001 - any damage reads the same to the user
        raise damaged(path, file.name, exc) from None
    try:
        python = json.loads((path / f"rng-{rank}.json").read_text())["python"]
        state["python"] = (python[0], tuple(python[1]), python[2])
    except Exception as exc:  # noqa: BLE001
        raise damaged(path, f"rng-{rank}.json", exc) from None
    state["cuda"] = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    return state


def saved_rng_ranks(path: Path) -> int:
    """How many processes' RNG states a checkpoint holds."""
    return len(list(path.glob("rng-*.safetensors")))


def load_model_weights(model: Any, directory: Path) -> None:
    """Load ``model.safetensors`` of a saved model into an already built ``model`` (strict, tie-aware)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = directory / "model.safetensors"
    try:
        state = load_file(str(file))
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise damaged(directory, file.name, exc) from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    # save_pretrained drops tied copies (e.g. lm_head.weight = wte.weight): those may be missing.
    own = model.state_dict()
    loaded_ptrs = {own[k].data_ptr() for k in state if k in own}
    really_missing = [k for k in missing if own[k].data_ptr() not in loaded_ptrs]
    if unexpected or really_missing:
        raise LmctlError(
            f"{file} does not match the model (missing {really_missing[:3]}, unexpected {unexpected[:3]}); the config changed"
        )


def read_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads((path / STATE_FILE).read_text())
        if not isinstance(state, dict) or not isinstance(state.get("step"), int):
            raise ValueError("no step number")
    except (OSError, ValueError) as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise damaged(path, STATE_FILE, exc) from None
    return state


def damaged(path: Path, file_name: str, exc: BaseException) -> LmctlError:
    """One line for a damaged file of checkpoint ``path``, naming the checkpoint to resume from instead."""
    detail = " ".join(str(exc).split()) or type(exc).__name__
    if len(detail) > 120:
        detail = detail[:117] + "..."
    if not STEP_DIR.match(path.name) and STEP_DIR.match(path.parent.name):  # ELECTRA's generator/
        file_name, path = f"{path.name}/{file_name}", path.parent
    match = STEP_DIR.match(path.name)
    earlier = [p for step, p in list_checkpoints(path.parent.parent) if match and step < int(match.group(1))]
    if earlier:
        hint = f"resume from the checkpoint before it with --resume {earlier[-1]}"
    else:
        hint = f"there is no earlier one: delete {path} and train again without --resume"
    return LmctlError(f"checkpoint {path} is damaged: {file_name} cannot be read ({type(exc).__name__}: {detail}); {hint}")


# --- verifying safetensors files ------------------------------------------------------------------

SAFETENSORS_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "U16": 2, "I16": 2, "F16": 2,
    "BF16": 2, "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8, "C64": 8,
}  # fmt: skip


def safetensors_problem(path: Path) -> str | None:
    """What is wrong with a ``.safetensors`` file, or None: the header must parse, and every
    tensor's byte range must match its shape and dtype and lie inside the file, ranges back to back.
    Reads the header only (a few KB), so it is cheap for any model size."""
    import struct

    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                return f"{size} bytes, too short for a header"
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > size - 8 or header_len > 100_000_000:
                return f"its header claims {header_len} bytes but the file has {size}"
            header = json.loads(handle.read(header_len))
    except OSError as exc:
        return exc.strerror or str(exc)
    except (ValueError, UnicodeDecodeError):
        return "its header is not valid JSON"
    if not isinstance(header, dict):
        return "its header is not a JSON object"
    data_size = size - 8 - header_len
    ranges = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
            count = 1
            for dim in shape:
                count *= int(dim)
        except (KeyError, TypeError, ValueError):
            return f"tensor {name!r} has a malformed header entry"
        width = SAFETENSORS_DTYPE_BYTES.get(dtype)
        if width is not None and end - begin != count * width:
            return f"tensor {name!r} should take {count * width} bytes but its range has {end - begin}"
        if not 0 <= begin <= end <= data_size:
            return f"tensor {name!r} ends at byte {end} of the data but the file holds {data_size} (truncated)"
        ranges.append((begin, end))
    ranges.sort()
    covered = 0
    for begin, end in ranges:
        if begin != covered:
            return f"its tensors leave a gap or overlap at byte {covered}"
        covered = end
    if covered != data_size:
        return f"its tensors take {covered} bytes but the file holds {data_size} after the header"
    return None
