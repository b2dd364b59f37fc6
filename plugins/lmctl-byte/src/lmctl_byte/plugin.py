"""The lmctl hook of lmctl-byte: the ``byte`` tokenizer trainer."""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from lmctl.hookspecs import hookimpl


@lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable characters.

    The ``tokenizers`` ByteLevel pre-tokenizer and decoder use exactly this map, so a vocabulary
    keyed by these characters has one token per byte and decodes back to the original bytes.
    """
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def byte_vocabulary(special_tokens: dict[str, str]) -> dict[str, int]:
    """Special tokens first (in the order given), then byte ``b`` at id ``len(specials) + b``."""
    vocab: dict[str, int] = {}
    for token in special_tokens.values():
        vocab.setdefault(token, len(vocab))
    offset = len(vocab)
    mapping = byte_to_unicode()
    for b in range(256):
        vocab[mapping[b]] = offset + b
    return vocab


def train_byte(texts: Iterable[str], *, vocab_size: int, special_tokens: dict[str, str]) -> Any:
    """A byte-level tokenizer: 256 byte tokens plus ``special_tokens``; ``texts`` and ``vocab_size`` are not needed.

    The texts are not read at all (the vocabulary is fixed), so this costs nothing on a big corpus.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = byte_vocabulary(special_tokens)
    # BPE with no merges = one token per (byte-level) character, i.e. per byte.
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = list(dict.fromkeys(special_tokens.values()))
    tokenizer.add_special_tokens(specials)  # matched whole in text, never split into bytes
    return tokenizer


@hookimpl
def register_tokenizer_trainers(register: Any) -> None:
    register("byte", train_byte)
