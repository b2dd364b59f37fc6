"""lmctl eval: numbers cross-checked against independent computations written here, seeded
determinism, padding never counted, bits per byte, and the command line."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import corpus_text, write_prepared

LN2 = math.log(2)
# Non-ASCII text so that UTF-8 bytes, characters and tokens all differ.
EXTRA = "\n\nCafé crème, naïve façade — Ünïcödé “quotes” and 日本語 text, π ≈ 3.14159.\n"


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


def texts() -> tuple[str, str]:
    text = corpus_text(24_000)
    return text[:20_000], text[20_000:] + EXTRA


@pytest.fixture(scope="module")
def causal_run(tmp_path_factory, tokenizer_for):
    """A tiny GPT-2 with 64 positions, trained for a few dozen steps so that context matters,
    saved with its tokenizer; plus prepared data (block 32) made with the same tokenizer."""
    import torch

    from lmctl.core.presets import preset_overrides
    from lmctl.plugins.registry import get_family

    tokenizer = tokenizer_for("causal")
    family = get_family("causal")
    torch.manual_seed(0)
    model = family.build_from_scratch("gpt2", tokenizer=tokenizer, block_size=64, overrides=preset_overrides("gpt2", "tiny"))
    train_text, valid_text = texts()
    ids = torch.tensor(tokenizer(train_text, add_special_tokens=False)["input_ids"])
    blocks = ids[: len(ids) // 64 * 64].view(-1, 64)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(40):
        batch = blocks[torch.randint(len(blocks), (8,), generator=generator)]
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    root = tmp_path_factory.mktemp("eval-causal")
    family.save(model.eval(), tokenizer, root / "model")
    prepared = write_prepared(root / "prepared", tokenizer, "causal", train_text, valid_text, block_size=32)
    return root / "model", prepared, valid_text


def load(model_dir):
    from lmctl.core.hub import load_tokenizer
    from lmctl.plugins.registry import resolve_family

    family = resolve_family(str(model_dir))
    return family, family.load_pretrained(str(model_dir)).eval(), load_tokenizer(str(model_dir))


def reference_causal_nll(model, ids: list[int], block_size: int, stride: int) -> tuple[float, int]:
    """Strided perplexity as in the Hugging Face docs, done right, with the model's own `labels` loss.

    ids[0] (the separator that opens the text) is context only; every later token is a target
    exactly once.  The first window predicts up to `block_size` targets, each later one the next
    `stride`; a window holds the `block_size` tokens before its last target plus that target (HF
    shifts labels inside the window, so the first label of a window is never predicted).
    """
    import torch

    total, count = 0.0, 0
    next_target, n = 1, len(ids)
    while next_target < n:
        end = min(next_target + (block_size if next_target == 1 else stride), n)
        begin = max(0, end - 1 - block_size)
        window = torch.tensor(ids[begin:end])[None]
        labels = window.clone()
        labels[:, : next_target - begin] = -100
        with torch.no_grad():
            loss = model(input_ids=window, labels=labels).loss
        scored = int((labels[:, 1:] != -100).sum())
        total += loss.item() * scored
        count += scored
        next_target = end
    return total, count


# --- done-when 1 and 4: causal perplexity and bits per byte ---------------------------------------


@pytest.mark.parametrize("stride", [32, 16])
def test_causal_matches_independent_strided_loop(causal_run, stride):
    from lmctl.core.prepared import PreparedData
    from lmctl.workflows.evaluate import evaluate_model

    model_dir, prepared, valid_text = causal_run
    family, model, tokenizer = load(model_dir)
    ids = np.fromfile(prepared / "validation.bin", dtype=np.uint16).astype(np.int64).tolist()
    ref_total, ref_count = reference_causal_nll(model, ids, 32, stride)
    assert ref_count == len(ids) - 1

    split = PreparedData(prepared).split("validation")
    result = evaluate_model(model, family, tokenizer, split, block_size=32, stride=stride, batch_size=5)
    assert result["tokens"] == ref_count
    assert rel(result["text_nll"], ref_total) < 1e-5
    assert rel(result["loss"], ref_total / ref_count) < 1e-5
    assert rel(result["perplexity"], math.exp(ref_total / ref_count)) < 1e-5
    # done-when 4: bits per byte = total NLL / ln 2 / UTF-8 bytes of the scored text.
    assert rel(result["bits_per_byte"], ref_total / LN2 / len(valid_text.encode("utf-8"))) < 1e-5
    assert rel(result["word_perplexity"], math.exp(ref_total / len(valid_text.split()))) < 1e-5
    assert result["complete"] is True


def test_sliding_windows_give_more_context(causal_run):
    """Smaller strides see more context: the trained model's loss goes down (the windows differ)."""
    from lmctl.core.prepared import PreparedData
    from lmctl.workflows.evaluate import evaluate_model

    model_dir, prepared, _ = causal_run
    family, model, tokenizer = load(model_dir)
    split = PreparedData(prepared).split("validation")
    full = evaluate_model(model, family, tokenizer, split, block_size=32)
    sliding = evaluate_model(model, family, tokenizer, split, block_size=32, stride=8)
    assert full["tokens"] == sliding["tokens"] == split.num_tokens - 1
    assert sliding["loss"] < full["loss"] - 1e-3


def test_window_plan_scores_every_token_once():
    from lmctl.kit.scoring import causal_windows, in_place_windows

    seq = np.arange(100)
    for block, stride in [(32, 32), (32, 16), (32, 1), (7, 3), (200, 5)]:
        for make, limit in ((causal_windows, block), (in_place_windows, block)):
            targets = []
            for w in make(seq, block, stride):
                assert 1 <= len(w.ids) <= limit
                targets += [int(t) for t in w.labels if t != -100]
                assert w.new == sum(1 for t in w.labels if t != -100)
            assert targets == list(range(1, 100)), (make.__name__, block, stride)
    # Context: in causal windows a scored prediction sees at least block - stride + 1 tokens.
    for w in causal_windows(seq, 32, 16):
        scored = np.flatnonzero(w.labels != -100)
        if w.ids[0] > 0:
            assert scored.min() + 1 >= 32 - 16 + 1


def test_max_batches_is_a_partial_token_weighted_estimate(causal_run):
    from lmctl.core.prepared import PreparedData
    from lmctl.workflows.evaluate import evaluate_model

    model_dir, prepared, _ = causal_run
    family, model, tokenizer = load(model_dir)
    split = PreparedData(prepared).split("validation")
    ids = np.asarray(split.tokens, dtype=np.int64).tolist()
    result = evaluate_model(model, family, tokenizer, split, block_size=32, batch_size=2, max_batches=3)
    assert result["complete"] is False and result["bits_per_byte"] is None
    assert result["tokens"] == 6 * 32  # six full windows of 32 predictions
    ref_total, ref_count = reference_causal_nll(model, ids[: 6 * 32 + 1], 32, 32)
    assert ref_count == result["tokens"] and rel(result["loss"], ref_total / ref_count) < 1e-5


def test_modes_restored_and_no_gradients(causal_run):
    from lmctl.core.prepared import PreparedData
    from lmctl.workflows.evaluate import evaluate_model

    model_dir, prepared, _ = causal_run
    family, model, tokenizer = load(model_dir)
    model.train()
    frozen = model.transformer.h[0]
    frozen.eval()
    split = PreparedData(prepared).split("validation")
    evaluate_model(model, family, tokenizer, split, block_size=32, max_batches=1)
    assert model.training and model.transformer.h[1].training and not frozen.training
    assert all(p.grad is None for p in model.parameters())


def test_argument_checks(causal_run):
    from lmctl.core.prepared import PreparedData
    from lmctl.errors import UsageError
    from lmctl.workflows.evaluate import evaluate_model

    model_dir, prepared, _ = causal_run
    family, model, tokenizer = load(model_dir)
    split = PreparedData(prepared).split("validation")
    for kwargs in ({"stride": 33}, {"stride": 0}, {"batch_size": 0}, {"max_batches": 0}):
        with pytest.raises(UsageError):
            evaluate_model(model, family, tokenizer, split, block_size=32, **kwargs)


def test_default_family_evaluate_is_token_weighted_compute_loss(causal_run):
    """A plugin family without its own evaluate(): the training loss over blocks, token-weighted."""
    import torch

    from lmctl.core.prepared import PreparedData
    from lmctl.families.base import Family
    from lmctl.families.causal import CausalFamily
    from lmctl.workflows.evaluate import evaluate_model

    class PluginFamily(CausalFamily):
        name = "plugin-causal"
        evaluate = Family.evaluate

    model_dir, prepared, _ = causal_run
    _, model, tokenizer = load(model_dir)
    split = PreparedData(prepared).split("validation")
    result = evaluate_model(model, PluginFamily(), tokenizer, split, block_size=32, batch_size=3)
    ids = torch.from_numpy(np.asarray(split.tokens, dtype=np.int64))
    total, count = 0.0, 0
    for start in range(0, len(ids), 32):  # every block, the short last one too
        block = ids[start : start + 32][None]
        if block.shape[1] < 2:
            continue
        with torch.no_grad():
            total += model(input_ids=block, labels=block).loss.item() * (block.shape[1] - 1)
        count += block.shape[1] - 1
    assert result["tokens"] == count
    assert rel(result["loss"], total / count) < 1e-5


def test_bf16_perplexity_close_to_fp32(causal_run):
    import torch

    from lmctl.core.precision import autocast_context
    from lmctl.core.prepared import PreparedData
    from lmctl.workflows.evaluate import evaluate_model

    model_dir, prepared, _ = causal_run
    family, model, tokenizer = load(model_dir)
    split = PreparedData(prepared).split("validation")
    fp32 = evaluate_model(model, family, tokenizer, split, block_size=32)
    bf16 = evaluate_model(
        model, family, tokenizer, split, block_size=32, autocast=lambda: autocast_context("bf16", torch.device("cpu"))
    )
    assert fp32["perplexity"] != bf16["perplexity"]  # bf16 really ran
    assert rel(bf16["perplexity"], fp32["perplexity"]) < 0.005


# --- done-when 3: padding never enters the loss ---------------------------------------------------


def write_line_by_line(
    out: Path, tokenizer, family_name: str, lines: list[str], block_size: int = 32, separator: bool = True
) -> Path:
    """A line-by-line prepared directory as lmctl/prepared.py specifies: one example per line
    (the tokenizer's own special tokens, else the separator first: ``separator=False`` leaves it
    out, as data written by other tools may), with n + 1 offsets."""
    from lmctl.core.prepared import FORMAT_NAME, FORMAT_VERSION
    from lmctl.plugins.registry import get_family

    family = get_family(family_name)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out / "tokenizer")
    examples = []
    for line in lines:
        ids = tokenizer(line)["input_ids"]
        if separator and ids[0] not in tokenizer.all_special_ids:
            ids = family.document_separator(tokenizer) + ids
        examples.append(ids[:block_size])
    flat = [t for e in examples for t in e]
    offsets = np.cumsum([0] + [len(e) for e in examples]).astype(np.uint64)
    np.asarray(flat, dtype=np.uint16).tofile(out / "validation.bin")
    offsets.tofile(out / "validation.offsets.bin")
    text = "\n".join(lines) + "\n"
    manifest = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "family": family_name,
        "block_size": block_size,
        "line_by_line": True,
        "dtype": "uint16",
        "vocab_size": len(tokenizer),
        "tokenizer": {"dir": "tokenizer"},
        "splits": {
            "validation": {
                "file": "validation.bin",
                "offsets_file": "validation.offsets.bin",
                "tokens": len(flat),
                "documents": len(lines),
                "bytes": len(text.encode("utf-8")),
                "words": len(text.split()),
                "dropped_tokens": 0,
            }
        },
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def short_lines(n: int = 40) -> list[str]:
    words = corpus_text(8_000).split()
    rng = np.random.default_rng(0)
    lines, i = [], 0
    for _ in range(n):
        k = int(rng.integers(1, 12))  # 1 to 11 words: very different lengths, much padding
        lines.append(" ".join(words[i : i + k]))
        i += k
    return lines


@pytest.mark.parametrize("separator", [True, False])
def test_causal_padding_never_counted(causal_run, tmp_path, separator):
    """Many short lines batched with padding give the NLL of the lines one by one, unpadded.
    Examples stored without a leading separator are scored with one (the BOS starts the text)."""
    import torch

    from lmctl.core.prepared import PreparedData
    from lmctl.workflows.evaluate import evaluate_model

    model_dir, _, _ = causal_run
    family, model, tokenizer = load(model_dir)
    lines = short_lines()
    prepared = write_line_by_line(tmp_path / "lines", tokenizer, "causal", lines, separator=separator)
    split = PreparedData(prepared).split("validation")
    batched = evaluate_model(model, family, tokenizer, split, block_size=32, batch_size=8)
    total, count = 0.0, 0
    for i in range(split.num_blocks(32)):  # each line alone, unpadded
        example = [int(t) for t in split.example(i, 32)]
        assert (example[0] == tokenizer.eos_token_id) == separator
        ids = torch.tensor([tokenizer.eos_token_id] * (not separator) + example)[None]
        with torch.no_grad():
            total += model(input_ids=ids, labels=ids).loss.item() * (ids.shape[1] - 1)
        count += ids.shape[1] - 1
    assert batched["tokens"] == count
    assert rel(batched["text_nll"], total) < 1e-5
    one_by_one = evaluate_model(model, family, tokenizer, split, block_size=32, batch_size=1)
    assert rel(one_by_one["text_nll"], batched["text_nll"]) < 1e-5


@pytest.fixture(scope="module")
def masked_model(tiny_model_dir):
    return tiny_model_dir("masked", block_size=64)


def test_masked_padding_never_counted(masked_model, tmp_path):
    """Bidirectional model: short lines padded in a batch of 8 give the same masked loss and the
    same pseudo-perplexity as the lines one by one (masks are seeded per example, not per batch)."""
    from lmctl.core.prepared import PreparedData
    from lmctl.families.base import parse_options
    from lmctl.workflows.evaluate import evaluate_model

    family, model, tokenizer = load(masked_model)
    for pseudo, n_lines in ((False, 40), (True, 12)):  # pseudo-perplexity: one forward per token
        prepared = write_line_by_line(tmp_path / f"lines{n_lines}", tokenizer, "masked", short_lines(n_lines))
        split = PreparedData(prepared).split("validation")
        batched = evaluate_model(model, family, tokenizer, split, block_size=32, batch_size=8, options=parse_options(family, {"pseudo_perplexity": pseudo}))
        alone = evaluate_model(model, family, tokenizer, split, block_size=32, batch_size=1, options=parse_options(family, {"pseudo_perplexity": pseudo}))
        assert batched["tokens"] == alone["tokens"] > 0
        assert rel(batched["loss"], alone["loss"]) < 1e-5


# --- done-when 2: masked perplexity is seeded ------------------------------------------------------


@pytest.fixture(scope="module")
def masked_prepared(tmp_path_factory, tokenizer_for):
    train_text, valid_text = texts()
    root = tmp_path_factory.mktemp("eval-masked")
    return write_prepared(root / "prepared", tokenizer_for("masked"), "masked", train_text, valid_text, block_size=32)


def test_masked_perplexity_is_seeded(masked_model, masked_prepared):
    from lmctl.core.prepared import PreparedData
    from lmctl.workflows.evaluate import evaluate_model

    family, model, tokenizer = load(masked_model)
    split = PreparedData(masked_prepared).split("validation")
    run = lambda **kw: evaluate_model(model, family, tokenizer, split, block_size=32, **kw)  # noqa: E731
    a, b, c = run(seed=0), run(seed=0), run(seed=1)
    assert a["loss"] == b["loss"] and a["tokens"] == b["tokens"]
    assert a["loss"] != c["loss"]
    # The masks belong to blocks, not batches: another batch size masks the same tokens.
    d = run(seed=0, batch_size=3)
    assert d["tokens"] == a["tokens"] and rel(d["loss"], a["loss"]) < 1e-5
    assert a["bits_per_byte"] is None  # 15% of the tokens is not a code length of the text


def test_masked_perplexity_matches_independent_masking(masked_model, masked_prepared):
    """The same seeded masks applied by hand, scored with the model's own `labels` loss."""
    import torch

    from lmctl.core.prepared import PreparedData
    from lmctl.families.base import mask_tokens
    from lmctl.kit.scoring import seeded_generator
    from lmctl.workflows.evaluate import evaluate_model

    family, model, tokenizer = load(masked_model)
    split = PreparedData(masked_prepared).split("validation")
    result = evaluate_model(model, family, tokenizer, split, block_size=32, batch_size=4, seed=3)
    ids = torch.from_numpy(np.asarray(split.tokens, dtype=np.int64))
    total, count = 0.0, 0
    for index, start in enumerate(range(0, len(ids), 32)):
        block = ids[start : start + 32]
        padded = torch.full((1, 32), tokenizer.pad_token_id)
        padded[0, : len(block)] = block
        attention = (torch.arange(32) < len(block)).long()[None]
        masked, labels = mask_tokens(
            padded, probability=0.15, mask_token_id=tokenizer.mask_token_id, vocab_size=len(tokenizer),
            special_ids=sorted(set(tokenizer.all_special_ids)), generator=seeded_generator(3, index), attention_mask=attention,
        )  # fmt: skip
        n = int((labels != -100).sum())
        if n:
            with torch.no_grad():
                total += model(input_ids=masked, attention_mask=attention, labels=labels).loss.item() * n
            count += n
    assert result["tokens"] == count
    assert rel(result["loss"], total / count) < 1e-5


def test_pseudo_perplexity_matches_one_mask_at_a_time(masked_model, masked_prepared):
    import torch

    from lmctl.core.prepared import PreparedData
    from lmctl.families.base import parse_options
    from lmctl.workflows.evaluate import evaluate_model

    family, model, tokenizer = load(masked_model)
    split = PreparedData(masked_prepared).split("validation")
    result = evaluate_model(model, family, tokenizer, split, block_size=32, batch_size=16, options=parse_options(family, {"pseudo_perplexity": True}), max_batches=4)
    # The first 64 queries: block 0 then block 1, one masked token each, in order.
    ids = np.asarray(split.tokens, dtype=np.int64)
    specials = set(tokenizer.all_special_ids)
    total, count = 0.0, 0
    for start in (0, 32, 64):
        block = ids[start : start + 32]
        for pos in range(len(block)):
            if block[pos] in specials or count == 64:
                continue
            masked = torch.from_numpy(block.copy())[None]
            masked[0, pos] = tokenizer.mask_token_id
            with torch.no_grad():
                logits = model(input_ids=masked).logits[0, pos]
            total += -torch.log_softmax(logits, -1)[int(block[pos])].item()
            count += 1
    assert result["tokens"] == count == 64
    assert rel(result["loss"], total / count) < 1e-5


# --- permuted and electra ---------------------------------------------------------------------------


def test_xlnet_left_to_right_sees_only_the_past(tiny_model_dir):
    """Changing token k never changes the predictions for positions 1..k (position 0 sees
    nothing, so XLNet spreads its attention everywhere there: it is never a target)."""
    import torch

    from lmctl.families.permuted import xlnet_left_to_right_inputs

    _, model, tokenizer = load(tiny_model_dir("permuted"))
    ids = torch.randint(5, len(tokenizer), (1, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base = model(**xlnet_left_to_right_inputs(ids), use_mems=False).logits
        for k in (3, 11, 23):
            changed = ids.clone()
            changed[0, k] = (changed[0, k] + 7) % len(tokenizer)
            out = model(**xlnet_left_to_right_inputs(changed), use_mems=False).logits
            assert torch.allclose(out[0, 1 : k + 1], base[0, 1 : k + 1], atol=1e-5)
            assert not torch.allclose(out[0, k + 1 :], base[0, k + 1 :], atol=1e-5) or k == 23


def test_permuted_plm_and_left_to_right(tiny_model_dir, tokenizer_for, tmp_path):
    from lmctl.core.prepared import PreparedData
    from lmctl.workflows.evaluate import evaluate_model

    family, model, tokenizer = load(tiny_model_dir("permuted"))
    train_text, valid_text = texts()
    prepared = write_prepared(tmp_path / "p", tokenizer, "permuted", train_text, valid_text[:2000], block_size=32)
    split = PreparedData(prepared).split("validation")
    a = evaluate_model(model, family, tokenizer, split, block_size=32, batch_size=4)
    b = evaluate_model(model, family, tokenizer, split, block_size=32, batch_size=4)
    c = evaluate_model(model, family, tokenizer, split, block_size=32, batch_size=4, seed=5)
    assert a["loss"] == b["loss"] and a["loss"] != c["loss"]
    assert a["left_to_right_tokens"] == split.num_tokens - 1
    assert a["left_to_right_loss"] == c["left_to_right_loss"]  # no randomness in left-to-right
    assert rel(a["bits_per_byte"], a["left_to_right_loss"] * a["left_to_right_tokens"] / LN2 / len(valid_text[:2000].encode())) < 1e-9


def test_roc_auc_matches_pairwise_definition():
    from lmctl.kit.scoring import roc_auc

    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, 300).astype(float)  # many ties
    truth = rng.random(300) < 0.3
    pos, neg = scores[truth], scores[~truth]
    pairwise = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg))
    assert abs(roc_auc(scores, truth) - pairwise) < 1e-12
    assert roc_auc(scores, np.zeros(300, bool)) is None


def test_electra_metrics(tiny_model_dir, tmp_path):

    from lmctl.core.prepared import PreparedData
    from lmctl.workflows.evaluate import evaluate_model

    family, model, tokenizer = load(tiny_model_dir("electra"))
    train_text, valid_text = texts()
    prepared = write_prepared(tmp_path / "e", tokenizer, "electra", train_text, valid_text[:2000], block_size=32)
    split = PreparedData(prepared).split("validation")
    a = evaluate_model(model, family, tokenizer, split, block_size=32, batch_size=4)
    b = evaluate_model(model, family, tokenizer, split, block_size=32, batch_size=2)
    assert a["tokens"] == b["tokens"] > 0 and rel(a["loss"], b["loss"]) < 1e-5
    assert a["discriminator_accuracy"] == pytest.approx(b["discriminator_accuracy"])
    assert a["discriminator_tokens"] == split.num_tokens
    for key in ("discriminator_accuracy", "discriminator_precision", "discriminator_recall", "discriminator_f1", "discriminator_auc"):
        assert 0.0 <= a[key] <= 1.0, key
    assert 0 < a["replaced_fraction"] < 0.2
    assert a["perplexity"] == pytest.approx(math.exp(a["generator_loss"]))


# --- the command line --------------------------------------------------------------------------------


def run_cli(*args: str):
    from lmctl.cli.app import app

    return CliRunner().invoke(app, ["eval", *args])


def test_cli_json_and_out_file(causal_run, tmp_path):
    from lmctl.core.prepared import PreparedData
    from lmctl.workflows.evaluate import evaluate_model

    model_dir, prepared, _ = causal_run
    out = tmp_path / "results" / "eval.jsonl"
    result = run_cli("--model", str(model_dir), "--data", str(prepared), "--json", "--stride", "16", "--precision", "fp32", "--out", str(out))
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1
    record = json.loads(lines[0])
    for key in ("loss", "perplexity", "bits_per_byte", "tokens", "model", "family", "data_hash", "settings", "word_perplexity"):
        assert key in record, key
    assert record["family"] == "causal" and record["split"] == "validation"
    assert record["settings"]["block_size"] == 32 and record["settings"]["stride"] == 16
    family, model, tokenizer = load(model_dir)
    split = PreparedData(prepared).split("validation")
    direct = evaluate_model(model, family, tokenizer, split, block_size=32, stride=16)
    assert rel(record["loss"], direct["loss"]) < 1e-9 and record["tokens"] == direct["tokens"]
    assert [json.loads(x) for x in out.read_text().splitlines()] == [record]


def test_cli_same_number_in_a_fresh_process(masked_model, masked_prepared):
    args = ["--model", str(masked_model), "--data", str(masked_prepared), "--json", "--precision", "fp32"]
    here = run_cli(*args)
    assert here.exit_code == 0, here.output
    fresh = subprocess.run([sys.executable, "-m", "lmctl", "eval", *args], capture_output=True, text=True, timeout=120)
    assert fresh.returncode == 0, fresh.stderr
    a, b = json.loads(here.stdout), json.loads(fresh.stdout)
    assert a["loss"] == b["loss"] and a["tokens"] == b["tokens"] and a["data_hash"] == b["data_hash"]


def test_cli_several_models_in_one_table(causal_run, tiny_model_dir, monkeypatch):
    from lmctl.cli.display import format_number

    model_dir, prepared, _ = causal_run
    untrained = tiny_model_dir("causal")  # same tokenizer, no training
    monkeypatch.chdir(model_dir.parent.parent)  # short relative names, as a user would type them
    names = [str(model_dir.relative_to(Path.cwd())), untrained.name]
    args = ["--model", names[0], "--model", names[1], "--data", str(prepared)]
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    table = result.stdout
    header = next(line for line in table.splitlines() if names[1] in line)
    assert header.index(names[0]) < header.index(names[1])  # side by side, in the order given
    records = [json.loads(line) for line in run_cli(*args, "--json").stdout.splitlines()]
    assert [r["model"] for r in records] == names
    assert records[0]["perplexity"] < records[1]["perplexity"]  # the trained model is better
    row = next(line for line in table.splitlines() if line.lstrip("│ ").startswith("perplexity"))
    cells = [c.strip() for c in row.split("│") if c.strip()]
    assert cells == ["perplexity"] + [format_number(r["perplexity"], 5) for r in records]
    assert "bits per byte" in table and records[0]["data_hash"] == records[1]["data_hash"]


def test_cli_raw_text_file(causal_run, tokenizer_for, tmp_path, monkeypatch):
    """Text files are prepared with each model's own tokenizer; bits per byte divides by the
    file's UTF-8 bytes, so models with different tokenizers share `bytes` and `text_hash`."""
    import torch

    from lmctl.core.presets import preset_overrides
    from lmctl.plugins.registry import get_family

    monkeypatch.setenv("LMCTL_CACHE", str(tmp_path / "cache"))
    model_dir, _, valid_text = causal_run
    family, char_tokenizer = get_family("causal"), tokenizer_for("causal", "char")
    torch.manual_seed(0)
    char_model = family.build_from_scratch("gpt2", tokenizer=char_tokenizer, block_size=64, overrides=preset_overrides("gpt2", "tiny"))
    family.save(char_model, char_tokenizer, tmp_path / "char-model")
    text_file = tmp_path / "valid.txt"
    text_file.write_text(valid_text, encoding="utf-8")
    result = run_cli("--model", str(model_dir), "--model", str(tmp_path / "char-model"), "--data", str(text_file), "--json", "--block-size", "32")
    assert result.exit_code == 0, result.output
    bpe, char = (json.loads(line) for line in result.stdout.splitlines())
    for record in (bpe, char):
        assert record["bytes"] == len(valid_text.encode("utf-8"))
        assert rel(record["bits_per_byte"], record["text_nll"] / LN2 / record["bytes"]) < 1e-12
        assert rel(record["loss"] * record["tokens"], record["text_nll"]) < 1e-9
        assert record["split"] == "train"
    assert char["tokens"] > bpe["tokens"]  # characters are shorter tokens
    assert bpe["text_hash"] == char["text_hash"] is not None and bpe["data_hash"] != char["data_hash"]


def test_cli_errors(causal_run, masked_model, tmp_path):
    model_dir, prepared, _ = causal_run
    missing = run_cli("--model", str(model_dir), "--data", str(tmp_path / "nope.txt"))
    assert missing.exit_code == 1 and "data not found" in missing.stderr and "Traceback" not in missing.output

    not_a_model = tmp_path / "empty"
    not_a_model.mkdir()
    bad = run_cli("--model", str(not_a_model), "--data", str(prepared))
    assert bad.exit_code == 1 and "not a model directory" in bad.stderr

    mismatch = run_cli("--model", str(masked_model), "--data", str(prepared))
    assert mismatch.exit_code == 2 and "different tokenizer" in mismatch.stderr

    no_split = run_cli("--model", str(model_dir), "--data", str(prepared), "--split", "test")
    assert no_split.exit_code == 1 and "no 'test' split" in no_split.stderr

    too_long = run_cli("--model", str(model_dir), "--data", str(prepared), "--block-size", "65")
    assert too_long.exit_code == 2 and "64" in too_long.stderr


def test_cli_usage_errors(causal_run):
    model_dir, prepared, _ = causal_run
    pseudo = run_cli("--model", str(model_dir), "--data", str(prepared), "--pseudo-perplexity")
    assert pseudo.exit_code == 2 and "has no option 'pseudo_perplexity'" in pseudo.stderr
    stride = run_cli("--model", str(model_dir), "--data", str(prepared), "--stride", "40")
    assert stride.exit_code == 2 and "--stride" in stride.stderr
    precision = run_cli("--model", str(model_dir), "--data", str(prepared), "--precision", "fp8")
    assert precision.exit_code == 2 and "--precision" in precision.stderr


def test_default_block_size():
    from lmctl.workflows.evaluate import EvalConfig, resolve_block_size

    config = EvalConfig(models=["m"], data=["d"])
    assert resolve_block_size(config, [1024], 128) == 128  # the data's block size
    assert resolve_block_size(config, [64, 1024], 128) == 64  # capped by the smallest model
    assert resolve_block_size(config, [None], 256) == 256  # XLNet: no position limit
    assert resolve_block_size(config, [131072], None) == 1024  # raw text: at most 1024
    assert resolve_block_size(config, [None], None) == 512
    assert resolve_block_size(EvalConfig(models=["m"], data=["d"], block_size=48), [64], 128) == 48


def test_cli_electra_without_generator_is_refused(tiny_model_dir, tmp_path):
    import shutil

    source = tiny_model_dir("electra")
    copy = tmp_path / "electra"
    shutil.copytree(source, copy)
    shutil.rmtree(copy / "generator")
    train_text, valid_text = texts()
    from lmctl.core.hub import load_tokenizer

    prepared = write_prepared(tmp_path / "p", load_tokenizer(str(copy)), "electra", train_text, valid_text[:500])
    result = run_cli("--model", str(copy), "--data", str(prepared))
    assert result.exit_code == 1 and "generator" in result.stderr


def test_eval_command_imports_no_torch():
    code = "import sys, lmctl.cli.app, lmctl.cli.eval; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
