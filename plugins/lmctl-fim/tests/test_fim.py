"""Tests of lmctl-fim.  Run from this directory: ``python -m pytest`` (no install needed)."""

from __future__ import annotations

import json
import random
from importlib.metadata import entry_points

import pytest
from lmctl_fim.family import FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, FimFamily, fim_document, fim_prompt, fim_row

PRE, SUF, MID, SEP = 1, 2, 3, 0


def undo_psm(doc: list[int]) -> list[int]:
    """Independent inverse of the PSM layout: <PRE> p <SUF> s <MID> m  ->  p + m + s."""
    assert doc[0] == PRE
    s_at, m_at = doc.index(SUF), doc.index(MID)
    return doc[1:s_at] + doc[m_at + 1 :] + doc[s_at + 1 : m_at]


def split_docs(row: list[int]) -> list[list[int]]:
    docs, current = [], []
    for t in row:
        if t == SEP:
            if current:
                docs.append(current)
            current = []
        else:
            current.append(t)
    if current:
        docs.append(current)
    return docs


def test_fim_document_keeps_every_token_once():
    rng = random.Random(0)
    content = list(range(10, 30))
    for _ in range(200):
        doc = fim_document(content, rng, prefix_id=PRE, suffix_id=SUF, middle_id=MID)
        assert len(doc) == len(content) + 3
        assert undo_psm(doc) == content


def test_fim_row_rate_zero_is_identity_and_rate_one_transforms_every_document():
    rng = random.Random(1)
    row = [SEP, 10, 11, 12, SEP, 13, 14, SEP, 15, SEP, 16, 17, 18, 19]
    assert fim_row(row, rng, separators={SEP}, rate=0.0, prefix_id=PRE, suffix_id=SUF, middle_id=MID) == row
    out = fim_row(row, rng, separators={SEP}, rate=1.0, prefix_id=PRE, suffix_id=SUF, middle_id=MID)
    original = split_docs(row)
    transformed = split_docs(out)
    assert len(transformed) == len(original)
    for before, after in zip(original, transformed, strict=True):
        if len(before) >= 2:
            assert undo_psm(after) == before
        else:  # a one-token document has no middle to cut
            assert after == before
    # A row that starts mid-document (no separator first) is handled as a document too.
    out = fim_row([20, 21, 22, SEP, 23], rng, separators={SEP}, rate=1.0, prefix_id=PRE, suffix_id=SUF, middle_id=MID)
    assert undo_psm(split_docs(out)[0]) == [20, 21, 22]


def test_fim_rate_is_respected():
    rng = random.Random(2)
    row = [t for d in range(2000) for t in (SEP, 10 + d % 7, 11, 12)]
    out = fim_row(row, rng, separators={SEP}, rate=0.5, prefix_id=PRE, suffix_id=SUF, middle_id=MID)
    transformed = out.count(PRE) / 2000
    assert 0.45 < transformed < 0.55


@pytest.fixture(scope="module")
def fim_tokenizer():
    from lmctl.data.tokenizer_trainers import as_transformers_tokenizer
    from lmctl.plugins.registry import get_registry

    family = FimFamily()
    special = family.special_tokens()
    text = ["def add(a, b):\n    return a + b\n", "The quick brown fox jumps over the lazy dog. " * 20]
    trainer = get_registry().tokenizer_trainers[family.tokenizer_kind]
    return as_transformers_tokenizer(trainer(iter(text * 10), vocab_size=300, special_tokens=special), special)


def test_collator_is_seeded_keeps_shapes_and_predicts_everything(fim_tokenizer):
    import torch


    family = FimFamily(rate=1.0)
    collate = family.make_collator(fim_tokenizer, family.default_options())
    eos = fim_tokenizer.eos_token_id
    doc = fim_tokenizer("The quick brown fox jumps over the lazy dog.", add_special_tokens=False)["input_ids"]
    row = ([eos] + doc) * 4
    ids = torch.tensor([row[:33], row[5:38]])  # packed rows: 32 inputs + the causal lookahead token
    a = collate(ids, None, torch.Generator().manual_seed(0))
    b = collate(ids, None, torch.Generator().manual_seed(0))
    c = collate(ids, None, torch.Generator().manual_seed(1))
    assert a["input_ids"].shape == (2, 32) and a["labels"].shape == ids.shape
    assert torch.equal(a["input_ids"], b["input_ids"]) and not torch.equal(a["input_ids"], c["input_ids"])
    assert torch.equal(a["labels"][:, :-1], a["input_ids"])  # every input position has a target
    prefix_id = fim_tokenizer.convert_tokens_to_ids(FIM_PREFIX)
    assert (a["input_ids"] == prefix_id).any()


def test_collator_padded_rows_grow_into_padding(fim_tokenizer):
    import torch


    collate = FimFamily(rate=1.0).make_collator(fim_tokenizer, FimFamily(rate=1.0).default_options())
    ids = torch.tensor([[50, 51, 52, 53, 0, 0, 0, 0, 0], [50, 51, 52, 53, 54, 55, 56, 57, 58]])
    mask = (torch.arange(9) < torch.tensor([[4], [9]])).long()
    batch = collate(ids, mask, torch.Generator().manual_seed(0))
    assert batch["attention_mask"][0].tolist() == [1] * 7 + [0] * 2  # 4 tokens + 3 sentinels
    assert (batch["labels"][0, 7:] == -100).all()
    assert (batch["labels"][0, :7] == batch["input_ids"][0, :7]).all()
    assert batch["attention_mask"][1].sum() == 9  # a full row is cut back to its width


def test_tokenizer_without_sentinels_is_refused():
    from lmctl.data.tokenizer_trainers import as_transformers_tokenizer, train_char
    from lmctl.errors import UsageError

    special = {"eos_token": "<|endoftext|>"}
    tok = as_transformers_tokenizer(train_char(["abc"], vocab_size=50, special_tokens=special), special)
    with pytest.raises(UsageError, match="fim_prefix"):
        FimFamily().make_collator(tok, FimFamily().default_options())


def test_fim_prompt_layout():
    assert fim_prompt("a", "b", document_start="<e>") == f"<e>{FIM_PREFIX}a{FIM_SUFFIX}b{FIM_MIDDLE}"


@pytest.fixture
def registered(monkeypatch):
    """The plugin registered by hand, as if installed (an installed copy is kept out of the way)."""
    import lmctl_fim.plugin as plugin

    from lmctl.plugins.registry import register_plugin, reset_registry

    monkeypatch.setenv("LMCTL_LOAD_PLUGINS", "")  # installed plugins: none
    reset_registry()
    register_plugin(plugin, "fim")
    yield plugin
    reset_registry()


def test_family_registered_and_checked(registered):
    from lmctl.plugins.check import check_plugins
    from lmctl.plugins.registry import get_family

    assert isinstance(get_family("fim"), FimFamily)
    assert get_family("fill-in-the-middle") is get_family("fim")
    result = check_plugins(["fim"])  # tiny model: build, collate, loss, backward, save, resolve, reload
    assert result.ok, result.problems


def test_saved_model_resolves_to_fim_and_infill_runs(registered, fim_tokenizer, tmp_path):
    import torch
    import typer
    from typer.testing import CliRunner

    from lmctl.cli.app import add_plugin_commands
    from lmctl.plugins.registry import family_for_config, get_family

    family = get_family("fim")
    torch.manual_seed(0)
    model = family.build_from_scratch(
        "gpt2", tokenizer=fim_tokenizer, block_size=64, overrides={"n_layer": 1, "n_head": 2, "n_embd": 32}
    )
    family.save(model, fim_tokenizer, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["lmctl_family"] == "fim"
    assert family_for_config(config) is family

    app = typer.Typer()

    @app.callback()
    def root() -> None:  # a group, as lmctl's root app is
        pass

    add_plugin_commands(app)
    args = ["infill", "--model", str(tmp_path), "--prefix", "def add(a, b):\n", "--suffix", "\n", "--greedy", "--max-new-tokens", "5"]
    first = CliRunner().invoke(app, args)
    second = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert first.output == second.output  # greedy: deterministic


def test_entry_point_when_installed():
    eps = [ep for ep in entry_points(group="lmctl") if ep.name == "fim"]
    if not eps:
        pytest.skip("lmctl-fim is not installed (pip install -e .)")
    assert eps[0].value == "lmctl_fim.plugin"
