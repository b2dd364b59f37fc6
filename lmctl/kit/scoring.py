"""Scoring helpers the families' evaluations are built from (``lmctl eval`` and training evals).

What a family counts is its own business (:meth:`lmctl.families.base.Family.evaluate`); the pieces
here are shared: the text as sequences, sliding windows, seeded per-block collation, summed NLL,
and :func:`evaluate_with_loss`, the default evaluation for plugin families.  docs/eval.md explains
what each built-in family counts.

``loss`` is always a mean over predicted tokens (``tokens``) in nats, summed over all batches and
divided once: never a mean of per-batch or per-sequence means.  Padding never enters any loss:
padded positions carry the label -100 and are not counted.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lmctl.errors import LmctlError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

LN2 = math.log(2.0)
IGNORE = -100


# --- settings -------------------------------------------------------------------------------------


@dataclass
class EvalSettings:
    """How :meth:`Family.evaluate` should score a split (built by :func:`evaluate_model`)."""

    block_size: int
    stride: int | None = None  # None: block_size (no overlap)
    batch_size: int = 8
    max_batches: int | None = None  # stop after this many batches (a quick estimate)
    seed: int = 0  # fixes every random choice (masks, permutations, generator samples)
    options: Any = None
    """The family's :class:`~lmctl.families.base.Options` (objective and evaluation settings)."""
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
    import numpy as np
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
    import numpy as np

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
    import numpy as np

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
    import numpy as np

    for a, b in target_chunks(len(seq), block_size, stride):
        start = max(0, b - 1 - block_size)
        ids = np.asarray(seq[start : b - 1], dtype=np.int64)
        labels = np.asarray(seq[start + 1 : b], dtype=np.int64).copy()
        labels[: a - 1 - start] = IGNORE  # predictions already scored by the previous window
        yield Window(ids, labels, b - a)


def in_place_windows(seq: np.ndarray, block_size: int, stride: int) -> Iterator[Window]:
    """Windows whose output at position i predicts input i itself (XLNet's query stream)."""
    import numpy as np

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


class WindowBatches:
    """The batches of scoring windows of a split: each document (``sequences``) cut by ``cut``
    (:func:`causal_windows` or :func:`in_place_windows`), sorted by length within pools for
    line-by-line data, at most ``settings.max_batches`` batches; after the loop, ``complete`` says
    whether every window was scored.  Shared by the windowed evaluations of the families."""

    def __init__(self, family: Any, tokenizer: Any, split: Any, settings: Any, cut: Any) -> None:
        self.separator = family.document_separator(tokenizer)
        self.specials = special_ids(tokenizer)
        self.split, self.settings, self.cut = split, settings, cut
        self.complete = True

    def __iter__(self) -> Iterator[list[Window]]:
        settings = self.settings
        windows = (
            w
            for seq in sequences(self.split, self.separator, self.specials)
            for w in self.cut(seq, settings.block_size, settings.window_stride)
        )
        if self.split.offsets is not None:
            windows = length_sorted(windows, 64 * settings.batch_size)
        for n, batch in enumerate(batched(windows, settings.batch_size, None)):
            if settings.max_batches is not None and n >= settings.max_batches:
                self.complete = False
                return
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
    import numpy as np

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
    import numpy as np

    for seq in sequences(split, []):
        for start in range(0, len(seq), block_size):
            block = np.asarray(seq[start : start + block_size], dtype=np.int64)
            if len(block):
                yield block


def count_blocks(split: Any, block_size: int) -> int | None:
    if split.offsets is None:
        return -(-split.num_tokens // block_size)
    return None


ROW_SEEDED = "lmctl_row_seeded"
"""Attribute set on a collator by :func:`lmctl.families.base.row_seeded`."""


def is_row_seeded(collate: Callable[..., dict]) -> bool:
    """Whether ``collate`` takes a list of generators, one per row (so whole batches collate at once)."""
    return bool(getattr(collate, ROW_SEEDED, False))


def collate_blocks(
    collate: Callable[..., dict],
    rows: list[np.ndarray],
    block_size: int,
    pad_id: int,
    seed: int,
    first_index: int,
    always_mask: bool = False,
) -> tuple[dict, list[Any]]:
    """Collate evaluation blocks with one seeded generator per block, as one batch.

    Seeding per block (not per batch) makes masks independent of the batch size.  Blocks shorter
    than ``block_size`` are padded to it with an attention mask, so the collator never picks
    padding.  ``always_mask`` gives every block a mask: a family with a ``block_lookahead`` then
    reads it as a complete input (unmasked rows would be expected to carry the lookahead tokens).

    A collator marked :func:`lmctl.families.base.row_seeded` is called once for the whole batch,
    with the list of per-block generators (row ``i`` draws only from ``generators[i]``), so its
    results are the same as block by block; any other collator is called once per block.
    Returns the batch and the per-block generators (for further seeded draws).
    """
    import numpy as np
    import torch

    generators = [seeded_generator(seed, first_index + offset) for offset in range(len(rows))]
    if is_row_seeded(collate):
        ids = np.full((len(rows), block_size), pad_id, dtype=np.int64)
        mask = None
        if always_mask or any(len(block) < block_size for block in rows):
            mask = torch.zeros((len(rows), block_size), dtype=torch.long)
        for row, block in enumerate(rows):
            ids[row, : len(block)] = block
            if mask is not None:
                mask[row, : len(block)] = 1
        return collate(torch.from_numpy(ids), mask, generators), generators
    parts = []
    for block, generator in zip(rows, generators, strict=True):
        ids = np.full((1, block_size), pad_id, dtype=np.int64)
        ids[0, : len(block)] = block
        mask = None
        if len(block) < block_size or always_mask:
            mask = torch.zeros((1, block_size), dtype=torch.long)
            mask[0, : len(block)] = 1
        parts.append(collate(torch.from_numpy(ids), mask, generator))
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
    """A batch's tensors on ``device`` (pinned, asynchronous copies to a GPU)."""
    import torch

    from lmctl.core.device import host_to_device

    return {k: host_to_device(v, device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


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


def sum_nll(logits: Any, labels: Any) -> Any:
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


def mean_or_nan(total: float, count: int) -> float:
    return total / count if count else float("nan")




# --- shared evaluations -----------------------------------------------------------------------------


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
    result = {"loss": mean_or_nan(float(total), tokens), "tokens": tokens, "complete": complete}
    result.update({key: mean_or_nan(value, tokens) for key, value in metric_sums.items()})
    return result


def seeded_blocks(family: Any, tokenizer: Any, split: Any, settings: EvalSettings) -> Iterator[tuple[dict, list, int]]:
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


def covered_all(split: Any, settings: EvalSettings, covered: int) -> bool:
    return settings.max_batches is None or covered >= split.num_tokens


def roc_auc(scores: np.ndarray, truth: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U with tied scores averaged); None with one class."""
    import numpy as np

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


def safe_exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return float("inf")
