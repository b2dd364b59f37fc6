"""Past one process: FSDP2 sharding, sharded checkpoints (torch.distributed.checkpoint) and
rank-0 state shared over the process group.  Mechanics only; the trainer decides when.

Why each piece is the way it is (each was checked with 2 gloo processes on torch 2.13):

* ``fully_shard`` per transformer block, then the root.  The blocks are the classes a model lists
  in ``_no_split_modules`` (HF's own "never split this" list; found through a peft wrapper too),
  else the children of its largest ``ModuleList``.  Tied embeddings and output layer stay in the
  root unit, so the tie survives.
* Sharded checkpoints are written with ``use_collectives=False``: every rank writes its own
  ``__R.metadata`` and ``__R_0.distcp``, so no rank ever needs another machine's files (the
  collective planner puts replicated items, such as AdamW's ``step``, in whichever rank's file is
  smallest).  When every rank's files sit in one directory, :func:`merge_rank_metadata` writes
  the global ``.metadata`` that a load on another number of processes needs; without it a
  1-process load silently reads rank 0's half only, so it checks that the chunks cover every
  tensor.
* Non-persistent buffers (rotary ``inv_freq``) are in no state dict: after building on the meta
  device they are re-created from the module's config.
"""

from __future__ import annotations

import logging
import pickle
import random
import warnings
from pathlib import Path
from typing import Any

from lmctl.errors import UsageError


def dist_ready() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


# --- sharding -------------------------------------------------------------------------------------


def find_blocks(model: Any) -> list[Any]:
    """The transformer blocks: classes named in ``_no_split_modules``, else the largest ModuleList's children."""
    import torch

    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or [])
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    if blocks:
        return blocks
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    return list(max(lists, key=len)) if lists else []


def shard_model(model: Any, *, reshard_after_forward: bool = True, block_names: list[str] | None = None) -> Any:
    """``fully_shard`` every block, then the root (embeddings, final norm and a tied output layer)."""
    from torch.distributed.fsdp import fully_shard

    blocks = [m for m in model.modules() if type(m).__name__ in block_names] if block_names else find_blocks(model)
    for block in blocks:
        fully_shard(block, reshard_after_forward=reshard_after_forward)
    fully_shard(model, reshard_after_forward=reshard_after_forward)
    return model


def is_sharded(model: Any) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def parameter_bytes(model: Any) -> tuple[int, int]:
    """(bytes this rank holds, bytes of the whole model), from the local shards; tied parameters count once."""
    from torch.distributed.tensor import DTensor

    local = full = 0
    for param in model.parameters():  # parameters() yields a tied parameter once
        size = param.element_size()
        local += (param.to_local().numel() if isinstance(param, DTensor) else param.numel()) * size
        full += param.numel() * size
    return local, full


def set_gradient_sync(model: Any, sync: bool) -> None:
    """Gradient accumulation: no reduce-scatter until the last micro-batch."""
    if is_sharded(model):
        model.set_requires_gradient_sync(sync)


def clip_grad_norm(parameters: Any, max_norm: float) -> Any:
    """Clip; the total norm as a plain tensor (with sharded gradients torch returns a DTensor)."""
    import torch
    from torch.distributed.tensor import DTensor

    norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    return norm.full_tensor() if isinstance(norm, DTensor) else norm


def materialize_and_broadcast(model: Any, full_state: dict[str, Any] | None, device: Any) -> None:
    """After sharding a model built on the meta device (every rank but 0): allocate the local shards,
    re-create the non-persistent buffers and fill the weights from rank 0's full state dict."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    if any(p.is_meta for p in model.parameters()) or any(b.is_meta for b in model.buffers()):
        model.to_empty(device=device)
    reinit_nonpersistent_buffers(model)
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_model_state_dict(model, full_state or {}, options=options)


def reinit_nonpersistent_buffers(model: Any) -> None:
    """Rebuild buffers that no state dict holds (rotary ``inv_freq``) from their module's config."""
    import torch

    for name, module in model.named_modules():
        buffers = [b for b in getattr(module, "_non_persistent_buffers_set", ()) if module._buffers.get(b) is not None]
        if not buffers:
            continue
        try:
            with torch.device("cpu"):
                fresh = type(module)(config=module.config)
        except Exception as exc:  # noqa: BLE001 - any failure means the same: we cannot rebuild it
            raise UsageError(
                f"cannot rebuild the buffer {name}.{buffers[0]} after sharding ({type(exc).__name__}); "
                "train this model with --strategy ddp"
            ) from None
        for buffer in buffers:
            old = module._buffers[buffer]
            module._buffers[buffer] = fresh._buffers[buffer].to(device=old.device if not old.is_meta else "cpu", dtype=old.dtype)
        if hasattr(fresh, "attention_scaling"):
            module.attention_scaling = fresh.attention_scaling


def full_model_state(model: Any) -> dict[str, Any]:
    """The whole state dict on rank 0 (CPU), ``{}`` elsewhere.  A collective: every rank calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def unsharded_copy(model: Any, state: dict[str, Any]) -> Any:
    """A plain (unsharded) model of the same class holding ``state``: what ``save_pretrained`` saves."""
    import torch
    from torch.distributed.fsdp import FSDPModule

    with torch.device("meta"):
        if getattr(model, "peft_config", None):  # a peft wrapper: the base model, wrapped again the same way
            from peft import get_peft_model

            base = model.get_base_model()
            base_cls = next(c for c in type(base).__mro__ if not issubclass(c, FSDPModule))
            name = getattr(model, "active_adapter", "default")
            plain = get_peft_model(base_cls(base.config), model.peft_config[name], adapter_name=name)
        else:
            cls = next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule))
            plain = cls(model.config)
    plain.load_state_dict(state, assign=True, strict=False)
    reinit_nonpersistent_buffers(plain)
    if getattr(plain, "tie_weights", None):
        plain.tie_weights()
    elif hasattr(plain, "get_base_model"):
        plain.get_base_model().tie_weights()
    missing = [n for n, p in plain.named_parameters() if p.is_meta]
    if missing:
        raise RuntimeError(f"the gathered state misses {missing[:3]}")
    if getattr(model, "generation_config", None) is not None:
        plain.generation_config = model.generation_config
    return plain


# --- sharded checkpoints (torch.distributed.checkpoint) --------------------------------------------


def quiet_checkpoint_logger() -> None:
    """DCP logs a warning with a traceback on every rank when it falls back to ``__R.metadata``."""
    logging.getLogger("torch.distributed.checkpoint").setLevel(logging.ERROR)
    logging.getLogger("torch.distributed.checkpoint.filesystem").setLevel(logging.ERROR)


def save_sharded(model: Any, optimizer: Any, directory: Path) -> None:
    """Each rank writes its own shard of the model and optimizer into ``directory`` (its machine's)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    writer = dcp.FileSystemWriter(str(directory))
    if dist_ready():
        dcp.save({"model": model_state, "optim": optim_state}, storage_writer=writer, use_collectives=False)
    else:
        with warnings.catch_warnings():  # "assuming the intent is to save in a single process": it is
            warnings.simplefilter("ignore", UserWarning)
            dcp.save({"model": model_state, "optim": optim_state}, storage_writer=writer, no_dist=True)


def load_sharded(model: Any, optimizer: Any, directory: Path, *, saved_world: int) -> None:
    """Fill this rank's shards (or a whole unsharded model) from a sharded checkpoint.  On another
    number of processes the global ``.metadata`` is needed (written at save time on one machine)."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    quiet_checkpoint_logger()
    world = dist.get_world_size() if dist_ready() else 1
    if not (directory / ".metadata").is_file():
        if world != saved_world:
            merge_rank_metadata(directory, saved_world)
        elif not (directory / f"__{dist.get_rank() if dist_ready() else 0}.metadata").is_file():
            raise UsageError(f"{directory} holds no shard of this process: resume each machine from its own --out")
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state}
    reader = dcp.FileSystemReader(str(directory))
    if dist_ready():
        dcp.load(state, storage_reader=reader)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            dcp.load(state, storage_reader=reader, no_dist=True)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


def merge_rank_metadata(directory: Path, world: int) -> None:
    """Join the ``__R.metadata`` of all ``world`` ranks into the global ``.metadata``; refuse (one
    line) when a rank's files are missing, instead of silently loading part of the model."""
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import Metadata, TensorStorageMetadata

    files = [directory / f"__{rank}.metadata" for rank in range(world)]
    missing = [f.name for f in files if not f.is_file()] + [
        f"__{rank}_0.distcp" for rank in range(world) if not (directory / f"__{rank}_0.distcp").is_file()
    ]
    if missing:
        raise UsageError(
            f"{directory} lacks {', '.join(missing[:4])}: resuming on another number of processes needs every "
            f"machine's files; copy the {directory.name} directories of all {world} processes' machines into one"
        )
    # torch's own reader (DCP metadata is a pickle: resume only from checkpoints you wrote).
    parts = [dcp.FileSystemReader(str(directory)).read_metadata(rank=rank) for rank in range(world)]
    items: dict[str, Any] = {}
    storage: dict[Any, Any] = {}
    for part in parts:
        for key, item in part.state_dict_metadata.items():
            if key not in items:
                items[key] = item
            elif isinstance(item, TensorStorageMetadata):
                have = {tuple(c.offsets) for c in items[key].chunks}
                items[key].chunks.extend(c for c in item.chunks if tuple(c.offsets) not in have)
        storage.update(part.storage_data)
    for key, item in items.items():
        if isinstance(item, TensorStorageMetadata):
            covered = sum(int(torch.Size(c.sizes).numel()) for c in item.chunks)
            if covered != int(item.size.numel()):
                raise UsageError(f"{directory}: {key} is only partly saved ({covered} of {item.size.numel()} values)")
    merged = Metadata(
        state_dict_metadata=items,
        planner_data=parts[0].planner_data,
        storage_data=storage,
        storage_meta=parts[0].storage_meta,
        version=parts[0].version,
    )
    tmp = directory / ".metadata.tmp"
    tmp.write_bytes(pickle.dumps(merged))
    tmp.replace(directory / ".metadata")


# --- RNG states, gathered to rank 0 and handed back -------------------------------------------------


def rng_state(collate_generator: Any) -> dict[str, Any]:
    import torch

    state = {"torch": torch.get_rng_state(), "collate": collate_generator.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], collate_generator: Any) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    collate_generator.set_state(state["collate"])
    random.setstate(state["python"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` on rank 0 (a list by rank), None elsewhere; ``[obj]`` without a group."""
    import torch.distributed as dist

    if not dist_ready():
        return [obj]
    gathered: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def broadcast_from_main(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (small Python objects)."""
    import torch.distributed as dist

    if not dist_ready():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(obj: Any) -> list[Any]:
    import torch.distributed as dist

    if not dist_ready():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_module(module: Any) -> None:
    """Rank 0's parameters and buffers into every rank's copy (DDP resume: only rank 0 read them)."""
    import torch.distributed as dist

    if not dist_ready():
        return
    for tensor in module.state_dict().values():  # the same order on every rank
        dist.broadcast(tensor.data, src=0)


def broadcast_optimizer(optimizer: Any, device: Any) -> None:
    """Rank 0's optimizer state into every rank's optimizer: the structure as an object, the
    tensors with ``broadcast`` (no pickling of large tensors)."""
    import torch
    import torch.distributed as dist

    if not dist_ready():
        return
    main = dist.get_rank() == 0
    state = optimizer.state_dict() if main else None
    layout = None
    if main:
        assert state is not None
        layout = {
            "param_groups": state["param_groups"],
            "state": {
                key: {name: ("tensor", tuple(v.shape), str(v.dtype).removeprefix("torch.")) if torch.is_tensor(v) else ("value", v)
                      for name, v in values.items()}
                for key, values in state["state"].items()
            },
        }  # fmt: skip
    layout = broadcast_from_main(layout)
    new_state: dict[Any, dict[str, Any]] = {}
    for key, values in layout["state"].items():
        new_state[key] = {}
        for name, (kind, *rest) in values.items():
            if kind == "value":
                new_state[key][name] = rest[0]
                continue
            shape, dtype = rest
            tensor = state["state"][key][name].to(device).contiguous() if main else torch.empty(shape, dtype=getattr(torch, dtype), device=device)
            dist.broadcast(tensor, src=0)
            new_state[key][name] = tensor
    if not main:
        optimizer.load_state_dict({"state": new_state, "param_groups": layout["param_groups"]})
