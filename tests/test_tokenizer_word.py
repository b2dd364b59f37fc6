"""The ``word`` tokenizer trainer: whitespace-separated words, the most frequent kept, <unk> for
the rest, decoded by joining words with spaces."""

from __future__ import annotations

import json
from collections import Counter

from typer.testing import CliRunner

from tests.conftest import corpus_text

SPECIAL = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}


def test_vocabulary_is_the_most_frequent_words_with_contiguous_ids():
    from lmctl.data.tokenizer_trainers import train_word

    # WikiText writes rare words as <unk> already: that word must not get a second id.
    docs = ["the cat sat on the mat .", "the dog , the <unk> cat <unk>", "zebra <unk> dog"]
    tok = train_word(iter(docs), vocab_size=7, special_tokens=SPECIAL)
    vocab = tok.get_vocab()
    assert sorted(vocab.values()) == list(range(len(vocab))) == list(range(7))
    assert vocab["<|endoftext|>"] == 0 and vocab["<unk>"] == 1
    counts = Counter(w for d in docs for w in d.split() if w != "<unk>")
    # 5 words fit: by count, ties alphabetically (the: 4, cat: 2, dog: 2, then ',' '.' 'mat' ...).
    expected = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][:5]
    assert [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])][2:] == expected


def test_unknown_words_and_decoding():
    from lmctl.data.tokenizer_trainers import as_transformers_tokenizer, train_word

    text = corpus_text(20_000)
    tok = train_word([text], vocab_size=500, special_tokens=SPECIAL)
    hf = as_transformers_tokenizer(tok, SPECIAL)
    unk = tok.token_to_id("<unk>")
    words = text.split()
    ids = hf(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(words)  # one token per word, whatever the whitespace
    kept = set(tok.get_vocab())
    assert ids == [tok.token_to_id(w) if w in kept else unk for w in words]
    known = " ".join(w for w in words[:200] if w in kept)
    assert hf.decode(hf(known, add_special_tokens=False)["input_ids"]) == known
    assert hf.decode(hf("the  qqqzzz\n\tthe", add_special_tokens=False)["input_ids"]) == "the <unk> the"


def test_registered_and_used_by_prepare(tmp_path):
    from lmctl.cli.app import app
    from lmctl.plugins.registry import get_registry

    assert "word" in get_registry().tokenizer_trainers
    text = corpus_text(12_000)
    (tmp_path / "train.txt").write_text(text)
    result = CliRunner().invoke(
        app,
        ["prepare", "--train", str(tmp_path / "train.txt"), "--tokenizer", "word", "--vocab-size", "300",
         "--document-split", "lines", "--out", str(tmp_path / "out"), "--json"],  # fmt: skip
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    lines = [line for line in text.splitlines() if line.strip()]
    words = [w for line in lines for w in line.split()]
    kept = {w for w, _ in sorted(Counter(words).items(), key=lambda kv: (-kv[1], kv[0]))[:298]}
    train = report["splits"]["train"]
    assert train["documents"] == len(lines)
    assert train["tokens"] == len(words) + len(lines)  # a separator before each document
    assert train["unknown_tokens"] == sum(w not in kept for w in words)
    assert report["vocab_size"] == 300
