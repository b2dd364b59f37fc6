"""Shared fixtures: a real English corpus from the standard library, trained tokenizers and tiny
models built in-process (no hub, no network)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models run faster on one thread, and tests then do not fight each other (or a busy
# machine) for cores; subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LMCTL_QUIET_PLUGIN_WARNINGS", "")
# Tests never write to the user's cache (prepared data, remembered precision choices).
os.environ.setdefault("LMCTL_CACHE", tempfile.mkdtemp(prefix="lmctl-test-cache-"))

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
    from lmctl.data.tokenizer_trainers import TRAINERS, as_transformers_tokenizer
    from lmctl.plugins.registry import get_family

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

            from lmctl.core.presets import preset_overrides
            from lmctl.plugins.registry import get_family

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


def newest_checkpoint_step(out: Path) -> int:
    """The step of ``out``'s newest complete checkpoint, 0 when it has none.

    Tests that act "once step N is saved" must wait for ``>= N``, never for ``step-N`` itself:
    --keep-last deletes old checkpoints, and a short step is faster than a busy machine's polling
    (step-3 of a tiny model lives about 60 ms before step-9 replaces it).
    """
    steps = [int(p.parent.name.removeprefix("step-")) for p in Path(out, "checkpoints").glob("step-*/trainer_state.json")]
    return max(steps, default=0)


def write_prepared(out: Path, tokenizer, family_name: str, train_text: str, validation_text: str | None = None, block_size: int = 32) -> Path:
    """Write a prepared directory directly (independent of lmctl.workflows.prepare): documents are blank-line
    separated paragraphs, each preceded by the family's separator, as lmctl/prepared.py specifies."""
    import json

    import numpy as np

    from lmctl.core.prepared import FORMAT_NAME, FORMAT_VERSION
    from lmctl.plugins.registry import get_family

    family = get_family(family_name)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out / "tokenizer")
    sep = family.document_separator(tokenizer)
    splits = {}
    for name, text in (("train", train_text), ("validation", validation_text)):
        if text is None:
            continue
        ids: list[int] = []
        docs = [d for d in text.split("\n\n") if d.strip()]
        for doc in docs:
            ids += sep + tokenizer(doc, add_special_tokens=False)["input_ids"]
        np.asarray(ids, dtype=np.uint16).tofile(out / f"{name}.bin")
        splits[name] = {
            "file": f"{name}.bin",
            "tokens": len(ids),
            "documents": len(docs),
            "bytes": len(text.encode("utf-8")),
            "words": len(text.split()),
        }
    manifest = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "family": family_name,
        "block_size": block_size,
        "line_by_line": False,
        "dtype": "uint16",
        "vocab_size": len(tokenizer),
        "tokenizer": {"dir": "tokenizer"},
        "splits": splits,
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.fixture
def prepared_for(tmp_path, tokenizer_for, corpus):
    """prepared_for(family) -> a prepared directory (train + validation) built from the corpus."""

    def get(family_name: str, block_size: int = 32) -> Path:
        cut = int(len(corpus) * 0.9)
        return write_prepared(
            tmp_path / f"prepared-{family_name}", tokenizer_for(family_name), family_name, corpus[:cut], corpus[cut:], block_size
        )

    return get
