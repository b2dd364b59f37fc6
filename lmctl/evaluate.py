"""Evaluation: token-weighted, reproducible metrics for every family (``lmctl eval`` and training).

Two entry points:

* :func:`evaluate` runs ``lmctl eval``: it loads each ``--model``, finds or prepares the data with
  that model's tokenizer, and returns one result dict per model;
* :func:`evaluate_model` scores an already-loaded model on a :class:`~lmctl.prepared.PreparedSplit`;
  the trainer calls it for ``--eval-every`` (with ``max_batches``) and for the final evaluation.

Each family decides what it measures through :meth:`lmctl.families.base.Family.evaluate`; the
built-in families delegate to the functions below.  What is counted (docs/eval.md has the long form):

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
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmctl.errors import LmctlError, UsageError
from lmctl.families.base import FamilyOptions

LN2 = math.log(2.0)
IGNORE = -100
DEFAULT_BLOCK_SIZE = 512  # raw text on a model without a position limit (XLNet)
MAX_DEFAULT_BLOCK_SIZE = 1024  # raw text: long-context models are not evaluated at 100k tokens by default


# --- settings -------------------------------------------------------------------------------------


@dataclass
class EvalSettings:
    """How :meth:`Family.evaluate` should score a split (built by :func:`evaluate_model`)."""

    block_size: int
    stride: int | None = None  # None: block_size (no overlap)
    batch_size: int = 8
    max_batches: int | None = None  # stop after this many batches (a quick estimate)
    seed: int = 0  # fixes every random choice (masks, permutations, generator samples)
    pseudo_perplexity: bool = False  # masked families: mask each token in turn
    left_to_right: bool = True  # permuted family: also compute the left-to-right score
    options: FamilyOptions = field(default_factory=FamilyOptions)
    autocast: Callable[[], contextlib.AbstractContextManager] | None = None
    device: Any = None
    progress: Callable[[int, int | None], None] | None = None
    """``progress(advance, total)``: ``advance`` more tokens of the text were covered (of ``total``)."""

    @property
    def window_stride(self) -> int:
        return self.stride or self.block_size

    def forward_context(self) -> contextlib.AbstractContextManager:
        return self.autocast() if self.autocast is not None else contextlib.nullcontext()

    def report(self, advance: int, total: int | None) -> None:
        if self.progress is not None and advance:
            self.progress(advance, total)


def seeded_generator(seed: int, index: int) -> Any:
    """A torch generator for item ``index`` of a run with ``seed`` (independent streams per item)."""
    import torch

    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(index)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


# --- the text as sequences, windows and blocks ----------------------------------------------------


def sequences(split: Any, head: list[int], specials: Collection[int] = ()) -> Iterator[np.ndarray]:
    """The token sequences of a split: the whole stream (packed) or each example (line-by-line).

    ``head`` (the separator, for left-to-right scoring) is put before a line-by-line example that
    does not start with a special token, so its first real token is predicted from a BOS/EOS like
    the first document of a stream.  Prepare already starts examples that way; this covers data
    written otherwise.
    """
    if split.offsets is None:
        yield split.tokens
        return
    offsets = split.offsets
    prefix = np.asarray(head, dtype=np.int64)
    special = set(int(i) for i in specials)
    for i in range(int(offsets.shape[0]) - 1):
        example = np.asarray(split.tokens[int(offsets[i]) : int(offsets[i + 1])], dtype=np.int64)
        if len(prefix) and (len(example) == 0 or int(example[0]) not in special):
            example = np.concatenate([prefix, example])
        yield example


def text_tokens(split: Any, head: list[int], specials: Collection[int] = ()) -> int:
    """Predicted tokens when the text is scored left to right: all but the first of each sequence
    (counting the ``head`` that :func:`sequences` adds)."""
    if split.offsets is None:
        return max(0, split.num_tokens - 1)
    offsets = np.asarray(split.offsets, dtype=np.int64)
    lengths = np.diff(offsets)
    if head:
        first = np.full(lengths.shape, -1, dtype=np.int64)
        nonempty = lengths > 0
        first[nonempty] = np.asarray(split.tokens[offsets[:-1][nonempty]], dtype=np.int64)
        lengths = lengths + len(head) * ~np.isin(first, np.asarray(list(specials), dtype=np.int64))
    return int(np.maximum(lengths - 1, 0).sum())


@dataclass
class Window:
    """One model input: its tokens and, per position, the token it is scored on (or -100)."""

    ids: np.ndarray  # the input tokens
    labels: np.ndarray  # per input position: the target it predicts, or -100 (context, already scored)
    new: int  # targets scored in this window


def target_chunks(length: int, first: int, stride: int) -> Iterator[tuple[int, int]]:
    """Split the target positions 1..length-1 into consecutive ranges [a, b): the first holds up to
    ``first`` targets, every other one up to ``stride``."""
    a, size = 1, first
    while a < length:
        b = min(a + size, length)
        yield a, b
        a, size = b, stride


def causal_windows(seq: np.ndarray, block_size: int, stride: int) -> Iterator[Window]:
    """Windows whose logits at position i predict input i + 1 (the next token)."""
    for a, b in target_chunks(len(seq), block_size, stride):
        start = max(0, b - 1 - block_size)
        ids = np.asarray(seq[start : b - 1], dtype=np.int64)
        labels = np.asarray(seq[start + 1 : b], dtype=np.int64).copy()
        labels[: a - 1 - start] = IGNORE  # predictions already scored by the previous window
        yield Window(ids, labels, b - a)


def in_place_windows(seq: np.ndarray, block_size: int, stride: int) -> Iterator[Window]:
    """Windows whose output at position i predicts input i itself (XLNet's query stream)."""
    stride = min(stride, block_size - 1)  # the first token of a window is context only
    for a, b in target_chunks(len(seq), block_size - 1, stride):
        start = max(0, b - block_size)
        ids = np.asarray(seq[start:b], dtype=np.int64)
        labels = ids.copy()
        labels[: a - start] = IGNORE
        yield Window(ids, labels, b - a)


def batched(items: Iterator[Any], size: int, max_batches: int | None) -> Iterator[list[Any]]:
    batch: list[Any] = []
    count = 0
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            count += 1
            batch = []
            if max_batches is not None and count >= max_batches:
                return
    if batch and (max_batches is None or count < max_batches):
        yield batch


def length_sorted(windows: Iterator[Window], pool: int) -> Iterator[Window]:
    """Line-by-line data: sort windows by length within pools, so batches need little padding."""
    buffer: list[Window] = []
    for window in windows:
        buffer.append(window)
        if len(buffer) == pool:
            yield from sorted(buffer, key=lambda w: len(w.ids))
            buffer = []
    yield from sorted(buffer, key=lambda w: len(w.ids))


def stack_windows(windows: list[Window], pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Right-pad windows into [B, W] ids (pad_id), labels (-100 on padding) and attention mask."""
    width = max(len(w.ids) for w in windows)
    ids = np.full((len(windows), width), pad_id, dtype=np.int64)
    labels = np.full((len(windows), width), IGNORE, dtype=np.int64)
    attention = np.zeros((len(windows), width), dtype=np.int64)
    for row, w in enumerate(windows):
        ids[row, : len(w.ids)] = w.ids
        labels[row, : len(w.labels)] = w.labels
        attention[row, : len(w.ids)] = 1
    return ids, labels, attention


def blocks(split: Any, block_size: int) -> Iterator[np.ndarray]:
    """Non-overlapping blocks covering every token (the last one of each sequence may be short),
    exactly the tokens training sees (nothing is added to line-by-line examples)."""
    for seq in sequences(split, []):
        for start in range(0, len(seq), block_size):
            block = np.asarray(seq[start : start + block_size], dtype=np.int64)
            if len(block):
                yield block


def count_blocks(split: Any, block_size: int) -> int | None:
    if split.offsets is None:
        return -(-split.num_tokens // block_size)
    return None


def collate_blocks(
    collate: Callable[..., dict],
    rows: list[np.ndarray],
    block_size: int,
    pad_id: int,
    seed: int,
    first_index: int,
    always_mask: bool = False,
) -> tuple[dict, list[Any]]:
    """Collate each block with its own seeded generator, then stack them into one batch.

    Seeding per block (not per batch) makes masks independent of the batch size.  Blocks shorter
    than ``block_size`` are padded to it with an attention mask, so the collator never picks
    padding.  ``always_mask`` gives every block a mask: a family with a ``block_lookahead`` then
    reads it as a complete input (unmasked rows would be expected to carry the lookahead tokens).
    Returns the batch and the per-block generators (for further seeded draws).
    """
    import torch

    parts, generators = [], []
    for offset, block in enumerate(rows):
        ids = np.full((1, block_size), pad_id, dtype=np.int64)
        ids[0, : len(block)] = block
        mask = None
        if len(block) < block_size or always_mask:
            mask = torch.zeros((1, block_size), dtype=torch.long)
            mask[0, : len(block)] = 1
        generator = seeded_generator(seed, first_index + offset)
        parts.append(collate(torch.from_numpy(ids), mask, generator))
        generators.append(generator)
    keys = set().union(*(p.keys() for p in parts))
    if "attention_mask" in keys:
        for part in parts:
            if "attention_mask" not in part:
                part["attention_mask"] = torch.ones_like(part["input_ids"])
    batch = {}
    for key in keys:
        values = [p[key] for p in parts]
        if not all(isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == 1 for v in values):
            raise LmctlError(f"the collator's '{key}' is not a per-example tensor; the family must override evaluate()")
        batch[key] = torch.cat(values, dim=0)
    return batch, generators


def to_device(batch: dict, device: Any) -> dict:
    import torch

    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def model_device(model: Any) -> Any:
    import torch

    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


def accepts(model: Any, name: str) -> bool:
    import inspect

    model = getattr(model, "_orig_mod", model)  # torch.compile's wrapper takes (*args, **kwargs)
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def pad_id_of(tokenizer: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0


def special_ids(tokenizer: Any) -> list[int]:
    return sorted({int(i) for i in getattr(tokenizer, "all_special_ids", []) if i is not None})


def _sum_nll(logits: Any, labels: Any) -> Any:
    """Summed cross-entropy (fp32) over positions whose label is not -100.

    On a CPU the positions go through in chunks of about 2 MB of logits: the log-softmax then stays
    in cache, which makes the loss 2-3x faster than one call over the whole batch.
    """
    import torch.nn.functional as F

    flat, target = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
    chunk = flat.shape[0] if flat.device.type != "cpu" else max(16, (1 << 19) // flat.shape[1])
    total = None
    for start in range(0, flat.shape[0], chunk):
        part = F.cross_entropy(
            flat[start : start + chunk].float(), target[start : start + chunk], ignore_index=IGNORE, reduction="sum"
        )
        total = part if total is None else total + part
    return total if total is not None else flat.new_zeros((), dtype=flat.dtype).float()


def _mean(total: float, count: int) -> float:
    return total / count if count else float("nan")


# --- family evaluations ---------------------------------------------------------------------------


def evaluate_with_loss(family: Any, model: Any, tokenizer: Any, split: Any, settings: EvalSettings) -> dict:
    """Default for plugin families: the family's own training loss, token-weighted over blocks."""
    import torch

    device = settings.device
    collate = family.make_collator(tokenizer, settings.options)
    pad = pad_id_of(tokenizer)
    total, tokens = torch.zeros((), dtype=torch.float64, device=device), 0
    metric_sums: dict[str, Any] = {}
    index, complete = 0, True
    total_blocks = count_blocks(split, settings.block_size)
    for n, rows in enumerate(batched(blocks(split, settings.block_size), settings.batch_size, None)):
        if settings.max_batches is not None and n >= settings.max_batches:
            complete = False
            break
        batch, _ = collate_blocks(
            collate, rows, settings.block_size, pad, settings.seed, index, always_mask=family.block_lookahead > 0
        )
        index += len(rows)
        with settings.forward_context():
            out = family.compute_loss(model, to_device(batch, device), settings.options)
        count = int(out.tokens)
        total += out.loss.detach().double() * count
        tokens += count
        for key, value in out.metrics.items():
            metric_sums[key] = metric_sums.get(key, 0.0) + float(value) * count
        settings.report(sum(len(r) for r in rows), split.num_tokens if total_blocks else None)
    result = {"loss": _mean(float(total), tokens), "tokens": tokens, "complete": complete}
    result.update({key: _mean(value, tokens) for key, value in metric_sums.items()})
    return result


def evaluate_causal(family: Any, model: Any, tokenizer: Any, split: Any, settings: EvalSettings) -> dict:
    """Next-token NLL over the whole text, with (sliding) windows; see the module docstring."""
    import torch

    device = settings.device
    separator = family.document_separator(tokenizer)
    specials = special_ids(tokenizer)
    pad = pad_id_of(tokenizer)
    windows = (
        w
        for seq in sequences(split, separator, specials)
        for w in causal_windows(seq, settings.block_size, settings.window_stride)
    )
    if split.offsets is not None:
        windows = length_sorted(windows, 64 * settings.batch_size)
    total_targets = text_tokens(split, separator, specials)
    keep_kwarg = accepts(model, "logits_to_keep")
    extra = {"use_cache": False} if accepts(model, "use_cache") else {}
    total = torch.zeros((), dtype=torch.float64, device=device)
    tokens, complete = 0, True
    for n, batch in enumerate(batched(windows, settings.batch_size, None)):
        if settings.max_batches is not None and n >= settings.max_batches:
            complete = False
            break
        ids, labels, attention = stack_windows(batch, pad)
        # Right padding sits after every real token, so causal attention never lets a real token
        # see it; the mask is passed anyway (all ones without padding: the fast path stays on).
        kwargs = dict(extra, attention_mask=torch.from_numpy(attention).to(device, non_blocking=True))
        scored = labels != IGNORE
        first = int(scored.argmax(axis=1).min())  # earliest position that predicts something new
        if keep_kwarg and first > 0:
            kwargs["logits_to_keep"] = ids.shape[1] - first  # skip the LM head on context positions
            labels = labels[:, first:]
        input_ids = torch.from_numpy(ids).to(device, non_blocking=True)
        target = torch.from_numpy(np.ascontiguousarray(labels)).to(device, non_blocking=True)
        with settings.forward_context():
            logits = model(input_ids=input_ids, **kwargs).logits
        total += _sum_nll(logits, target).double()
        new = sum(w.new for w in batch)
        tokens += new
        settings.report(new, total_targets)
    loss = _mean(float(total), tokens)
    return {"loss": loss, "tokens": tokens, "text_nll": float(total), "complete": complete}


def _masked_blocks(family: Any, tokenizer: Any, split: Any, settings: EvalSettings) -> Iterator[tuple[dict, list, int]]:
    """Collated, seeded batches of blocks: (batch on device, per-block generators, tokens covered)."""
    collate = family.make_collator(tokenizer, settings.options)
    pad = pad_id_of(tokenizer)
    index = 0
    for rows in batched(blocks(split, settings.block_size), settings.batch_size, settings.max_batches):
        batch, generators = collate_blocks(
            collate, rows, settings.block_size, pad, settings.seed, index, always_mask=family.block_lookahead > 0
        )
        index += len(rows)
        yield to_device(batch, settings.device), generators, sum(len(r) for r in rows)


def _is_complete(split: Any, settings: EvalSettings, covered: int) -> bool:
    return settings.max_batches is None or covered >= split.num_tokens


def evaluate_masked(family: Any, model: Any, tokenizer: Any, split: Any, settings: EvalSettings) -> dict:
    """Masked-token loss with the training masking, seeded per block (or pseudo-perplexity)."""
    import torch

    if settings.pseudo_perplexity:
        return evaluate_pseudo_perplexity(family, model, tokenizer, split, settings)
    total = torch.zeros((), dtype=torch.float64, device=settings.device)
    tokens = covered = 0
    for batch, _, n in _masked_blocks(family, tokenizer, split, settings):
        labels = batch.pop("labels")
        with settings.forward_context():
            logits = model(**batch).logits
        total += _sum_nll(logits, labels).double()
        tokens += int((labels != IGNORE).sum())
        covered += n
        settings.report(n, split.num_tokens if split.offsets is None else None)
    return {"loss": _mean(float(total), tokens), "tokens": tokens, "complete": _is_complete(split, settings, covered)}


def evaluate_pseudo_perplexity(family: Any, model: Any, tokenizer: Any, split: Any, settings: EvalSettings) -> dict:
    """Pseudo-log-likelihood (Salazar et al., 2020): every non-special token of each block is
    masked in turn and scored from the rest of its block; one copy of the block per token, batched."""
    import torch

    mask_id = tokenizer.mask_token_id
    if mask_id is None:
        raise UsageError("the tokenizer has no mask token, which --pseudo-perplexity needs")
    specials = np.asarray(special_ids(tokenizer), dtype=np.int64)
    device = settings.device

    def queries() -> Iterator[tuple[np.ndarray, int, int]]:
        for block in blocks(split, settings.block_size):
            positions = np.flatnonzero(~np.isin(block, specials))
            for i, pos in enumerate(positions):
                # The last query of a block carries the block's length, for progress.
                yield block, int(pos), len(block) if i == len(positions) - 1 else 0
            if not len(positions):
                yield block, -1, len(block)

    total = torch.zeros((), dtype=torch.float64, device=device)
    tokens = covered = 0
    for rows in batched(queries(), settings.batch_size, settings.max_batches):
        rows_scored = [r for r in rows if r[1] >= 0]
        covered += sum(r[2] for r in rows)
        if rows_scored:
            width = max(len(r[0]) for r in rows_scored)
            ids = np.full((len(rows_scored), width), pad_id_of(tokenizer), dtype=np.int64)
            attention = np.zeros((len(rows_scored), width), dtype=np.int64)
            for row, (block, _, _) in enumerate(rows_scored):
                ids[row, : len(block)] = block
                attention[row, : len(block)] = 1
            positions = np.array([r[1] for r in rows_scored])
            targets = ids[np.arange(len(rows_scored)), positions].copy()
            ids[np.arange(len(rows_scored)), positions] = mask_id
            inputs = {"input_ids": torch.from_numpy(ids).to(device)}
            if not attention.all():
                inputs["attention_mask"] = torch.from_numpy(attention).to(device)
            with settings.forward_context():
                logits = model(**inputs).logits
            picked = logits[torch.arange(len(rows_scored), device=device), torch.from_numpy(positions).to(device)]
            total += _sum_nll(picked, torch.from_numpy(targets).to(device)).double()
            tokens += len(rows_scored)
        settings.report(sum(r[2] for r in rows), split.num_tokens if split.offsets is None else None)
    complete = _is_complete(split, settings, covered)
    return {"loss": _mean(float(total), tokens), "tokens": tokens, "text_nll": float(total), "complete": complete}


def evaluate_permuted(family: Any, model: Any, tokenizer: Any, split: Any, settings: EvalSettings) -> dict:
    """XLNet: the PLM loss of the training objective (seeded), plus the left-to-right score."""
    import torch

    total = torch.zeros((), dtype=torch.float64, device=settings.device)
    tokens = covered = 0
    plm_total = split.num_tokens * (2 if settings.left_to_right else 1) if split.offsets is None else None
    for batch, _, n in _masked_blocks(family, tokenizer, split, settings):
        labels = batch.pop("labels")
        with settings.forward_context():
            logits = model(**batch, use_mems=False).logits
        total += _sum_nll(logits, labels).double()
        tokens += int((labels != IGNORE).sum())
        covered += n
        settings.report(n, plm_total)
    result: dict[str, Any] = {
        "loss": _mean(float(total), tokens),
        "tokens": tokens,
        "complete": _is_complete(split, settings, covered),
    }
    if settings.left_to_right:
        ltr = xlnet_left_to_right(family, model, tokenizer, split, settings)
        result["left_to_right_loss"] = ltr["loss"]
        result["left_to_right_perplexity"] = safe_exp(ltr["loss"])
        result["left_to_right_tokens"] = ltr["tokens"]
        result["text_nll"] = ltr["text_nll"]
        result["complete"] = result["complete"] and ltr["complete"]
    return result


def xlnet_left_to_right_inputs(input_ids: Any) -> dict:
    """XLNet inputs under which the output at position i predicts token i from tokens < i only."""
    import torch

    b, width = input_ids.shape
    hidden = torch.triu(torch.ones(width, width, device=input_ids.device), diagonal=0)  # j >= i: not visible
    return {
        "input_ids": input_ids,
        "perm_mask": hidden.expand(b, width, width),
        "target_mapping": torch.eye(width, device=input_ids.device).expand(b, width, width),
    }


def xlnet_left_to_right(family: Any, model: Any, tokenizer: Any, split: Any, settings: EvalSettings) -> dict:
    """Every token predicted from the tokens before it only.

    ``perm_mask[i, j] = 1`` for ``j >= i`` hides a token and everything after it from position i;
    with an identity ``target_mapping`` XLNet's query stream at i (which never sees token i's
    content) predicts token i.  Right padding comes after every real token, so it is hidden too.
    """
    import torch

    device = settings.device
    separator = family.document_separator(tokenizer)
    specials = special_ids(tokenizer)
    windows = (
        w
        for seq in sequences(split, separator, specials)
        for w in in_place_windows(seq, settings.block_size, settings.window_stride)
    )
    if split.offsets is not None:
        windows = length_sorted(windows, 64 * settings.batch_size)
    total = torch.zeros((), dtype=torch.float64, device=device)
    tokens, complete = 0, True
    for n, batch in enumerate(batched(windows, settings.batch_size, None)):
        if settings.max_batches is not None and n >= settings.max_batches:
            complete = False
            break
        ids, labels, _ = stack_windows(batch, pad_id_of(tokenizer))
        inputs = xlnet_left_to_right_inputs(torch.from_numpy(ids).to(device))
        with settings.forward_context():
            logits = model(**inputs, use_mems=False).logits
        total += _sum_nll(logits, torch.from_numpy(labels).to(device)).double()
        new = sum(w.new for w in batch)
        tokens += new
        settings.report(new, 2 * split.num_tokens if split.offsets is None else None)
    return {"loss": _mean(float(total), tokens), "tokens": tokens, "text_nll": float(total), "complete": complete}


def evaluate_electra(family: Any, model: Any, tokenizer: Any, split: Any, settings: EvalSettings) -> dict:
    """Generator MLM loss on the masked tokens; discriminator replaced-token detection on every
    non-padding token (as in training and the ELECTRA paper), replacements sampled from the
    generator with each block's seeded generator."""
    import torch

    generator_model = getattr(model, "generator", None)
    discriminator = getattr(model, "discriminator", None)
    if generator_model is None or discriminator is None:
        raise LmctlError("ELECTRA evaluation needs the generator and discriminator pair (ElectraPretrainer)")
    device = settings.device
    gen_total = torch.zeros((), dtype=torch.float64, device=device)
    disc_total = torch.zeros((), dtype=torch.float64, device=device)
    counts = torch.zeros(4, dtype=torch.float64, device=device)  # tp, fp, fn, tn
    gen_tokens = disc_tokens = covered = 0
    scores: list[np.ndarray] = []
    truths: list[np.ndarray] = []
    for batch, generators, n in _masked_blocks(family, tokenizer, split, settings):
        labels, original = batch["labels"], batch["original_ids"]
        attention = batch.get("attention_mask")
        with settings.forward_context():
            gen_logits = generator_model(input_ids=batch["input_ids"], attention_mask=attention).logits
        gen_total += _sum_nll(gen_logits, labels).double()
        predicted = labels != IGNORE
        gen_tokens += int(predicted.sum())
        # Gumbel-max sampling with each block's own generator: reproducible replacements.
        noise = torch.stack([torch.rand(gen_logits.shape[1:], generator=g) for g in generators]).to(device)
        noise = noise.clamp_(1e-9, 1.0)
        sampled = (gen_logits.float() - torch.log(-torch.log(noise))).argmax(dim=-1)
        disc_input = torch.where(predicted, sampled, original)
        replaced = disc_input != original
        with settings.forward_context():
            disc_logits = discriminator(input_ids=disc_input, attention_mask=attention).logits.float()
        active = torch.ones_like(replaced) if attention is None else attention.bool()
        logit, truth = disc_logits[active], replaced[active]
        disc_total += torch.nn.functional.binary_cross_entropy_with_logits(
            logit, truth.float(), reduction="sum"
        ).double()
        guess = logit > 0
        counts += torch.stack(
            [(guess & truth).sum(), (guess & ~truth).sum(), (~guess & truth).sum(), (~guess & ~truth).sum()]
        ).double()
        disc_tokens += int(active.sum())
        scores.append(logit.cpu().numpy())
        truths.append(truth.cpu().numpy())
        covered += n
        settings.report(n, split.num_tokens if split.offsets is None else None)
    tp, fp, fn, tn = (float(c) for c in counts.cpu())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    auc = roc_auc(np.concatenate(scores) if scores else np.zeros(0), np.concatenate(truths) if truths else np.zeros(0, bool))
    return {
        "loss": _mean(float(gen_total), gen_tokens),
        "tokens": gen_tokens,
        "generator_loss": _mean(float(gen_total), gen_tokens),
        "discriminator_loss": _mean(float(disc_total), disc_tokens),
        "discriminator_accuracy": _mean(tp + tn, disc_tokens),
        "discriminator_precision": precision,
        "discriminator_recall": recall,
        "discriminator_f1": f1,
        "discriminator_auc": auc,
        "discriminator_tokens": disc_tokens,
        "replaced_fraction": _mean(tp + fn, disc_tokens),
        "complete": _is_complete(split, settings, covered),
    }


def roc_auc(scores: np.ndarray, truth: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U with tied scores averaged); None with one class."""
    truth = np.asarray(truth, dtype=bool)
    positives = int(truth.sum())
    negatives = int(truth.size - positives)
    if positives == 0 or negatives == 0:
        return None
    values, inverse, counts = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)  # 1-based rank of the last element of each group of equal scores
    mean_rank = upper - (counts - 1) / 2.0
    rank_sum = float(mean_rank[inverse][truth].sum())
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


# --- the entry point the trainer uses -------------------------------------------------------------


def safe_exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return float("inf")


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
    options: FamilyOptions | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
    device: Any = None,
    pseudo_perplexity: bool = False,
    left_to_right: bool = True,
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
        pseudo_perplexity=pseudo_perplexity,
        left_to_right=left_to_right,
        options=options or FamilyOptions(),
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
    pseudo_perplexity: bool = False
    max_batches: int | None = None
    family: str | None = None
    trust_remote_code: bool = False
    offline: bool = False  # never contact the Hugging Face Hub (HF_HUB_OFFLINE=1)
    device: str = "auto"
    line_by_line: bool = False  # raw text files: one example per line
    document_split: str | None = None  # raw text files: how documents are separated (prepare's option)


def data_hash(split: Any) -> str:
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
    from lmctl.prepared import PreparedData

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

    from lmctl.families.base import max_positions
    from lmctl.models import load_config_dict

    return max_positions(SimpleNamespace(**load_config_dict(name, trust_remote_code=trust_remote_code)))


def _prepare_raw(config: EvalConfig, files: list[str], model_name: str, family: Any, block_size: int, show_progress: bool) -> Any:
    """Raw text files, tokenized with the model's own tokenizer into the prepare cache (reused by
    later runs with the same files, tokenizer and options)."""
    from lmctl.prepare import PrepareConfig, prepare_cached
    from lmctl.prepared import PreparedData

    settings: dict[str, Any] = dict(
        train=list(files),
        tokenizer=model_name,
        family=family.name,
        block_size=block_size,
        line_by_line=config.line_by_line,
        document_split=config.document_split,
        progress="auto" if show_progress else "none",
    )
    return PreparedData(prepare_cached(PrepareConfig(**settings)))


def _load_model(name: str, family: Any, trust_remote_code: bool) -> Any:
    from lmctl.models import is_local_model

    if family.name == "electra" and is_local_model(name) and not (Path(name).expanduser() / "generator").is_dir():
        raise LmctlError(
            f"{name} has no generator/ directory: ELECTRA evaluation needs the generator that makes the replacements"
        )
    return family.load_pretrained(name, trust_remote_code=trust_remote_code)


def _model_tokenizer(name: str, data: Any, trust_remote_code: bool) -> Any:
    """The model's tokenizer; a prepared directory must have been tokenized with the same one."""
    from lmctl.models import load_tokenizer

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


def evaluate(config: EvalConfig, *, progress: Callable[[str], Any] | None = None) -> list[dict[str, Any]]:
    """``lmctl eval``: evaluate each model in ``config.models`` on the same data; one dict per model.

    ``progress(model_name)`` may return an object with ``update(advance, total)`` and ``close()``
    (the CLI's progress bar).
    """
    import torch

    from lmctl.families.base import FamilyOptions
    from lmctl.generate import pick_device, quiet_transformers
    from lmctl.models import apply_offline, check_tokenizer_matches, count_parameters
    from lmctl.plugins import resolve_family
    from lmctl.precision import autocast_context, resolve_precision
    from lmctl.prepared import PreparedData

    apply_offline(config.offline)
    if not config.models:
        raise UsageError("no model: pass --model DIR (or a Hugging Face id)")
    if config.precision not in ("auto", "fp32", "bf16", "fp16"):
        raise UsageError(f"--precision must be auto, fp32, bf16 or fp16, got {config.precision!r}")
    prepared_path, raw_files = check_data_paths(config.data)
    quiet_transformers()
    device = torch.device(pick_device(config.device))
    data = PreparedData(prepared_path) if prepared_path else None
    families = [resolve_family(m, family=config.family, trust_remote_code=config.trust_remote_code) for m in config.models]
    if config.pseudo_perplexity:
        from lmctl.families.masked import MaskedFamily

        for name, family in zip(config.models, families, strict=True):
            if not isinstance(family, MaskedFamily):
                raise UsageError(f"--pseudo-perplexity is for masked models; {name} is a '{family.name}' model")
    limits = [_model_limit(m, config.trust_remote_code) for m in config.models]
    block_size = resolve_block_size(config, limits, data.block_size if data else None)
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
    for name, family in zip(config.models, families, strict=True):
        model = _load_model(name, family, config.trust_remote_code)
        family.check_block_size(block_size, model)
        model_data = data if data is not None else _prepare_raw(config, raw_files, name, family, block_size, progress is not None)
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
                options=FamilyOptions(),
                autocast=lambda p=precision: autocast_context(p, device),
                device=device,
                pseudo_perplexity=config.pseudo_perplexity,
                progress=bar.update if bar is not None else None,
            )
        finally:
            if bar is not None:
                bar.close()
        key = (str(model_data.path), split.name)
        if key not in hashes:
            hashes[key] = data_hash(split)
        results.append(
            {
                "model": name,
                "family": family.name,
                "parameters": params,
                "data": str(model_data.path) if data is not None else [str(f) for f in raw_files],
                "split": split.name,
                "data_hash": hashes[key],
                "text_hash": text_hash(model_data, split.name),
                "settings": {
                    "block_size": block_size,
                    "stride": config.stride or block_size,
                    "batch_size": config.batch_size,
                    "precision": precision,
                    "seed": config.seed,
                    "pseudo_perplexity": config.pseudo_perplexity,
                    "max_batches": config.max_batches,
                    "device": str(device),
                },
                **result,
            }
        )
        del model
    return results
