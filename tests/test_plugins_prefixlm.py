"""The test plugin tests/plugins_fixtures/lmctl-prefixlm, written from docs/plugins.md alone,
registered in-process (``register_plugin``) and used through the real CLI: a family with its own
option and its own ``generate``, a reader claiming an extension that is taken, a callback the user
chooses.  tests/test_plugins_venv.py installs it into a fresh environment (marker ``slow``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import REPO, corpus_text

PLUGIN_SRC = REPO / "tests" / "plugins_fixtures" / "lmctl-prefixlm" / "src"


@pytest.fixture
def prefixlm(monkeypatch):
    """The plugin registered in-process, as its own tests would do; removed afterwards."""
    from lmctl.plugins.registry import get_registry, register_plugin, reset_registry

    monkeypatch.syspath_prepend(str(PLUGIN_SRC))
    monkeypatch.delenv("LMCTL_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("LMCTL_QUIET_PLUGIN_WARNINGS", raising=False)
    reset_registry()
    import lmctl_prefixlm

    register_plugin(lmctl_prefixlm, "prefixlm")
    yield get_registry()
    reset_registry()
    for name in [m for m in sys.modules if m.startswith("lmctl_prefixlm")]:
        del sys.modules[name]


def invoke(*args: str):
    from lmctl.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_registered_names_options_extensions_and_callbacks(prefixlm):
    info = prefixlm.plugins["prefixlm"]
    assert info.families == ["prefixlm"] and info.data_readers == ["notes"] and info.callbacks == ["prefixlm-log"]
    assert info.reader_extensions == {"notes": [".md"]}
    # The reader claims .md, which the built-in text reader has: one line naming both plugins.
    assert prefixlm.problems_by_plugin["prefixlm"] == [
        "plugin 'prefixlm' registers data reader 'notes' for .md files, which data reader 'text' of plugin "
        "'lmctl.data.readers' already reads; .md files stay with 'text' (use `--format .md=notes` to read them with 'notes')"
    ]
    listing = invoke("plugins", "list", "--json")
    assert listing.exit_code == 0, listing.output
    row = next(r for r in json.loads(listing.stdout[listing.stdout.index("[") :]) if r["name"] == "prefixlm")
    assert row["reader_extensions"] == {"notes": [".md"]} and row["callbacks"] == ["prefixlm-log"]
    assert [o["name"] for o in row["family_options"]["prefixlm"]] == ["label_smoothing", "prefix_fraction"]
    check = invoke("plugins", "check", "prefixlm")
    assert check.exit_code == 1
    assert "data reader 'notes' for .md files, which data reader 'text' of plugin 'lmctl.data.readers'" in check.output


def test_settings_the_family_does_not_read_are_refused(prefixlm, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(corpus_text(4_000), encoding="utf-8")
    base = ["train", "--model", "gpt2", "--from-scratch", "--preset", "tiny", "--train", corpus, "--out", tmp_path / "r",
            "--max-steps", "1", "--quiet"]  # fmt: skip
    electra_only = invoke(*base, "--family", "prefixlm", "--generator-config", "num_hidden_layers=1")
    assert electra_only.exit_code == 2
    assert "the 'prefixlm' family has no option 'generator_config' (its options: label_smoothing, prefix_fraction)" in electra_only.output
    causal = invoke(*base, "--family", "causal", "--generator-config", "num_hidden_layers=1")
    assert causal.exit_code == 2 and "the 'causal' family has no option 'generator_config'" in causal.output
    bad_value = invoke(*base, "--family", "prefixlm", "--family-option", "prefix_fraction=1.5")
    assert bad_value.exit_code == 2 and "prefix_fraction must be in [0, 1), got 1.5" in bad_value.output
    assert not (tmp_path / "r").exists()


def test_mixed_formats_in_one_prepare(prefixlm, tmp_path):
    notes = tmp_path / "notes.md"
    notes.write_text("# Title\n\nfirst paragraph of notes\n\n## Section\nsecond paragraph\n", encoding="utf-8")
    plain = tmp_path / "plain.txt"
    plain.write_text("a plain paragraph\n\nanother one\n", encoding="utf-8")
    records = tmp_path / "more.jsonl"
    records.write_text(json.dumps({"text": "a record"}) + "\n", encoding="utf-8")
    args = ["prepare", "--train", notes, "--train", plain, "--train", records, "--tokenizer", "char", "--block-size", "8", "--json"]

    default = invoke(*args, "--out", tmp_path / "default")
    assert default.exit_code == 0, default.output
    manifest = json.loads((tmp_path / "default" / "manifest.json").read_text())
    assert [f["format"] for f in manifest["inputs"]["train"]] == ["text", "text", "jsonl"]
    assert manifest["splits"]["train"]["documents"] == 6  # 3 paragraphs of notes.md, headings included
    mixed = invoke(*args, "--format", ".md=notes", "--out", tmp_path / "mixed")
    assert mixed.exit_code == 0, mixed.output
    manifest = json.loads((tmp_path / "mixed" / "manifest.json").read_text())
    by_name = {Path(f["path"]).name: f["format"] for f in manifest["inputs"]["train"]}
    assert by_name == {"notes.md": "notes", "plain.txt": "text", "more.jsonl": "jsonl"}
    # The headings are gone: 2 note paragraphs + 2 text paragraphs + 1 record.
    assert manifest["splits"]["train"]["documents"] == 5
    # One reader for every input that no mapping covers, plus mappings.
    everything = invoke("prepare", "--train", notes, "--train", plain, "--format", "notes", "--format", ".txt=text",
                        "--tokenizer", "char", "--block-size", "8", "--out", tmp_path / "all")  # fmt: skip
    assert everything.exit_code == 0, everything.output
    unknown = invoke(*args, "--format", ".md=nope", "--out", tmp_path / "x")
    assert unknown.exit_code == 2 and "unknown --format 'nope'; installed data readers:" in unknown.output
    clash = invoke(*args, "--format", "text", "--format", "notes", "--out", tmp_path / "y")
    assert clash.exit_code == 2 and "--format .EXT=notes" in clash.output


def test_train_eval_generate_with_the_plugin_family(prefixlm, tmp_path):
    import torch
    from lmctl_prefixlm.family import prefix_mask

    from lmctl.core.hub import load_tokenizer
    from lmctl.plugins.registry import get_family

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(corpus_text(20_000), encoding="utf-8")
    run = tmp_path / "run"
    trained = invoke("train", "--model", "gpt2", "--from-scratch", "--preset", "tiny", "--family", "prefixlm",
                     "--family-option", "prefix_fraction=0.5", "--train", corpus, "--validation-split", "0.1",
                     "--tokenizer", "char", "--block-size", "32", "--max-steps", "6", "--batch-size", "8", "--lr", "3e-3",
                     "--eval-every", "0", "--callback", "prefixlm-log", "--out", run, "--quiet")  # fmt: skip
    assert trained.exit_code == 0, trained.output
    record = json.loads((run / "run.json").read_text())
    assert record["callbacks"] == ["prefixlm-log"]
    assert record["resolved"]["family_options"] == {"label_smoothing": 0.0, "prefix_fraction": 0.5}
    log = [json.loads(line) for line in (run / "prefixlm-log.jsonl").read_text().splitlines()]
    assert log[0]["event"] == "begin" and log[0]["family"] == "prefixlm" and log[0]["block_size"] == 32
    assert log[0]["family_options"]["prefix_fraction"] == 0.5 and log[0]["trainable_parameters"] > 0
    assert log[-1] == {"event": "end", "steps": 6, "out": str(run)}
    assert json.loads((run / "config.json").read_text())["lmctl_family"] == "prefixlm"

    evaluated = invoke("eval", "--model", run, "--data", corpus, "--json", "--family-option", "prefix_fraction=0.5")
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout.splitlines()[-1])["tokens"] > 0

    # generate goes through the family: greedy decoding with the prompt as a bidirectional prefix,
    # checked against the same decoding done here by hand.
    out = invoke("generate", "--model", run, "--greedy", "--max-new-tokens", "6", "--json", "The time")
    assert out.exit_code == 0, out.output
    text = json.loads(out.stdout.splitlines()[-1])["text"]
    family = get_family("prefixlm")
    model = family.load_for_inference(str(run)).eval()
    tokenizer = load_tokenizer(str(run))
    ids = tokenizer("The time")["input_ids"]
    prompt_len = len(ids)
    for _ in range(6):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids]), attention_mask=prefix_mask(len(ids), [prompt_len]), use_cache=False).logits
        token = int(logits[0, -1].argmax())
        if token == tokenizer.eos_token_id:
            break
        ids.append(token)
    assert text == tokenizer.decode(ids[prompt_len:])


def test_default_evaluate_collates_whole_batches_with_the_same_results(prefixlm, tiny_model_dir, tmp_path, monkeypatch):
    """The loss-based default evaluation (Family.evaluate) calls a row_seeded collator once per
    batch instead of once per block, and the numbers do not change (checked through `lmctl eval`
    against the block-by-block path, which an unmarked collator still takes)."""
    from lmctl.families.base import row_seeded

    family = prefixlm.families["prefixlm"]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(corpus_text(6_000), encoding="utf-8")
    make_collator = type(family).make_collator
    calls = []

    def counting(marked: bool):
        def make(self, tokenizer, options):
            inner = make_collator(self, tokenizer, options)

            def collate(input_ids, attention_mask, generator):
                calls.append(len(input_ids))
                return inner(input_ids, attention_mask, generator)

            return row_seeded(collate) if marked else collate

        return make

    def evaluate(marked: bool) -> tuple[dict, list[int]]:
        calls.clear()
        monkeypatch.setattr(type(family), "make_collator", counting(marked))
        out = invoke("eval", "--model", tiny_model_dir("causal"), "--family", "prefixlm", "--data", corpus,
                     "--block-size", "32", "--batch-size", "8", "--json")  # fmt: skip
        assert out.exit_code == 0, out.output
        return json.loads(out.stdout.splitlines()[-1]), list(calls)

    batched, batched_calls = evaluate(marked=True)
    per_block, block_calls = evaluate(marked=False)
    blocks = sum(block_calls)
    assert blocks > 8 and block_calls == [1] * blocks  # before: one call per block
    assert len(batched_calls) == -(-blocks // 8) and sum(batched_calls) == blocks  # now: one per batch of 8
    assert batched["loss"] == per_block["loss"] and batched["tokens"] == per_block["tokens"]


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_row_seeded_random_collator_matches_block_by_block(batch_size):
    """A collator that draws randomly per row from its own generator gives the same batch whether
    evaluation collates block by block or a whole batch per call, at every batch size."""
    import numpy as np
    import torch

    from lmctl.families.base import row_generators, row_seeded
    from lmctl.kit.scoring import collate_blocks

    def noisy(input_ids, attention_mask, generator):
        draws = torch.stack([torch.rand(input_ids.shape[1], generator=g) for g in row_generators(generator, len(input_ids))])
        keep = (draws > 0.3).long()
        return {"input_ids": input_ids * keep, "labels": input_ids, "attention_mask": attention_mask * keep}

    rows = [np.arange(1, 17, dtype=np.int64) + i for i in range(7)] + [np.arange(1, 9, dtype=np.int64)]
    batched = [collate_blocks(row_seeded(noisy), rows[i : i + batch_size], 16, 0, seed=5, first_index=i, always_mask=True)[0]
               for i in range(0, len(rows), batch_size)]  # fmt: skip
    reference = collate_blocks(noisy, rows, 16, 0, seed=5, first_index=0, always_mask=True)[0]
    for key in reference:
        assert torch.equal(torch.cat([b[key] for b in batched]), reference[key])
