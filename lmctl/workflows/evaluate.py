"""Evaluation: token-weighted, reproducible metrics for every family (``lmctl eval`` and training).

Two entry points:

* :func:`evaluate` runs ``lmctl eval``: it loads each ``--model``, finds or prepares the data with
  that model's tokenizer, and returns one result dict per model;
* :func:`evaluate_model` scores an already-loaded model on a :class:`~lmctl.core.prepared.PreparedSplit`;
  the trainer calls it for ``--eval-every`` (with ``max_batches``) and for the final evaluation.

Each family decides what it measures through :meth:`lmctl.families.base.Family.evaluate` (the
built-in families' evaluations live in their modules, on the helpers of :mod:`lmctl.kit.scoring`).  What is counted (docs/eval.md has the long form):

* causal: every token of the text except the first is predicted exactly once.  A window is up to
  ``block_size`` consecutive tokens, and the logits at each of its positions predict the token that
  follows.  The first window scores its ``block_size`` predictions; every further window moves
  ``stride`` tokens on and scores only the ``stride`` predictions that are new, so windows share
  ``block_size - stride`` tokens and each token is predicted from at least ``block_size - stride + 1``
  previous tokens (all of them near the start).  A prepared stream starts every document with the
  family's separator (BOS/EOS): the first one is context only; the others are predicted, as the
  end of the preceding document, exactly as in training.
* masked: masked-token loss over ``block_size`` blocks (the last, partial block included) with the
  training masking (``mlm_probability``, 80/10/10), each block masked by its own generator seeded
  from ``(seed, block index)``, so the number does not depend on ``--batch-size`` or on the run.
  ``pseudo_perplexity`` masks every non-special token of each block in turn instead (exact).
* permuted: the PLM loss of the training objective, seeded the same way, plus a left-to-right
  score: XLNet predicting every token from the tokens before it (perm_mask), windows as above.
* electra: generator masked-token loss and perplexity, and discriminator accuracy, precision,
  recall, F1 and ROC AUC on replaced tokens (generator samples drawn from seeded generators).

``loss`` is always a mean over predicted tokens (``tokens``) in nats, summed over all batches and
divided once: never a mean of per-batch or per-sequence means.  ``perplexity = exp(loss)``.
``bits_per_byte = total NLL / ln 2 / UTF-8 bytes of the text`` and ``word_perplexity =
exp(total NLL / words)`` are reported when a family scores the whole text once (causal,
permuted left-to-right, masked pseudo-perplexity) and every window was evaluated.
Padding never enters any loss: padded positions carry the label -100 and are not counted.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmctl.errors import LmctlError, UsageError
from lmctl.families.base import parse_options
from lmctl.kit.scoring import LN2, EvalSettings, model_device, safe_exp

DEFAULT_BLOCK_SIZE = 512  # raw text on a model without a position limit (XLNet)
MAX_DEFAULT_BLOCK_SIZE = 1024  # raw text: long-context models are not evaluated at 100k tokens by default


# --- the entry point the trainer uses -------------------------------------------------------------


def evaluate_model(
    model: Any,
    family: Any,
    tokenizer: Any,
    split: Any,
    *,
    block_size: int,
    stride: int | None = None,
    batch_size: int = 8,
    max_batches: int | None = None,
    seed: int = 0,
    options: Any = None,
    autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
    device: Any = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> dict[str, Any]:
    """Score an already-loaded ``model`` on a prepared ``split``; the model's modes are restored.

    Returns ``loss`` (mean NLL per predicted token, nats), ``perplexity``, ``tokens`` (predicted
    tokens counted), ``complete`` (every window evaluated), ``bits_per_byte`` and
    ``word_perplexity`` when the family scores the whole text and the split records its bytes and
    words, ``seconds``, ``tokens_per_second`` (tokens of the text processed per second, as the
    family reports them through ``settings.progress``), and the family's
    own metrics.  ``max_batches`` stops early: a quick, still token-weighted, estimate.
    """
    import torch

    if block_size < 2:
        raise UsageError(f"--block-size must be at least 2, got {block_size}")
    if stride is not None and not 1 <= stride <= block_size:
        raise UsageError(f"--stride must be between 1 and the block size ({block_size}), got {stride}")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    if max_batches is not None and max_batches < 1:
        raise UsageError(f"--max-batches must be at least 1, got {max_batches}")
    settings = EvalSettings(
        block_size=block_size,
        stride=stride,
        batch_size=batch_size,
        max_batches=max_batches,
        seed=seed,
        options=options if options is not None else family.default_options(),
        autocast=autocast,
        device=device if device is not None else model_device(model),
        progress=None,
    )
    covered = 0

    def report(advance: int, total: int | None) -> None:
        nonlocal covered
        covered += advance
        if progress is not None:
            progress(advance, total)

    settings.progress = report
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    started = time.perf_counter()
    try:
        with torch.no_grad():
            raw = dict(family.evaluate(model, tokenizer, split, settings))
    finally:
        for module, mode in modes:
            module.training = mode
    seconds = time.perf_counter() - started
    return summarize(raw, split, seconds, covered)


def summarize(raw: dict[str, Any], split: Any, seconds: float, covered: int) -> dict[str, Any]:
    """Add perplexity, bits per byte, word perplexity and throughput to a family's raw result."""
    result = dict(raw)
    loss = float(result["loss"])
    result["loss"] = loss
    result["tokens"] = int(result["tokens"])
    result["perplexity"] = safe_exp(loss) if math.isfinite(loss) else float("nan")
    complete = bool(result.setdefault("complete", True))
    text_nll = result.pop("text_nll", None)
    info = getattr(split, "info", {}) or {}
    nbytes, words = info.get("bytes"), info.get("words")
    result["bits_per_byte"] = None
    result["word_perplexity"] = None
    # Line-by-line examples longer than the block size were truncated by prepare: the tokens
    # scored are then not the whole text, and per-byte or per-word figures would flatter the model.
    truncated = split.offsets is not None and bool(info.get("dropped_tokens"))
    if text_nll is not None and complete and not truncated:
        result["text_nll"] = text_nll
        if nbytes:
            result["bits_per_byte"] = text_nll / LN2 / int(nbytes)
        if words:
            result["word_perplexity"] = safe_exp(text_nll / int(words))
    result["bytes"] = int(nbytes) if nbytes else None
    result["words"] = int(words) if words else None
    result["seconds"] = seconds
    result["tokens_per_second"] = (covered or result["tokens"]) / seconds if seconds > 0 else None
    return result


# --- lmctl eval ------------------------------------------------------------------------------------


@dataclass
class EvalConfig:
    """Settings of ``lmctl eval`` (see ``lmctl eval --help``)."""

    models: list[str]
    data: list[str]
    split: str | None = None  # prepared data: default validation if present, else train
    block_size: int | None = None  # default: see resolve_block_size()
    stride: int | None = None
    batch_size: int = 8
    precision: str = "auto"
    seed: int = 0
    family_options: dict[str, Any] = field(default_factory=dict)  # --family-option KEY=VALUE (the family's settings)
    max_batches: int | None = None
    family: str | None = None
    trust_remote_code: bool = False
    offline: bool = False  # never contact the Hugging Face Hub (HF_HUB_OFFLINE=1)
    device: str = "auto"
    line_by_line: bool = False  # raw text files: one example per line
    document_split: str | None = None  # raw text files: how documents are separated (prepare's option)


def token_hash(split: Any) -> str:
    """sha256 (16 hex digits) of exactly the token ids scored (and example offsets), so two results
    with the same hash were computed on the same data."""
    digest = hashlib.sha256()
    tokens = split.tokens  # a memmap: hashed chunk by chunk, never loaded whole
    step = 1 << 22
    for start in range(0, tokens.shape[0], step):
        digest.update(np.asarray(tokens[start : start + step], dtype=np.int64).tobytes())
    if split.offsets is not None:
        digest.update(np.asarray(split.offsets, dtype=np.int64).tobytes())
    return digest.hexdigest()[:16]


def text_hash(data: Any, split_name: str) -> str | None:
    """sha256 (16 hex digits) of the source text of a split, independent of the tokenizer: the
    input files' hashes (from the manifest) and the options that pick the split's part of them.
    Results of models with different tokenizers on the same text share it.  None when unknown."""
    import json

    manifest = data.manifest
    inputs = manifest.get("inputs") or {}
    hashes = {name: [entry.get("sha256") for entry in entries] for name, entries in inputs.items()}
    if not hashes or any(h is None for values in hashes.values() for h in values):
        return None
    payload = {
        "inputs": hashes,
        "split": split_name,
        "validation_split": (manifest.get("options") or {}).get("validation_split"),
        "document_split": manifest.get("document_split"),
        "line_by_line": manifest.get("line_by_line"),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def same_vocabulary(a: Any, b: Any) -> bool:
    return a.get_vocab() == b.get_vocab()


def check_data_paths(data: list[str]) -> tuple[str | None, list[str]]:
    """(prepared directory or None, raw files); one clear error for anything missing or mixed."""
    from lmctl.core.prepared import PreparedData

    if not data:
        raise UsageError("no data: pass --data FILE (raw text) or --data DIR (a prepared directory)")
    for item in data:
        if not Path(item).exists():
            raise LmctlError(f"data not found: {item}")
    prepared = [item for item in data if PreparedData.is_prepared(item)]
    if prepared:
        if len(data) > 1:
            raise UsageError(f"{prepared[0]} is a prepared directory: pass it alone as --data")
        return prepared[0], []
    for item in data:
        if Path(item).is_dir():
            raise LmctlError(f"{item} is a directory but not a prepared one (no manifest.json); pass text files or run `lmctl prepare`")
    return None, list(data)


def resolve_block_size(config: EvalConfig, model_limits: list[int | None], data_block: int | None) -> int:
    """``--block-size``, else the data's block size (what the model was trained with), capped at the
    smallest position limit of the models; raw text: the smallest limit, at most 1024 (512 when no
    model has a limit).  One block size for all models, so their numbers compare."""
    if config.block_size is not None:
        return config.block_size
    limits = [limit for limit in model_limits if limit]
    if data_block:
        return min([data_block] + limits)
    return min(min(limits), MAX_DEFAULT_BLOCK_SIZE) if limits else DEFAULT_BLOCK_SIZE


def _model_limit(name: str, trust_remote_code: bool) -> int | None:
    from types import SimpleNamespace

    from lmctl.core.hub import load_config_dict
    from lmctl.families.base import max_positions
    from lmctl.kit.adapters import model_source

    return max_positions(SimpleNamespace(**load_config_dict(model_source(name), trust_remote_code=trust_remote_code)))


def raw_text_convention(config: EvalConfig, model_name: str) -> dict[str, Any]:
    """How raw text is cut into documents for ``model_name``: ``--document-split`` /
    ``--line-by-line`` when given, else what the model was trained with (its lmctl_model.json),
    else prepare's default (blank lines).  ``source`` says which."""
    from lmctl.core.run_dir import read_model_info

    info = read_model_info(model_name)
    if config.document_split is not None or config.line_by_line:
        split = "lines" if config.line_by_line and config.document_split is None else config.document_split
        return {"document_split": split, "line_by_line": config.line_by_line, "source": "option"}
    if info:
        return {
            "document_split": info.get("document_split"),
            "line_by_line": bool(info.get("line_by_line")),
            "source": "trained",
        }
    return {"document_split": None, "line_by_line": False, "source": "default"}


def _prepare_raw(config: EvalConfig, files: list[str], model_name: str, family: Any, block_size: int, progress: Any) -> Any:
    """Raw text files, tokenized with the model's own tokenizer into the prepare cache (reused by
    later runs with the same files, tokenizer and options), with the model's document convention."""
    from lmctl.core.prepared import PreparedData
    from lmctl.workflows.prepare import PrepareConfig, prepare_cached

    convention = raw_text_convention(config, model_name)
    settings: dict[str, Any] = dict(
        train=list(files),
        tokenizer=model_name,
        family=family.name,
        block_size=block_size,
        line_by_line=convention["line_by_line"],
        document_split=None if convention["line_by_line"] else convention["document_split"],
    )
    return PreparedData(prepare_cached(PrepareConfig(**settings), progress=progress))


def _convention_label(convention: dict[str, Any]) -> str:
    """``blank-lines (as trained)``: the document convention a raw-text result used, and why."""
    split = "lines (line by line)" if convention["line_by_line"] else convention["document_split"] or "blank-lines"
    why = {"option": "as asked", "trained": "as trained", "default": "default"}[convention["source"]]
    return f"{split} ({why})"


def _load_model(name: str, family: Any, trust_remote_code: bool) -> Any:
    from lmctl.kit.adapters import is_adapter_dir

    family.check_evaluation_model(name)
    if is_adapter_dir(name):  # a LoRA adapter: its base model with the adapter merged in
        return family.load_for_inference(name, trust_remote_code=trust_remote_code)
    return family.load_pretrained(name, trust_remote_code=trust_remote_code)


def _model_tokenizer(name: str, data: Any, trust_remote_code: bool) -> Any:
    """The model's tokenizer; a prepared directory must have been tokenized with the same one."""
    from lmctl.core.hub import load_tokenizer

    try:
        tokenizer = load_tokenizer(name, trust_remote_code=trust_remote_code)
    except LmctlError:
        if data is None:
            raise
        return data.load_tokenizer()  # a bare model directory: trust the data's tokenizer (size checked later)
    if data is not None and not same_vocabulary(tokenizer, data.load_tokenizer()):
        raise UsageError(
            f"{data.path} was tokenized with a different tokenizer than {name}'s: pass the raw text files "
            "instead (they are tokenized with the model's tokenizer), or prepare the data with --tokenizer "
            f"{name}"
        )
    return tokenizer


# Below this many scored predictions a perplexity is mostly noise: say so.
FEW_PREDICTIONS = 100


def check_prediction_count(count: int, model: str, split: str, warn: Callable[[str], None]) -> None:
    """No prediction: refuse (there is no loss); a few: warn that the numbers rest on them alone."""
    if count == 0:
        raise LmctlError(
            f"the {split} data gives {model} no token to predict (it needs at least two tokens in a row); "
            "evaluate on more text"
        )
    if count < FEW_PREDICTIONS:
        warn(
            f"warning: the loss and perplexity of {model} rest on {count} prediction{'s' if count != 1 else ''} "
            f"only (fewer than {FEW_PREDICTIONS}): too few to compare models; evaluate on more text"
        )


def _stderr_line(text: str) -> None:
    import sys

    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def evaluate(
    config: EvalConfig,
    *,
    progress: Callable[[str], Any] | None = None,
    prepare_progress: Any = None,
    warn: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """``lmctl eval``: evaluate each model in ``config.models`` on the same data; one dict per model.

    ``progress(model_name)`` may return an object with ``update(advance, total)`` and ``close()``
    (the CLI's progress bar); ``prepare_progress`` receives the progress of tokenizing raw files;
    ``warn(line)`` receives warnings (default: stderr).
    """
    import torch

    from lmctl.core.device import pick_device
    from lmctl.core.hub import apply_offline, check_tokenizer_matches, count_parameters
    from lmctl.core.precision import autocast_context, resolve_precision
    from lmctl.core.prepared import PreparedData
    from lmctl.core.quiet import quiet_libraries
    from lmctl.core.run_dir import read_model_info
    from lmctl.plugins.registry import resolve_family

    apply_offline(config.offline)
    if not config.models:
        raise UsageError("no model: pass --model DIR (or a Hugging Face id)")
    if config.precision not in ("auto", "fp32", "bf16", "fp16"):
        raise UsageError(f"--precision must be auto, fp32, bf16 or fp16, got {config.precision!r}")
    prepared_path, raw_files = check_data_paths(config.data)
    quiet_libraries()
    device = torch.device(pick_device(config.device))
    data = PreparedData(prepared_path) if prepared_path else None
    families = [resolve_family(m, family=config.family, trust_remote_code=config.trust_remote_code) for m in config.models]
    # Each model's family must know every --family-option (one line listing its options if not).
    options = [parse_options(family, config.family_options) for family in families]
    limits = [_model_limit(m, config.trust_remote_code) for m in config.models]
    # Raw text: the block size the models were trained with (lmctl_model.json) when every model
    # records one, else their position limits.
    trained_blocks = [read_model_info(m).get("block_size") for m in config.models]
    if data is None and trained_blocks and all(isinstance(b, int) and b > 1 for b in trained_blocks):
        data_block: int | None = min(trained_blocks)
    else:
        data_block = data.block_size if data else None
    block_size = resolve_block_size(config, limits, data_block)
    if config.block_size is None and any(f.requires_even_block_size for f in families) and block_size % 2:
        block_size -= 1
    if config.stride is not None and not 1 <= config.stride <= block_size:
        raise UsageError(f"--stride must be between 1 and the block size ({block_size}), got {config.stride}")
    if config.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {config.batch_size}")
    split_name = config.split
    if data is not None:
        split_name = split_name or ("validation" if data.has_split("validation") else "train")
        data.split(split_name)  # a clear error for a missing split, before any model loads
    elif split_name not in (None, "train"):
        raise UsageError("--split applies to prepared directories; raw text files are evaluated whole")

    results = []
    hashes: dict[tuple[str, str], str] = {}  # (data dir, split) -> data_hash, computed once
    for name, family, family_options in zip(config.models, families, options, strict=True):
        model = _load_model(name, family, config.trust_remote_code)
        family.check_block_size(block_size, model)
        model_data = data if data is not None else _prepare_raw(config, raw_files, name, family, block_size, prepare_progress)
        tokenizer = _model_tokenizer(name, data, config.trust_remote_code)
        check_tokenizer_matches(tokenizer, model)
        split = model_data.split(split_name or "train")
        params = count_parameters(model)
        precision = resolve_precision(config.precision, device, params)
        model.to(device)
        bar = progress(name) if progress is not None else None
        try:
            result = evaluate_model(
                model,
                family,
                tokenizer,
                split,
                block_size=block_size,
                stride=config.stride,
                batch_size=config.batch_size,
                max_batches=config.max_batches,
                seed=config.seed,
                options=family_options,
                autocast=lambda p=precision: autocast_context(p, device),
                device=device,
                progress=bar.update if bar is not None else None,
            )
        finally:
            if bar is not None:
                bar.close()
        check_prediction_count(int(result.get("tokens", 0)), name, split.name, warn or _stderr_line)
        key = (str(model_data.path), split.name)
        if key not in hashes:
            hashes[key] = token_hash(split)
        results.append(
            {
                "model": name,
                "family": family.name,
                "parameters": params,
                "data": str(model_data.path) if data is not None else [str(f) for f in raw_files],
                "split": split.name,
                "data_hash": hashes[key],
                **({"document_split": _convention_label(raw_text_convention(config, name))} if data is None else {}),
                "text_hash": text_hash(model_data, split.name),
                "settings": {
                    "block_size": block_size,
                    "stride": config.stride or block_size,
                    "batch_size": config.batch_size,
                    "precision": precision,
                    "seed": config.seed,
                    "family_options": family_options.values(),
                    "max_batches": config.max_batches,
                    "device": str(device),
                },
                **result,
            }
        )
        del model
    return results
