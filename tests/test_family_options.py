"""Per-family options through the real CLI: ``--family-option KEY=VALUE`` for built-in and plugin
families, the old shorthand flags as aliases, one-line refusals, run.json and resume."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import corpus_text

FIM_SRC = Path(__file__).resolve().parent.parent / "plugins" / "lmctl-fim" / "src"


def cli(*args: str):
    from lmctl.cli.app import app
    from lmctl.plugins.commands import add_plugin_commands

    add_plugin_commands(app)
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def corpus_path(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(corpus_text(20_000), encoding="utf-8")
    return path


@pytest.fixture
def fim_registered(monkeypatch):
    """The example plugin lmctl-fim, registered from its source tree as an installed plugin would be."""
    from lmctl.plugins.registry import register_plugin, reset_registry

    monkeypatch.syspath_prepend(str(FIM_SRC))
    reset_registry()
    from lmctl_fim import plugin

    register_plugin(plugin, "lmctl-fim")
    yield
    reset_registry()
    for name in [m for m in sys.modules if m.startswith("lmctl_fim")]:
        del sys.modules[name]


def tiny_train(corpus: Path, out: Path, *extra: str):
    return cli(
        "train", "--model", "gpt2", "--from-scratch", "--preset", "tiny", "--train", str(corpus),
        "--tokenizer", "bytelevel-bpe", "--vocab-size", "300", "--block-size", "32", "--batch-size", "4",
        "--max-steps", "3", "--eval-every", "0", "--precision", "fp32", "--out", str(out), "--quiet", *extra,
    )  # fmt: skip


def run_record(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


def test_plugin_family_option_trains_with_its_value_and_is_part_of_resume(fim_registered, corpus_path, tmp_path):
    out = tmp_path / "fim"
    result = tiny_train(corpus_path, out, "--family", "fim", "--family-option", "fim_rate=0.3", "--save-every", "2")
    assert result.exit_code == 0, result.output
    record = run_record(out)
    assert record["resolved"]["family_options"] == {"label_smoothing": 0.0, "fim_rate": 0.3}
    assert record["config"]["family_options"] == {"fim_rate": "0.3"}

    changed = tiny_train(corpus_path, out, "--family", "fim", "--family-option", "fim_rate=0.5", "--resume", "auto")
    assert changed.exit_code == 2
    assert "the run config changed (family_options" in changed.stderr and "'fim_rate': 0.3" in changed.stderr

    # The rate reaches the collator: rate 0 and rate 1 train on different text, the same rate twice on the same.
    losses = {}
    for name, rate in (("a", "0.0"), ("b", "1.0"), ("c", "1.0")):
        run = tiny_train(corpus_path, tmp_path / name, "--family", "fim", "--family-option", f"fim_rate={rate}")
        assert run.exit_code == 0, run.output
        losses[name] = run_record(tmp_path / name)["result"]["final_train_loss"]
    assert losses["b"] == losses["c"] and losses["a"] != losses["b"]


def test_unknown_family_option_is_one_line_listing_the_options(corpus_path, tmp_path):
    result = tiny_train(corpus_path, tmp_path / "out", "--family-option", "nope=1")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: the 'causal' family has no option 'nope' (its options: label_smoothing)"
    assert not (tmp_path / "out" / "run.json").exists()


def test_plugin_option_is_refused_for_a_family_without_it(fim_registered, corpus_path, tmp_path):
    result = tiny_train(corpus_path, tmp_path / "out", "--family-option", "fim_rate=0.3")
    assert result.exit_code == 2 and "the 'causal' family has no option 'fim_rate'" in result.stderr


def test_shorthand_flag_for_another_family_is_refused(corpus_path, tmp_path):
    """--generator-config is ELECTRA's: a causal run refuses it instead of ignoring it."""
    result = tiny_train(corpus_path, tmp_path / "out", "--generator-config", "num_hidden_layers=1")
    assert result.exit_code == 2
    assert "the 'causal' family has no option 'generator_config'" in result.stderr


def test_bad_option_value_names_the_type(corpus_path, tmp_path):
    result = tiny_train(corpus_path, tmp_path / "out", "--family-option", "label_smoothing=lots")
    assert result.exit_code == 2 and "expects float for 'label_smoothing'" in result.stderr


def masked_train(corpus: Path, out: Path, *extra: str):
    return cli(
        "train", "--model", "bert", "--from-scratch", "--preset", "tiny", "--train", str(corpus),
        "--tokenizer", "wordpiece", "--vocab-size", "300", "--block-size", "32", "--batch-size", "4",
        "--max-steps", "3", "--eval-every", "0", "--precision", "fp32", "--out", str(out), "--quiet", *extra,
    )  # fmt: skip


def test_family_option_equals_the_shorthand_flag(corpus_path, tmp_path):
    a = masked_train(corpus_path, tmp_path / "a", "--family-option", "mlm_probability=0.3")
    b = masked_train(corpus_path, tmp_path / "b", "--mlm-probability", "0.3")
    c = masked_train(corpus_path, tmp_path / "c")
    assert a.exit_code == b.exit_code == c.exit_code == 0, a.output + b.output + c.output
    loss = {name: run_record(tmp_path / name)["result"]["final_train_loss"] for name in "abc"}
    assert loss["a"] == loss["b"] and loss["a"] != loss["c"]
    assert run_record(tmp_path / "a")["resolved"]["family_options"]["mlm_probability"] == 0.3
    both = masked_train(corpus_path, tmp_path / "d", "--mlm-probability", "0.2", "--family-option", "mlm_probability=0.3")
    assert both.exit_code == 2 and "disagree" in both.stderr


def test_family_options_table_in_a_config_file(corpus_path, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('model = "bert"\nfrom_scratch = true\n[family_options]\nmlm_probability = 0.3\n')
    a = masked_train(corpus_path, tmp_path / "a", "--family-option", "mlm_probability=0.3")
    b = cli(
        "train", "--config", str(config), "--preset", "tiny", "--train", str(corpus_path), "--tokenizer", "wordpiece",
        "--vocab-size", "300", "--block-size", "32", "--batch-size", "4", "--max-steps", "3", "--eval-every", "0",
        "--precision", "fp32", "--out", str(tmp_path / "b"), "--quiet",
    )  # fmt: skip
    assert a.exit_code == b.exit_code == 0, b.output
    assert run_record(tmp_path / "a")["result"]["final_train_loss"] == run_record(tmp_path / "b")["result"]["final_train_loss"]


def test_evaluation_option_of_one_family(corpus_path, tmp_path):
    """--family-option pseudo_perplexity=true is --pseudo-perplexity; a causal model refuses it."""
    assert masked_train(corpus_path, tmp_path / "m").exit_code == 0
    data = tmp_path / "held.txt"
    data.write_text(corpus_text(3000)[-1500:], encoding="utf-8")
    common = ("eval", "--model", str(tmp_path / "m"), "--data", str(data), "--json", "--max-batches", "2")
    option = cli(*common, "--family-option", "pseudo_perplexity=true")
    flag = cli(*common, "--pseudo-perplexity")
    plain = cli(*common)
    assert option.exit_code == flag.exit_code == plain.exit_code == 0, option.output
    a, b, c = (json.loads(r.stdout.strip().splitlines()[-1]) for r in (option, flag, plain))
    assert a["loss"] == b["loss"] and a["tokens"] == b["tokens"] and a["loss"] != c["loss"]
    assert a["settings"]["family_options"]["pseudo_perplexity"] is True

    assert tiny_train(corpus_path, tmp_path / "c").exit_code == 0
    refused = cli("eval", "--model", str(tmp_path / "c"), "--data", str(data), "--family-option", "pseudo_perplexity=true")
    assert refused.exit_code == 2
    assert "the 'causal' family has no option 'pseudo_perplexity' (its options: label_smoothing)" in refused.stderr


def test_plugins_list_shows_family_options(fim_registered):
    result = cli("plugins", "list", "--json")
    assert result.exit_code == 0, result.output
    listing = {entry["name"]: entry for entry in json.loads(result.stdout)}
    fim = listing["lmctl-fim"]["family_options"]["fim"]
    assert {o["name"]: o["default"] for o in fim} == {"label_smoothing": 0.0, "fim_rate": 0.5}
    masked = {o["name"]: o for o in listing["lmctl.families.masked"]["family_options"]["masked"]}
    assert masked["pseudo_perplexity"]["evaluation"] is True and masked["mlm_probability"]["default"] == 0.15
    table = cli("plugins", "list")
    assert "fim_rate=0.5" in table.stdout and "mlm_probability=0.15" in table.stdout
