"""Training data: which examples each optimizer step sees, as token tensors.

Data order is a pure function of (seed, position): a per-epoch permutation of the blocks, so
resuming needs only the step and N processes x batch B see exactly the examples of 1 x N*B.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

import numpy as np

from lmctl.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from lmctl.families.base import Family
    from lmctl.workflows.train.config import TrainConfig


class ExampleOrder:
    """A seeded permutation of ``n`` examples per epoch; position ``p`` -> example index."""

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.seed = seed
        self._epoch = -1
        self._perm: np.ndarray | None = None

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            self._epoch = epoch
        assert self._perm is not None
        return self._perm

    def indices(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Example indices at positions ``start .. start + count`` and the epoch of each."""
        positions = np.arange(start, start + count)
        epochs = positions // self.n
        out = np.empty(count, dtype=np.int64)
        for epoch in np.unique(epochs):
            sel = epochs == epoch
            out[sel] = self._permutation(int(epoch))[positions[sel] % self.n]
        return out, epochs


class BatchSource:
    """Turns example indices into padded token tensors from a prepared split (memory-mapped).

    Packed data: example ``i`` of epoch ``e`` is the row ``tokens[o + i*T : o + (i+1)*T + L]``,
    ``L`` being the family's ``block_lookahead`` (causal: 1, the target of the block's last
    position).  The offset ``o`` is 0 in the first epoch and a seeded value in ``[0, T)`` in later
    ones, so repeated epochs see new windows (nanoGPT samples random windows for the same reason)
    while the data order stays a pure function of (seed, position) and resuming stays exact.
    """

    def __init__(self, split: Any, block_size: int, pad_id: int, seed: int = 0, lookahead: int = 0) -> None:
        self.split = split
        self.block_size = block_size
        self.width = block_size + lookahead
        self.pad_id = pad_id
        self.seed = seed
        self._offsets: dict[int, int] = {}
        self.line_by_line = split.offsets is not None
        self.max_offset = 0
        if self.line_by_line:
            self.n = split.num_blocks(block_size)
        else:
            usable = split.num_tokens - lookahead  # every row needs its lookahead tokens after it
            shifted = (usable - (block_size - 1)) // block_size
            if shifted >= 1:
                self.n, self.max_offset = shifted, block_size - 1
            else:  # under two blocks of data: fixed boundaries
                self.n = max(0, usable) // block_size

    def __len__(self) -> int:
        return self.n

    def offset(self, epoch: int) -> int:
        if epoch == 0 or self.max_offset == 0:
            return 0
        # Cached: batch() asks once per example, on the hot path of every step.
        if epoch not in self._offsets:
            self._offsets[epoch] = int(np.random.default_rng([self.seed, epoch, 1]).integers(self.max_offset + 1))
        return self._offsets[epoch]

    def batch(self, indices: np.ndarray, epochs: np.ndarray | None = None) -> tuple[Any, Any]:
        import torch

        if not self.line_by_line:
            epochs = np.zeros_like(indices) if epochs is None else epochs
            offsets = np.array([self.offset(int(e)) for e in epochs], dtype=np.int64)
            # Sorted reads are kinder to the page cache; the order within a batch does not matter.
            starts = np.sort(offsets + indices * self.block_size)
            rows = self.split.tokens[starts[:, None] + np.arange(self.width)]
            return torch.from_numpy(rows.astype(np.int64)), None
        examples = [self.split.example(int(i), self.block_size) for i in indices]
        width = max(len(e) for e in examples)
        ids = np.full((len(examples), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(examples), width), dtype=np.int64)
        for row, example in enumerate(examples):
            ids[row, : len(example)] = example
            mask[row, : len(example)] = 1
        return torch.from_numpy(ids), torch.from_numpy(mask)


def resolve_data(
    config: TrainConfig, family: Family, tokenizer_source: str, block_size: int, accelerator: Any, progress: Any = None
) -> Any:
    """A :class:`PreparedData`: the given prepared directory, or raw files prepared into the cache."""
    from lmctl.core.prepared import PreparedData

    if len(config.train) == 1 and PreparedData.is_prepared(config.train[0]):
        if config.validation:
            raise UsageError("--validation cannot be combined with a prepared --train directory; prepare both together")
        return PreparedData(config.train[0])
    for item in config.train:
        if PreparedData.is_prepared(item):
            raise UsageError(f"{item} is a prepared directory: pass it alone as --train")
    from lmctl.workflows.prepare import PrepareConfig, prepare_cached

    prepare_config = PrepareConfig(
        train=list(config.train),
        validation=list(config.validation),
        validation_split=config.validation_split,
        tokenizer=tokenizer_source,
        vocab_size=config.vocab_size,
        family=family.name,
        block_size=block_size,
        document_split=config.document_split,
        line_by_line=config.line_by_line,
        text_column=config.text_column,
    )
    # The main process prepares first; then, on machines that do not share its cache, each
    # machine's first process; the others find the result in their machine's cache.
    with accelerator.main_process_first(), accelerator.local_main_process_first():
        path = prepare_cached(prepare_config, progress=progress if accelerator.is_main_process else None)
    return PreparedData(path)


def prepared_data_hash(data: Any) -> str:
    """sha256 (16 hex digits) of what defines a prepared directory's data: its inputs' hashes, splits,
    tokenizer and document options (the resume fingerprint's ``data_hash``).  Compare
    :func:`lmctl.workflows.evaluate.token_hash`, which hashes the token ids scored."""
    manifest = data.manifest
    keys = {k: manifest.get(k) for k in ("inputs", "splits", "tokenizer", "document_split", "line_by_line")}
    return hashlib.sha256(json.dumps(keys, sort_keys=True, default=str).encode()).hexdigest()[:16]
