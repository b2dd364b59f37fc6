"""Tests of lmctl-byte.  Run from this directory: ``python -m pytest`` (no install needed)."""

from __future__ import annotations

import random
from importlib.metadata import entry_points

import pytest
from lmctl_byte.plugin import byte_to_unicode, byte_vocabulary, train_byte

CAUSAL_SPECIALS = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
MASKED_SPECIALS = {"unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "mask_token": "[MASK]"}


def random_text(rng: random.Random, n: int) -> str:
    """Characters from every Unicode plane (no lone surrogates: they are not valid text)."""
    out = []
    for _ in range(n):
        cp = rng.choice([rng.randint(0, 0x7F), rng.randint(0x80, 0x7FF), rng.randint(0x800, 0xFFFF), rng.randint(0x10000, 0x10FFFF)])
        if 0xD800 <= cp <= 0xDFFF:
            cp = 0x20
        out.append(chr(cp))
    return "".join(out)


def test_byte_map_is_a_bijection():
    mapping = byte_to_unicode()
    assert sorted(mapping) == list(range(256))
    assert len(set(mapping.values())) == 256


@pytest.mark.parametrize("specials", [CAUSAL_SPECIALS, MASKED_SPECIALS])
def test_ids_are_bytes_after_the_specials_and_round_trip(specials):
    tokenizer = train_byte(iter(()), vocab_size=0, special_tokens=specials)
    n_special = len(set(specials.values()))
    assert tokenizer.get_vocab_size() == n_special + 256
    assert byte_vocabulary(specials) == tokenizer.get_vocab()
    rng = random.Random(0)
    for length in (0, 1, 7, 200):
        text = random_text(rng, length)
        ids = tokenizer.encode(text).ids
        # Independent check: the ids are exactly the UTF-8 bytes, shifted past the specials.
        assert ids == [n_special + b for b in text.encode("utf-8")]
        assert tokenizer.decode(ids) == text


def test_special_tokens_stay_whole():
    tokenizer = train_byte(iter(()), vocab_size=0, special_tokens=MASKED_SPECIALS)
    ids = tokenizer.encode("a [MASK] b").ids
    assert tokenizer.token_to_id("[MASK]") in ids
    assert len(ids) == 5  # a, space, [MASK], space, b


def test_wrapped_for_transformers_and_saved(tmp_path):
    from transformers import AutoTokenizer

    from lmctl.data.tokenizer_trainers import as_transformers_tokenizer

    tok = as_transformers_tokenizer(train_byte([], vocab_size=0, special_tokens=CAUSAL_SPECIALS), CAUSAL_SPECIALS)
    tok.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "Tabs\tand newlines\n kept, and 東京 😀."
    ids = reloaded(text, add_special_tokens=False)["input_ids"]
    assert ids == [1 + b for b in text.encode("utf-8")]
    assert reloaded.decode(ids) == text
    assert reloaded.eos_token == "<|endoftext|>"


@pytest.fixture
def registered(monkeypatch):
    """The plugin registered by hand, as if installed (an installed copy is kept out of the way)."""
    import lmctl_byte.plugin as plugin

    from lmctl.plugins.registry import register_plugin, reset_registry

    monkeypatch.setenv("LMCTL_LOAD_PLUGINS", "")  # installed plugins: none
    reset_registry()
    register_plugin(plugin, "byte")
    yield plugin
    reset_registry()


def test_registered_through_the_hook(registered):
    from lmctl.plugins.registry import get_registry

    registry = get_registry()
    assert registry.tokenizer_trainers["byte"] is train_byte
    assert registry.plugins["byte"].tokenizer_trainers == ["byte"]


def test_plugins_check_passes(registered):
    from lmctl.plugins.check import check_plugins

    result = check_plugins(["byte"])
    assert result.ok, result.problems


def test_entry_point_when_installed():
    eps = [ep for ep in entry_points(group="lmctl") if ep.name == "byte"]
    if not eps:
        pytest.skip("lmctl-byte is not installed (pip install -e .)")
    assert eps[0].value == "lmctl_byte.plugin"
