"""Reading a prepared data directory (what ``lmctl prepare`` writes, ``train``/``eval`` read).

Layout of ``DIR``::

    manifest.json          format version, inputs (sizes, sha256), tokenizer hash, family,
                           block size, dtype, per-split counts (see PreparedSplit)
    tokenizer/             a transformers tokenizer (tokenizer.json + tokenizer_config.json ...)
    train.bin              token ids, flat, dtype uint16 (vocab <= 65535) or uint32
    validation.bin         (optional) the same for the validation split
    train.offsets.bin      (line-by-line data only) uint64 start offsets of each example, n + 1 values

Packed data (the default) is one token stream per split in which every document is preceded by
the family's separator (BOS/EOS for causal, SEP for masked).  Blocks are cut from the stream at
read time: block ``i`` is ``tokens[i * T:(i + 1) * T]``, and the final partial block is not used
for training (evaluation scores every token).  Line-by-line data keeps one example per line,
padded per batch.

Everything is read with ``numpy.memmap``, so the corpus never has to fit in memory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmctl.errors import LmctlError

FORMAT_NAME = "lmctl.prepared"  # on disk: never changes with the module layout
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


@dataclass
class PreparedSplit:
    name: str
    tokens: np.ndarray  # 1-D memmap of all token ids of the split
    offsets: np.ndarray | None  # line-by-line: example boundaries (n + 1 values), else None
    info: dict[str, Any]  # the manifest entry: tokens, documents, bytes, words, ...

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.shape[0])

    def num_blocks(self, block_size: int) -> int:
        """How many training examples: full blocks (packed) or lines (line-by-line)."""
        if self.offsets is not None:
            return int(self.offsets.shape[0] - 1)
        return self.num_tokens // block_size

    def blocks(self, block_size: int) -> np.ndarray:
        """Packed data as a [num_blocks, block_size] view (no copy)."""
        if self.offsets is not None:
            raise LmctlError("line-by-line data has no fixed blocks; use example(i)")
        n = self.num_blocks(block_size)
        return self.tokens[: n * block_size].reshape(n, block_size)

    def example(self, index: int, block_size: int) -> np.ndarray:
        """Line-by-line: example ``index`` truncated to ``block_size`` tokens."""
        assert self.offsets is not None
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        return self.tokens[start : min(end, start + block_size)]


class PreparedData:
    """A prepared directory opened for reading (memory-mapped)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not manifest_path.is_file():
            raise LmctlError(f"{self.path} is not a prepared data directory (no {MANIFEST}); run `lmctl prepare` first")
        try:
            self.manifest: dict[str, Any] = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise LmctlError(f"{manifest_path} is damaged (not valid JSON); run `lmctl prepare` again") from None
        if self.manifest.get("format") != FORMAT_NAME:
            raise LmctlError(f"{manifest_path} is not an lmctl prepared-data manifest")
        version = self.manifest.get("version")
        if version != FORMAT_VERSION:
            raise LmctlError(
                f"{self.path} was prepared by an lmctl with data format {version}; this lmctl reads {FORMAT_VERSION}: "
                "run `lmctl prepare` again"
            )

    @staticmethod
    def is_prepared(path: str | Path) -> bool:
        return (Path(path) / MANIFEST).is_file()

    @property
    def family(self) -> str | None:
        return self.manifest.get("family")

    @property
    def block_size(self) -> int:
        return int(self.manifest["block_size"])

    @property
    def line_by_line(self) -> bool:
        return bool(self.manifest.get("line_by_line", False))

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.manifest["dtype"])

    @property
    def tokenizer_path(self) -> Path:
        return self.path / self.manifest.get("tokenizer", {}).get("dir", "tokenizer")

    def load_tokenizer(self) -> Any:
        from lmctl.core.hub import load_tokenizer

        return load_tokenizer(str(self.tokenizer_path))

    def has_split(self, name: str) -> bool:
        return name in self.manifest.get("splits", {})

    def split(self, name: str) -> PreparedSplit:
        splits = self.manifest.get("splits", {})
        if name not in splits:
            raise LmctlError(f"{self.path} has no '{name}' split (it has: {', '.join(splits) or 'none'})")
        info = splits[name]
        file = self.path / info["file"]
        if not file.is_file():
            raise LmctlError(f"{file} is missing: the prepared directory is incomplete; run `lmctl prepare` again")
        expected = int(info["tokens"])
        size = file.stat().st_size
        if size != expected * self.dtype.itemsize:
            raise LmctlError(f"{file} has {size} bytes, expected {expected * self.dtype.itemsize}: it is damaged")
        tokens = np.memmap(file, dtype=self.dtype, mode="r", shape=(expected,)) if expected else np.zeros(0, self.dtype)
        offsets = None
        if info.get("offsets_file"):
            offsets = np.memmap(self.path / info["offsets_file"], dtype=np.uint64, mode="r")
        return PreparedSplit(name=name, tokens=tokens, offsets=offsets, info=info)
