"""Every config in examples/ runs end to end, at tiny scale, through the real command line.

Each test reads the commands in its example's header comment (the lines ``#   lmctl ...`` and
``#   accelerate launch ...``), runs them in a temporary directory that holds tiny data at the
paths the example names, and appends only what makes them small: a tiny model in place of a Hub
id, a few steps, short blocks.  So a header command that stops working, or a config setting that
lmctl no longer accepts, fails here.  ``test_every_example_is_run`` makes sure no example is left out.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import REPO, SHARED_DATA, corpus_text, shared_data

EXAMPLES = REPO / "examples"
COVERED: set[str] = set()

# What every training command gets appended: a few steps on short blocks, and quiet.
TINY = ["--max-steps", "4", "--batch-size", "4", "--block-size", "32", "--eval-batches", "2", "--log-every", "1", "--quiet"]
# Tiny sizes for the from-scratch architectures (a config's model_config list is replaced).
TINY_CONFIG = {
    "gpt2": ["n_layer=2", "n_head=2", "n_embd=32"],
    "roberta": ["num_hidden_layers=2", "num_attention_heads=2", "hidden_size=32", "intermediate_size=64"],
    "xlnet": ["n_layer=2", "n_head=2", "d_model=32", "d_inner=64"],
    "electra": ["num_hidden_layers=2", "num_attention_heads=2", "hidden_size=32", "intermediate_size=64", "embedding_size=16"],
}


def covers(*names: str) -> Callable:
    """Mark a test as the one that runs these example files."""
    COVERED.update(names)
    return lambda fn: fn


def model_config_args(arch: str) -> list[str]:
    return [arg for item in TINY_CONFIG[arch] for arg in ("--model-config", item)]


def header_commands(name: str) -> list[list[str]]:
    """The commands in the example's header comment, split as a shell would."""
    commands = []
    for line in (EXAMPLES / name).read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        match = re.match(r"#   ((?:lmctl|accelerate launch) .*)$", line)
        if match:
            commands.append(shlex.split(match.group(1)))
    assert commands, f"{name} shows no lmctl command in its header"
    return commands


def substitute(argv: list[str], replace: dict[str, str]) -> list[str]:
    """Swap Hub ids for tiny local models, and point examples/ at the repository's copy."""
    out = []
    for arg in argv:
        arg = replace.get(arg, arg)
        if arg.startswith("examples/"):
            arg = str(REPO / arg)
        out.append(arg)
    return out


def lmctl(argv: list[str]) -> object:
    """Run ``lmctl ARGS`` in-process through the real CLI; fail with its output if it fails."""
    from typer.testing import CliRunner

    from lmctl.cli.app import app

    assert argv[0] == "lmctl", argv
    result = CliRunner().invoke(app, argv[1:])
    assert result.exit_code == 0, f"{shlex.join(argv)}\n{result.output[-3000:]}\n{result.exception!r}"
    return result


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def run_record(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


def checkpoint_steps(out: Path) -> list[int]:
    root = out / "checkpoints"
    return sorted(int(p.name.split("-")[1]) for p in root.iterdir() if re.fullmatch(r"step-\d+", p.name)) if root.is_dir() else []


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from several threads, and on a busy machine the idle threads'
    spin-waiting makes each step many times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh directory to run the examples from, with data/train.txt and data/valid.txt, and
    lmctl's cache of prepared data inside it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LMCTL_CACHE", str(tmp_path / "cache"))
    text = corpus_text(20_000)
    write(tmp_path / "data" / "train.txt", text[:16_000])
    write(tmp_path / "data" / "valid.txt", text[16_000:17_500])
    return tmp_path


@pytest.fixture(scope="module")
def tiny_roberta(tmp_path_factory, tokenizer_for) -> Path:
    """A tiny RobertaForMaskedLM saved with a WordPiece tokenizer: stands in for distilroberta-base."""
    import torch

    from lmctl.core.presets import preset_overrides
    from lmctl.plugins.registry import get_family

    torch.manual_seed(0)
    family = get_family("masked")
    tokenizer = tokenizer_for("masked")
    model = family.build_from_scratch("roberta", tokenizer=tokenizer, block_size=64, overrides=preset_overrides("roberta", "tiny"))
    out = tmp_path_factory.mktemp("tiny-roberta")
    family.save(model, tokenizer, out)
    return out


def test_every_example_is_run():
    examples = {p.name for p in EXAMPLES.glob("*.toml")}
    assert examples, "examples/ is empty"
    assert examples - COVERED == set(), "examples no test runs"
    assert COVERED - examples == set(), "tests name examples that do not exist"


def test_every_example_is_a_valid_train_config(tokenizer_for):
    """Each file parses, names only known settings and validates; a from-scratch example's model
    config (at its real size, before any test shrinks it) is one its architecture accepts."""
    from lmctl.core.presets import preset_overrides
    from lmctl.families.base import parse_override
    from lmctl.families.electra import generator_config
    from lmctl.plugins.registry import resolve_family
    from lmctl.workflows.train.config import load_config_file, merge

    for path in sorted(EXAMPLES.glob("*.toml")):
        config = merge(load_config_file(path), {})
        config.validate()
        commands = header_commands(path.name)
        assert any(cmd[:2] == ["lmctl", "train"] and f"examples/{path.name}" in cmd for cmd in commands), path.name
        if not config.from_scratch:
            continue
        family = resolve_family(config.model, family=config.family, from_scratch=True)
        overrides = preset_overrides(config.model, config.preset)
        overrides.update(dict(parse_override(item) for item in config.model_config))
        built = family.build_config(
            config.model, tokenizer=tokenizer_for(family.name), block_size=config.block_size, overrides=overrides, dropout=config.dropout
        )
        for key, value in overrides.items():
            assert getattr(built, key) == value, (path.name, key)
        if family.name == "electra":
            generator = generator_config(built, config.generator_size, dict(parse_override(i) for i in config.generator_config))
            assert generator.hidden_size == built.hidden_size * config.generator_size
            assert generator.embedding_size == built.embedding_size


# --- 1. fine-tune a pretrained causal LM, evaluate, compare generations ---------------------------


@covers("finetune_causal.toml")
def test_finetune_causal(workdir, tiny_model_dir):
    base = str(tiny_model_dir("causal"))
    train, evaluate, generate = header_commands("finetune_causal.toml")
    assert [train[:2], evaluate[:2], generate[:2]] == [["lmctl", "train"], ["lmctl", "eval"], ["lmctl", "generate"]]
    swap = {"distilgpt2": base}

    lmctl(substitute(train, swap) + ["--model", base, *TINY])
    out = workdir / "runs" / "distilgpt2-finetuned"
    record = run_record(out)
    assert record["status"] == "finished" and not record["config"]["from_scratch"]
    assert record["config"]["validation"][0].endswith("data/valid.txt")
    assert record["result"]["final_eval"]["perplexity"] == pytest.approx(math.exp(record["result"]["final_eval"]["loss"]))

    results = json_lines(lmctl(substitute(evaluate, swap) + ["--json"]).stdout)
    assert [r["model"] for r in results] == ["runs/distilgpt2-finetuned", base]
    tuned, original = results
    assert tuned["data_hash"] == original["data_hash"] and tuned["tokens"] == original["tokens"] > 0
    for r in results:
        assert r["perplexity"] == pytest.approx(math.exp(r["loss"]))
    # The fine-tuned weights differ from the original: so do their scores.
    assert tuned["loss"] != original["loss"]

    samples = json_lines(lmctl(substitute(generate, swap) + ["--json"]).stdout)
    assert [s["model"] for s in samples] == ["runs/distilgpt2-finetuned", base]
    for sample in samples:
        assert sample["prompt"] == "The history of the city"
        assert 0 < sample["tokens"] <= 50
        assert sample["tokens"] == 50 or sample["finish_reason"] != "length"


# --- 2. fine-tune a masked LM, perplexity, fill-mask ----------------------------------------------


@covers("finetune_masked.toml")
def test_finetune_masked(workdir, tiny_roberta):
    base = str(tiny_roberta)
    train, evaluate, fill = header_commands("finetune_masked.toml")
    swap = {"distilroberta-base": base}

    lmctl(substitute(train, swap) + ["--model", base, *TINY])
    out = workdir / "runs" / "distilroberta-finetuned"
    record = run_record(out)
    assert record["resolved"]["family"] == "masked" and record["config"]["mlm_probability"] == 0.15
    from transformers import AutoModelForMaskedLM

    assert type(AutoModelForMaskedLM.from_pretrained(out)).__name__ == "RobertaForMaskedLM"

    results = json_lines(lmctl(substitute(evaluate, swap) + ["--json"]).stdout)
    assert [r["model"] for r in results] == ["runs/distilroberta-finetuned", base]
    assert results[0]["tokens"] == results[1]["tokens"] > 0  # the same seeded masks for both
    for r in results:
        assert math.isfinite(r["loss"]) and r["perplexity"] == pytest.approx(math.exp(r["loss"]))

    (answer,) = json_lines(lmctl(substitute(fill, swap) + ["--json"]).stdout)
    (candidates,) = answer["masks"]  # one <mask> in the prompt
    assert len(candidates) == 5
    scores = [c["score"] for c in candidates]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6


@pytest.mark.parametrize("arch", ["bert", "distilbert", "albert", "camembert"])
def test_finetune_masked_other_architectures(workdir, tokenizer_for, arch):
    """The example's other --model choices (bert-base-uncased, distilbert-base-uncased,
    albert-base-v2, camembert-base), as tiny models of the same architectures."""
    import torch

    from lmctl.core.presets import preset_overrides
    from lmctl.plugins.registry import get_family

    torch.manual_seed(0)
    family = get_family("masked")
    tokenizer = tokenizer_for("masked")
    base = workdir / f"tiny-{arch}"
    family.save(family.build_from_scratch(arch, tokenizer=tokenizer, block_size=64, overrides=preset_overrides(arch, "tiny")), tokenizer, base)
    train, _, fill = header_commands("finetune_masked.toml")
    lmctl(substitute(train, {}) + ["--model", str(base), *TINY])
    out = workdir / "runs" / "distilroberta-finetuned"
    assert json.loads((out / "config.json").read_text())["model_type"] == arch
    losses = [e["train/loss"] for e in metrics(out) if "train/loss" in e]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    (answer,) = json_lines(lmctl(substitute(fill, {"distilroberta-base": str(base)}) + ["--json"]).stdout)
    assert len(answer["masks"][0]) == 5


# --- 3. run_clm / run_mlm / run_plm options ----------------------------------------------------------


@covers("run_clm.toml")
def test_run_clm_keeps_only_the_last_checkpoints(workdir, tiny_model_dir):
    base = str(tiny_model_dir("causal"))
    train, evaluate = header_commands("run_clm.toml")
    # A checkpoint at every step; with no evaluation there is no "best" to keep besides the last 3.
    lmctl(substitute(train, {}) + ["--model", base, *TINY, "--max-steps", "7", "--save-every", "1", "--eval-every", "0"])
    out = workdir / "runs" / "run-clm"
    assert checkpoint_steps(out) == [5, 6, 7]  # keep_last = 3 (save_total_limit); the last step is checkpointed too
    record = run_record(out)
    assert record["config"]["keep_last"] == 3 and record["config"]["schedule"] == "linear"
    assert record["resolved"]["block_size"] == 32
    # The learning rates are the Trainer's own linear schedule (no warm-up, decay to 0).
    import torch
    from transformers import get_linear_schedule_with_warmup

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=5e-5)
    schedule = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=0, num_training_steps=7)
    expected = []
    for _ in range(7):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert [m["lr"] for m in metrics(out) if "lr" in m] == pytest.approx(expected)
    (result,) = json_lines(lmctl(substitute(evaluate, {}) + ["--json"]).stdout)
    assert math.isfinite(result["loss"])


@covers("run_mlm_line_by_line.toml")
def test_run_mlm_line_by_line(workdir, tiny_model_dir):
    base = str(tiny_model_dir("masked"))
    train, evaluate, fill = header_commands("run_mlm_line_by_line.toml")
    swap = {"bert-base-uncased": base}
    lmctl(substitute(train, swap) + ["--model", base, *TINY, "--block-size", "16"])
    out = workdir / "runs" / "run-mlm"
    record = run_record(out)
    manifest = json.loads((Path(record["resolved"]["data"]) / "manifest.json").read_text())
    assert manifest["line_by_line"] is True and record["resolved"]["block_size"] == 16
    # One example per non-blank line; lines longer than --max-seq-length were truncated to it.
    lines = [line for line in (workdir / "data" / "train.txt").read_text().splitlines() if line.strip()]
    assert manifest["splits"]["train"]["blocks"] == len(lines)
    assert manifest["splits"]["train"]["dropped_tokens"] > 0
    (result,) = json_lines(lmctl(substitute(evaluate, swap) + ["--json"]).stdout)
    assert math.isfinite(result["loss"]) and result["tokens"] > 0
    (answer,) = json_lines(lmctl(substitute(fill, swap) + ["--json"]).stdout)
    assert len(answer["masks"]) == 1 and answer["masks"][0]


@covers("run_plm_xlnet.toml")
def test_run_plm_xlnet(workdir, tiny_model_dir):
    base = str(tiny_model_dir("permuted"))
    train, evaluate, generate = header_commands("run_plm_xlnet.toml")
    swap = {"xlnet-base-cased": base}
    lmctl(substitute(train, swap) + ["--model", base, *TINY])
    out = workdir / "runs" / "run-plm"
    record = run_record(out)
    assert record["resolved"]["family"] == "permuted"
    assert record["config"]["plm_probability"] == pytest.approx(1 / 6) and record["config"]["max_span_length"] == 5
    # XLNet has no position limit: raw text is scored in 512-token windows unless told otherwise.
    (result,) = json_lines(lmctl(substitute(evaluate, swap) + ["--json", "--block-size", "32"]).stdout)
    assert math.isfinite(result["loss"])
    (sample,) = json_lines(lmctl(substitute(generate, swap) + ["--json", "--max-new-tokens", "5"]).stdout)
    assert 0 < sample["tokens"] <= 5


def test_plm_refuses_an_odd_block_size(workdir, tiny_model_dir):
    base = str(tiny_model_dir("permuted"))
    from typer.testing import CliRunner

    from lmctl.cli.app import app

    result = CliRunner().invoke(
        app, ["train", "--config", str(EXAMPLES / "run_plm_xlnet.toml"), "--model", base, *TINY, "--block-size", "31"]
    )
    assert result.exit_code == 2 and "even --block-size" in result.output


# --- 4. from scratch, tokenizer included, each family ---------------------------------------------


@covers("scratch_causal.toml")
def test_scratch_causal_with_explicit_prepare(workdir):
    prepare, train, evaluate, generate = header_commands("scratch_causal.toml")
    assert prepare[:2] == ["lmctl", "prepare"]
    lmctl(prepare + ["--vocab-size", "400"])
    prepared = workdir / "data" / "prepared-gpt2"
    manifest = json.loads((prepared / "manifest.json").read_text())
    assert manifest["tokenizer"]["trained"] and set(manifest["splits"]) == {"train", "validation"}
    lmctl(substitute(train, {}) + [*TINY, *model_config_args("gpt2")])
    out = workdir / "runs" / "gpt2-scratch"
    record = run_record(out)
    assert record["config"]["from_scratch"] and (workdir / record["resolved"]["data"]).resolve() == prepared.resolve()
    # The model's tokenizer is the prepared one.
    assert json.loads((out / "tokenizer.json").read_text())["model"]["vocab"] == json.loads(
        (prepared / "tokenizer" / "tokenizer.json").read_text()
    )["model"]["vocab"]
    (result,) = json_lines(lmctl(substitute(evaluate, {}) + ["--json"]).stdout)
    assert result["split"] == "validation" and math.isfinite(result["loss"])
    (sample,) = json_lines(lmctl(substitute(generate, {}) + ["--json"]).stdout)
    assert sample["tokens"] > 0


@covers("scratch_masked.toml")
def test_scratch_masked(workdir):
    train, evaluate, fill = header_commands("scratch_masked.toml")
    lmctl(substitute(train, {}) + [*TINY, *model_config_args("roberta"), "--vocab-size", "400"])
    out = workdir / "runs" / "roberta-scratch"
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    model = AutoModelForMaskedLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.model_type == "roberta" and model.config.vocab_size >= len(tokenizer)
    tok = json.loads((out / "tokenizer.json").read_text())
    assert tok["model"]["type"] == "BPE" and tok["pre_tokenizer"]["type"] == "ByteLevel"
    (result,) = json_lines(lmctl(substitute(evaluate, {}) + ["--json"]).stdout)
    assert math.isfinite(result["loss"])
    (answer,) = json_lines(lmctl(substitute(fill, {}) + ["--json"]).stdout)
    assert len(answer["masks"]) == 1 and len(answer["masks"][0]) == 5


@covers("scratch_permuted.toml")
def test_scratch_permuted(workdir):
    train, evaluate, generate = header_commands("scratch_permuted.toml")
    lmctl(substitute(train, {}) + [*TINY, *model_config_args("xlnet"), "--vocab-size", "400"])
    out = workdir / "runs" / "xlnet-scratch"
    assert json.loads((out / "tokenizer.json").read_text())["model"]["type"] == "Unigram"
    (result,) = json_lines(lmctl(substitute(evaluate, {}) + ["--json", "--block-size", "32"]).stdout)
    assert math.isfinite(result["loss"])
    (sample,) = json_lines(lmctl(substitute(generate, {}) + ["--json", "--max-new-tokens", "5"]).stdout)
    assert 0 < sample["tokens"] <= 5


@covers("scratch_electra.toml")
def test_scratch_electra_generator_discriminator_and_export(workdir):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForMaskedLM, AutoModelForPreTraining

    train, evaluate, fill, export_disc, export_gen = header_commands("scratch_electra.toml")
    assert [export_disc[:2], export_gen[:2]] == [["lmctl", "export"], ["lmctl", "export"]]
    lmctl(
        substitute(train, {})
        + [*TINY, *model_config_args("electra"), "--vocab-size", "400", "--generator-size", "0.5", "--save-every", "1"]
    )
    out = workdir / "runs" / "electra-small"
    # Discriminator as the main model, generator beside it; both load with the Auto classes.
    disc = AutoModelForPreTraining.from_pretrained(out)
    gen = AutoModelForMaskedLM.from_pretrained(out / "generator")
    assert type(disc).__name__ == "ElectraForPreTraining" and type(gen).__name__ == "ElectraForMaskedLM"
    # --model-config sizes the discriminator; --generator-size scales the generator's width, heads
    # and feed-forward; --generator-config overrides it (num_hidden_layers=6 in the example).
    assert (disc.config.hidden_size, disc.config.num_attention_heads, disc.config.intermediate_size) == (32, 2, 64)
    assert (gen.config.hidden_size, gen.config.num_attention_heads, gen.config.intermediate_size) == (16, 1, 32)
    assert (disc.config.num_hidden_layers, gen.config.num_hidden_layers) == (2, 6)
    # Shared token embeddings, embedding_size wide (projected to each hidden size).
    assert disc.config.embedding_size == gen.config.embedding_size == 16
    assert torch.equal(disc.electra.embeddings.word_embeddings.weight, gen.electra.embeddings.word_embeddings.weight)

    (result,) = json_lines(lmctl(substitute(evaluate, {}) + ["--json"]).stdout)
    assert {"generator_loss", "discriminator_accuracy", "discriminator_f1", "discriminator_auc"} <= set(result)
    assert result["perplexity"] == pytest.approx(math.exp(result["generator_loss"]))
    (answer,) = json_lines(lmctl(substitute(fill, {}) + ["--json"]).stdout)
    assert len(answer["masks"][0]) == 5

    # Export either part from a checkpoint (the header names step-90000; here the newest is the last step, 4).
    steps = checkpoint_steps(out)
    assert steps and steps[-1] == 4
    newest = f"runs/electra-small/checkpoints/step-{steps[-1]}"
    swap = {"runs/electra-small/checkpoints/step-90000": newest}
    lmctl(substitute(export_disc, swap))
    lmctl(substitute(export_gen, swap))
    exported_disc = AutoModelForPreTraining.from_pretrained(workdir / "exported" / "electra-small-discriminator")
    exported_gen = AutoModelForMaskedLM.from_pretrained(workdir / "exported" / "electra-small-generator")
    assert type(exported_disc).__name__ == "ElectraForPreTraining" and type(exported_gen).__name__ == "ElectraForMaskedLM"
    for exported, source in ((exported_disc, workdir / newest), (exported_gen, workdir / newest / "generator")):
        saved = load_file(source / "model.safetensors")
        state = exported.state_dict()
        for key, value in saved.items():
            assert torch.equal(state[key], value), key
    for name in ("electra-small-discriminator", "electra-small-generator"):
        files = {p.name for p in (workdir / "exported" / name).iterdir()}
        assert "tokenizer.json" in files and not any("optimizer" in f or f.startswith("rng-") for f in files)
        assert "generator" not in files


# --- 5. NeMo-style word-level Transformer LM on WikiText-2 ----------------------------------------


def strided_nll(model, ids: list[int], block: int, stride: int) -> tuple[float, int]:
    """Total next-token NLL of ids[1:], written independently of lmctl.workflows.evaluate: the first window
    scores its ``block`` predictions; each later window holds the ``block`` tokens before its last
    target and scores only its last ``stride`` predictions (NeMo's predict_last_k)."""
    import torch
    import torch.nn.functional as F

    def nll(inputs: list[int], targets: list[int]) -> float:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([inputs])).logits[0, -len(targets) :].float()
        return float(F.cross_entropy(logits, torch.tensor(targets), reduction="sum"))

    n = len(ids)
    done = min(block, n - 1)  # targets ids[1..done] are scored
    total = nll(ids[:done], ids[1 : done + 1])
    while done < n - 1:
        new = min(stride, n - 1 - done)
        last = done + new
        total += nll(ids[last - block : last], ids[done + 1 : last + 1])
        done = last
    return total, n - 1


@covers("nemo_transformer_lm.toml")
def test_nemo_transformer_lm(workdir):
    valid = shared_data("wikitext-2/valid.txt").read_text(encoding="utf-8")
    # Whole lines of WikiText for train / valid / test.
    lines = valid.splitlines(keepends=True)
    write(workdir / "data" / "wikitext-2" / "train.txt", "".join(lines[:120]))
    write(workdir / "data" / "wikitext-2" / "valid.txt", "".join(lines[120:150]))
    write(workdir / "data" / "wikitext-2" / "test.txt", "".join(lines[150:170]))
    train, evaluate, generate = header_commands("nemo_transformer_lm.toml")
    lmctl(
        substitute(train, {})
        + [*TINY, "--max-steps", "6", *model_config_args("gpt2"), "--vocab-size", "1000",
           "--warmup-steps", "2", "--eval-every", "2", "--save-every", "2"]  # fmt: skip
    )
    out = workdir / "runs" / "nemo-transformer-lm"
    record = run_record(out)
    assert record["resolved"]["precision"] == "bf16" and record["config"]["label_smoothing"] == 0.1

    # Word-level tokenizer: whitespace-split words, <unk> for the rest, words joined by spaces.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    spec = json.loads((out / "tokenizer.json").read_text())
    assert spec["model"]["type"] == "WordLevel" and spec["pre_tokenizer"]["type"] == "WhitespaceSplit"
    assert spec["model"]["unk_token"] == "<unk>" and len(tokenizer) == 1000
    ids = tokenizer("the , of zzzunseenzzz .", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["the", ",", "of", "<unk>", "."]
    assert tokenizer.decode(ids) == "the , of <unk> ."

    # Tied input/output embeddings; the vocabulary padded to a multiple of 8 (lmctl pads to 64).
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert model.config.tie_word_embeddings is True
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    assert model.config.vocab_size % 8 == 0 and model.config.vocab_size % 64 == 0
    assert model.config.vocab_size >= len(tokenizer) > model.config.vocab_size - 64

    # Warm-up then cosine annealing to min_lr 0; evaluations and checkpoints every 2 steps.
    events = metrics(out)
    lrs = [e["lr"] for e in events if "lr" in e]
    peak, warmup, steps = 0.002, 2, 6
    expected = [peak * (s + 1) / (warmup + 1) for s in range(warmup)]
    expected += [0.5 * peak * (1 + math.cos(math.pi * (s - warmup) / (steps - warmup))) for s in range(warmup, steps)]
    assert lrs == pytest.approx(expected)
    assert [e["step"] for e in events if "eval/loss" in e and not e.get("final")] == [2, 4]
    assert [e["step"] for e in events if "eval/loss" in e and e.get("final")] == [6]
    assert checkpoint_steps(out) == [2, 4, 6]  # and the last step (a finished run can be continued)

    # Evaluation scoring only the last 16 tokens of each window of 32 (the header's 256 is too long
    # for this tiny model), cross-checked with the computation above.
    (result,) = json_lines(lmctl(substitute(evaluate, {}) + ["--block-size", "32", "--json", "--precision", "fp32"]).stdout)
    assert result["settings"]["stride"] == 16 and result["settings"]["block_size"] == 32
    stream: list[int] = []
    test_text = (workdir / "data" / "wikitext-2" / "test.txt").read_text()
    # Raw text is cut into documents as the model was trained: lines (the example's document_split).
    assert result["document_split"] == "lines (as trained)"
    for line in test_text.splitlines():
        if line.strip():
            stream += [tokenizer.eos_token_id] + tokenizer(line, add_special_tokens=False)["input_ids"]
    total, count = strided_nll(model, stream, 32, 16)
    assert result["tokens"] == count
    assert result["loss"] == pytest.approx(total / count, rel=1e-4)
    (plain,) = json_lines(lmctl(substitute(evaluate, {}) + ["--block-size", "32", "--stride", "32", "--json", "--precision", "fp32"]).stdout)
    assert plain["tokens"] == count and plain["loss"] != result["loss"]

    (sample,) = json_lines(lmctl(substitute(generate, {}) + ["--json"]).stdout)
    assert sample["tokens"] > 0
    assert all(word in tokenizer.get_vocab() for word in sample["text"].split())


# --- 6. several processes -------------------------------------------------------------------------


@covers("distributed_ddp.toml")
def test_distributed_example_in_one_process(workdir):
    """The default suite checks the config itself (one process); the test below launches two."""
    train, launch, evaluate = header_commands("distributed_ddp.toml")
    assert launch[:2] == ["accelerate", "launch"] and "--num_processes" in launch
    lmctl(substitute(train, {}) + [*TINY, *model_config_args("gpt2"), "--vocab-size", "400", "--num-processes", "1"])
    assert run_record(workdir / "runs" / "ddp")["resolved"]["world_size"] == 1
    (result,) = json_lines(lmctl(substitute(evaluate, {}) + ["--json"]).stdout)
    assert math.isfinite(result["loss"])


@pytest.mark.multiprocess
def test_distributed_example_on_two_processes(workdir):
    """Both header launch lines train on 2 CPU processes (gloo) and give the same loss curve."""
    train, launch, _ = header_commands("distributed_ddp.toml")
    # fp32 pinned: "auto" measures both precisions per run and could pick differently.
    tiny = [*TINY, *model_config_args("gpt2"), "--vocab-size", "400", "--eval-every", "0", "--precision", "fp32"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}

    def run(argv: list[str], out: str) -> list[float]:
        argv = substitute(argv, {}) + [*tiny, "--out", out]
        if argv[0] == "lmctl":
            command = [sys.executable, "-m", "lmctl", *argv[1:]]
        else:  # accelerate launch ...
            command = [sys.executable, "-m", "accelerate.commands.launch", *argv[2:]]
        done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        assert run_record(workdir / out)["resolved"]["world_size"] == 2
        return [e["train/loss"] for e in metrics(workdir / out) if "train/loss" in e]

    by_lmctl = run(train, "runs/ddp-lmctl")
    by_accelerate = run(launch, "runs/ddp-accelerate")
    assert len(by_lmctl) == 4
    assert by_lmctl == pytest.approx(by_accelerate, abs=1e-5)


# --- nanoGPT shakespeare_char -------------------------------------------------------------------------


@covers("nanogpt_shakespeare_char.toml")
def test_nanogpt_shakespeare_char(workdir):
    source = SHARED_DATA / "tinyshakespeare.txt"
    text = source.read_text(encoding="utf-8")[:30_000] if source.exists() else corpus_text(30_000)
    write(workdir / "data" / "shakespeare_char" / "input.txt", text)
    train, prepare, evaluate, generate = header_commands("nanogpt_shakespeare_char.toml")
    # The reference shape, shrunk: 1 layer, 32 wide; block 64 and batch 12 as in the example.
    small = ["--max-steps", "4", "--eval-batches", "2", "--log-every", "1", "--quiet",
             "--model-config", "n_layer=1", "--model-config", "n_head=2", "--model-config", "n_embd=32"]  # fmt: skip
    lmctl(substitute(train, {}) + small)
    out = workdir / "runs" / "shakespeare-char"
    record = run_record(out)
    config, resolved = record["config"], record["resolved"]
    assert (resolved["block_size"], config["batch_size"], config["dropout"]) == (64, 12, 0.0)
    assert (config["lr"], config["min_lr"], config["warmup_steps"], config["weight_decay"]) == (1e-3, 1e-4, 100, 0.1)
    assert (config["beta2"], config["grad_clip"], config["eval_batches"]) == (0.99, 1.0, 2)
    manifest = json.loads((Path(resolved["data"]) / "manifest.json").read_text())
    assert manifest["document_split"] == "file" and manifest["splits"]["train"]["documents"] == 1
    # The validation split is the last 10% of the text, contiguous, cut at a line start.
    val_bytes = manifest["splits"]["validation"]["bytes"]
    assert abs(val_bytes - 0.1 * len(text.encode())) < 200
    tok = json.loads((out / "tokenizer.json").read_text())
    assert len(tok["model"]["vocab"]) == len(set(text[: len(text) - val_bytes])) + 2  # + <|endoftext|>, <unk>

    # The explicit prepare writes the same validation split: lmctl eval reproduces the run's final eval.
    lmctl(prepare)
    (result,) = json_lines(lmctl(substitute(evaluate, {}) + ["--json", "--precision", "fp32"]).stdout)
    final = next(e for e in metrics(out) if e.get("final"))
    assert result["split"] == "validation"
    assert result["loss"] == pytest.approx(final["eval/loss"], rel=1e-5)
    (sample,) = json_lines(lmctl(substitute(generate, {}) + ["--json", "--max-new-tokens", "40"]).stdout)
    assert sample["tokens"] == 40 or sample["finish_reason"] != "length"
