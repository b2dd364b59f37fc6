"""Built-in tokenizer trainers (a plugin, registered like any other).

Each trainer takes an iterator of documents and returns a trained :class:`tokenizers.Tokenizer`
(the Rust library does the work).  ``lmctl prepare --tokenizer NAME`` picks one:

* ``bytelevel-bpe``: GPT-2 style byte-level BPE; every byte is representable, nothing is unknown.
* ``bpe``: SentencePiece-style BPE on whitespace-marked words (``▁``), case and newlines kept.
* ``wordpiece``: BERT-style WordPiece (whitespace is not kept: for masked families).
* ``unigram``: SentencePiece-style Unigram (XLNet's choice).
* ``char``: one token per character seen in the training text (nanoGPT's shakespeare_char).
* ``word``: one token per whitespace-separated word, the most frequent ones (NeMo's word-level LM).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from lmctl.hookspecs import hookimpl


def _special_list(special_tokens: dict[str, str]) -> list[str]:
    seen: list[str] = []
    for token in special_tokens.values():
        if token not in seen:
            seen.append(token)
    return seen


def train_bytelevel_bpe(texts: Iterable[str], *, vocab_size: int, special_tokens: dict[str, str]) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=_special_list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def _metaspace_tokenizer(model: Any) -> Any:
    from tokenizers import Tokenizer, decoders, pre_tokenizers

    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    return tokenizer


def train_bpe(texts: Iterable[str], *, vocab_size: int, special_tokens: dict[str, str]) -> Any:
    from tokenizers import models, trainers

    unk = special_tokens.get("unk_token", "<unk>")
    specials = _special_list({**special_tokens, "unk_token": unk})
    tokenizer = _metaspace_tokenizer(models.BPE(unk_token=unk))
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def train_unigram(texts: Iterable[str], *, vocab_size: int, special_tokens: dict[str, str]) -> Any:
    from tokenizers import models, trainers

    unk = special_tokens.get("unk_token", "<unk>")
    specials = _special_list({**special_tokens, "unk_token": unk})
    tokenizer = _metaspace_tokenizer(models.Unigram())
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=specials, unk_token=unk, show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def train_wordpiece(texts: Iterable[str], *, vocab_size: int, special_tokens: dict[str, str]) -> Any:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    unk = special_tokens.get("unk_token", "[UNK]")
    specials = _special_list({**special_tokens, "unk_token": unk})
    tokenizer = Tokenizer(models.WordPiece(unk_token=unk))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False, clean_text=True, handle_chinese_chars=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def train_char(texts: Iterable[str], *, vocab_size: int, special_tokens: dict[str, str]) -> Any:
    """Character level: the vocabulary is the special tokens plus every character seen (sorted).

    ``vocab_size`` is an upper bound: the rarest characters map to the unknown token past it.
    """
    from collections import Counter

    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(text)
    unk = special_tokens.get("unk_token", "<unk>")
    specials = _special_list({**special_tokens, "unk_token": unk})
    room = max(0, vocab_size - len(specials)) if vocab_size else len(counts)
    chars = sorted(c for c, _ in counts.most_common(room) if c not in specials)
    vocab = {token: i for i, token in enumerate(specials)}
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    return tokenizer


def train_word(texts: Iterable[str], *, vocab_size: int, special_tokens: dict[str, str]) -> Any:
    """Word level: the special tokens, then the ``vocab_size`` most frequent whitespace-separated words.

    Other words become the unknown token (``<unk>``, which WikiText already uses for rare words).
    Words are counted here rather than by ``tokenizers.trainers.WordLevelTrainer``: that trainer
    gives a word equal to a special token (``<unk>`` in WikiText) a second id and leaves a hole in
    the vocabulary.  Ties in frequency are broken alphabetically, so the vocabulary is reproducible.
    """
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    # The pre-tokenizer that encodes is the one that counts, so both see the same words.
    splitter = pre_tokenizers.WhitespaceSplit()
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(word for word, _ in splitter.pre_tokenize_str(text))
    unk = special_tokens.get("unk_token", "<unk>")
    specials = _special_list({**special_tokens, "unk_token": unk})
    vocab = {token: i for i, token in enumerate(specials)}
    room = max(0, vocab_size - len(vocab)) if vocab_size else len(counts)
    for word, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        if len(vocab) >= len(specials) + room:
            break
        vocab.setdefault(word, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    tokenizer.pre_tokenizer = splitter
    # Decoding joins words with single spaces.  The WordPiece decoder does exactly that when no
    # token starts with its continuation prefix, and no whitespace-split word starts with a space.
    tokenizer.decoder = decoders.WordPiece(prefix=" ", cleanup=False)
    return tokenizer


TRAINERS = {
    "bytelevel-bpe": train_bytelevel_bpe,
    "bpe": train_bpe,
    "wordpiece": train_wordpiece,
    "unigram": train_unigram,
    "char": train_char,
    "word": train_word,
}


@hookimpl
def register_tokenizer_trainers(register: Any) -> None:
    for name, fn in TRAINERS.items():
        register(name, fn)


def as_transformers_tokenizer(tokenizer: Any, special_tokens: dict[str, str], *, model_max_length: int | None = None) -> Any:
    """Wrap a trained :class:`tokenizers.Tokenizer` as a transformers fast tokenizer.

    Masked-family tokenizers (with [CLS]/[SEP]) get a post-processor that adds them around a
    single text, as BERT's does, so fill-mask prompts look like training data.
    """
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    cls, sep = special_tokens.get("cls_token"), special_tokens.get("sep_token")
    if cls and sep and special_tokens.get("mask_token") and tokenizer.token_to_id(cls) is not None:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}",
            pair=f"{cls} $A {sep} $B {sep}",
            special_tokens=[(cls, tokenizer.token_to_id(cls)), (sep, tokenizer.token_to_id(sep))],
        )
    kwargs: dict[str, Any] = dict(special_tokens)
    if model_max_length:
        kwargs["model_max_length"] = model_max_length
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **kwargs)


def iter_texts(texts: Iterable[str]) -> Iterator[str]:
    yield from texts
