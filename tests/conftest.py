"""Shared fixtures: a real English corpus from the standard library, trained tokenizers and tiny
models built in-process (no hub, no network)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LMCTL_QUIET_PLUGIN_WARNINGS", "")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"

# family -> (architecture, tokenizer trainer)
FAMILY_SETUP = {
    "causal": ("gpt2", "bytelevel-bpe"),
    "masked": ("bert", "wordpiece"),
    "permuted": ("xlnet", "unigram"),
    "electra": ("electra", "wordpiece"),
}


def corpus_text(max_chars: int = 60_000) -> str:
    """English prose every Python install has: the pydoc topics (about 460 KB)."""
    import pydoc_data.topics as topics

    text = "\n\n".join(topics.topics[k].strip() for k in sorted(topics.topics))
    return text[:max_chars]


@pytest.fixture(scope="session")
def corpus() -> str:
    return corpus_text()


@pytest.fixture
def corpus_file(tmp_path: Path, corpus: str) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(corpus, encoding="utf-8")
    return path


def train_tokenizer(family_name: str, kind: str | None = None, vocab_size: int = 320):
    from lmctl.plugins import get_family
    from lmctl.tokenizer_trainers import TRAINERS, as_transformers_tokenizer

    family = get_family(family_name)
    kind = kind or FAMILY_SETUP[family_name][1]
    special = family.special_tokens()
    tok = TRAINERS[kind]([corpus_text(30_000)], vocab_size=vocab_size, special_tokens=special)
    return as_transformers_tokenizer(tok, special)


@pytest.fixture(scope="session")
def tokenizer_for():
    """tokenizer_for(family) -> a transformers tokenizer trained on a few KB (cached per family)."""
    cache = {}

    def get(family_name: str, kind: str | None = None):
        key = (family_name, kind)
        if key not in cache:
            cache[key] = train_tokenizer(family_name, kind)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer_for):
    """tiny_model_dir(family) -> a saved tiny model directory (2 layers, hidden 32) with tokenizer."""
    cache = {}

    def get(family_name: str, block_size: int = 64) -> Path:
        key = (family_name, block_size)
        if key not in cache:
            import torch

            from lmctl.plugins import get_family
            from lmctl.presets import preset_overrides

            torch.manual_seed(0)
            family = get_family(family_name)
            arch = FAMILY_SETUP[family_name][0]
            tokenizer = tokenizer_for(family_name)
            model = family.build_from_scratch(
                arch, tokenizer=tokenizer, block_size=block_size, overrides=preset_overrides(arch, "tiny")
            )
            out = tmp_path_factory.mktemp(f"tiny-{family_name}")
            family.save(model, tokenizer, out)
            cache[key] = out
        return cache[key]

    return get


def shared_data(name: str) -> Path:
    """A corpus from ../shared/data, or skip the test when it is absent (users do not have it)."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path
