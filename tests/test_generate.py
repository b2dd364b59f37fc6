"""lmctl generate: sampling options, batching, streaming, stop strings, fill-mask, prompts, errors.

Results are cross-checked against independent computations: a plain ``model.generate`` on one
unpadded prompt, a hand-written argmax loop without KV cache, and a hand-computed softmax over
the masked position.  The tiny models come from tests/conftest.py; "lively" copies have their
weights shaken so greedy decoding does not just repeat one token (random init is nearly flat).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmctl.cli.app import app

REPO = Path(__file__).resolve().parent.parent
PROMPTS = ["The quick brown fox", "Hello", "class definitions are statements", "x = 1 + 2 * 3"]
runner = CliRunner()


def _shaken_copy(source: Path, out: Path, family_name: str, scale: float = 0.3) -> Path:
    import torch

    from lmctl.core.hub import load_tokenizer
    from lmctl.plugins.registry import get_family

    family = get_family(family_name)
    model = family.load_for_inference(str(source))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * scale)
    family.save(model, load_tokenizer(str(source)), out)
    return out


@pytest.fixture(scope="module")
def causal_dir(tiny_model_dir, tmp_path_factory) -> Path:
    return _shaken_copy(tiny_model_dir("causal"), tmp_path_factory.mktemp("lively-causal"), "causal")


@pytest.fixture(scope="module")
def permuted_dir(tiny_model_dir, tmp_path_factory) -> Path:
    return _shaken_copy(tiny_model_dir("permuted"), tmp_path_factory.mktemp("lively-permuted"), "permuted")


@pytest.fixture(scope="module")
def causal(causal_dir):
    from lmctl.workflows.generate import load_model

    return load_model(str(causal_dir), device="cpu")


@pytest.fixture(scope="module")
def masked(tiny_model_dir):
    from lmctl.workflows.generate import load_model

    return load_model(str(tiny_model_dir("masked")), device="cpu")


def invoke(*args: str, input: str | bytes | None = None):
    return runner.invoke(app, ["generate", *args], input=input)


def _direct_greedy(loaded, ids: list[int], new: int) -> list[int]:
    """Plain transformers: one unpadded prompt, greedy."""
    import torch

    with torch.inference_mode():
        out = loaded.model.generate(
            input_ids=torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            do_sample=False,
            max_new_tokens=new,
            min_new_tokens=new,
            pad_token_id=loaded.tokenizer.pad_token_id,
        )
    return out[0, len(ids) :].tolist()


# --- text generation through the library ----------------------------------------------------------


def test_greedy_equals_a_hand_written_argmax_loop(causal):
    """The whole path (encode, left pad, KV cache, decode) against a no-cache argmax loop."""
    import torch

    from lmctl.workflows.generate import GenerationSettings, continuation_text, encode_prompt, generate_text

    settings = GenerationSettings(greedy=True, max_new_tokens=12, min_new_tokens=12)
    result = generate_text(causal.model, causal.tokenizer, [PROMPTS[0]], settings)[0]
    ids = encode_prompt(causal.tokenizer, PROMPTS[0])
    seq = list(ids)
    with torch.inference_mode():
        for _ in range(12):
            logits = causal.model(torch.tensor([seq]), use_cache=False).logits[0, -1]
            logits[causal.tokenizer.eos_token_id] = float("-inf")  # what min_new_tokens does
            seq.append(int(logits.argmax()))
    assert result.text == continuation_text(causal.tokenizer, ids, seq[len(ids) :])
    assert (result.tokens, result.finish_reason, result.prompt_tokens) == (12, "length", len(ids))
    assert len(set(seq[len(ids) :])) > 2  # the lively model does not just repeat one token


@pytest.mark.parametrize("family_name", ["causal", "permuted"])
def test_a_batch_gives_the_same_text_as_one_by_one(family_name, causal_dir, permuted_dir):
    from lmctl.workflows.generate import (
        GenerationSettings,
        continuation_text,
        encode_prompt,
        generate_text,
        load_model,
    )

    loaded = load_model(str(causal_dir if family_name == "causal" else permuted_dir), device="cpu")
    settings = GenerationSettings(greedy=True, max_new_tokens=10, batch_size=8)
    batched = generate_text(loaded.model, loaded.tokenizer, PROMPTS, settings)
    single = [generate_text(loaded.model, loaded.tokenizer, [p], settings)[0] for p in PROMPTS]
    assert [r.prompt for r in batched] == PROMPTS
    assert [r.text for r in batched] == [r.text for r in single]
    assert len({r.text for r in batched}) > 1
    # And against transformers on the unpadded prompt, tokens included.
    for prompt, result in zip(PROMPTS, batched, strict=True):
        ids = encode_prompt(loaded.tokenizer, prompt)
        assert result.text == continuation_text(
            loaded.tokenizer, ids, _direct_greedy(loaded, ids, result.tokens)
        )


def test_permuted_batches_only_prompts_of_equal_length():
    from lmctl.workflows.generate import plan_batches

    assert plan_batches([3, 5, 3, 3, 5], 2, padding=False) == [[0, 2], [3], [1, 4]]
    assert plan_batches([3, 5, 3, 3, 5], 2, padding=True) == [[0, 1], [2, 3], [4]]


def test_same_seed_same_output_other_seed_differs(causal):
    from lmctl.workflows.generate import GenerationSettings, generate_text

    def run(seed: int) -> list[str]:
        settings = GenerationSettings(seed=seed, max_new_tokens=16, min_new_tokens=16)
        return [r.text for r in generate_text(causal.model, causal.tokenizer, PROMPTS, settings)]

    assert run(0) == run(0)
    assert run(0) != run(1)


def test_top_k_1_top_p_tiny_and_temperature_0_are_greedy(causal):
    from lmctl.workflows.generate import GenerationSettings, generate_text

    def texts(**kw) -> list[str]:
        settings = GenerationSettings(max_new_tokens=10, min_new_tokens=10, seed=3, **kw)
        return [r.text for r in generate_text(causal.model, causal.tokenizer, PROMPTS, settings)]

    greedy = texts(greedy=True)
    assert texts(top_k=1) == greedy
    assert texts(top_p=1e-6) == greedy
    assert texts(temperature=0) == greedy  # 0 means greedy
    assert texts(temperature=1.5, top_k=0) != greedy  # really sampling


def test_repetition_penalty_reaches_generate(causal):
    import torch

    from lmctl.workflows.generate import GenerationSettings, encode_prompt, generate_text

    settings = GenerationSettings(greedy=True, max_new_tokens=12, min_new_tokens=12, repetition_penalty=5.0)
    result = generate_text(causal.model, causal.tokenizer, [PROMPTS[1]], settings)[0]
    plain = generate_text(
        causal.model, causal.tokenizer, [PROMPTS[1]], GenerationSettings(greedy=True, max_new_tokens=12)
    )[0]
    ids = encode_prompt(causal.tokenizer, PROMPTS[1])
    with torch.inference_mode():
        out = causal.model.generate(
            input_ids=torch.tensor([ids]), do_sample=False, max_new_tokens=12, min_new_tokens=12,
            repetition_penalty=5.0, pad_token_id=0,
        )  # fmt: skip
    assert (
        result.text == causal.tokenizer.decode(out[0].tolist(), skip_special_tokens=True)[len(PROMPTS[1]) :]
    )
    assert result.text != plain.text


def test_num_return_sequences(causal):
    from lmctl.workflows.generate import GenerationSettings, generate_text

    settings = GenerationSettings(
        num_return_sequences=3, max_new_tokens=8, min_new_tokens=8, seed=0, batch_size=1
    )
    results = generate_text(causal.model, causal.tokenizer, PROMPTS[:2], settings)
    assert [(r.prompt, r.index) for r in results] == [(p, i) for p in PROMPTS[:2] for i in range(3)]
    assert len({r.text for r in results[:3]}) == 3


def test_max_new_tokens_and_eos_from_generation_config(causal_dir):
    from lmctl.workflows.generate import (
        GenerationSettings,
        encode_prompt,
        generate_text,
        generation_kwargs,
        load_model,
    )

    loaded = load_model(str(causal_dir), device="cpu")
    greedy5 = GenerationSettings(greedy=True, max_new_tokens=5)
    first = generate_text(loaded.model, loaded.tokenizer, [PROMPTS[0]], greedy5)[0]
    assert (first.tokens, first.finish_reason) == (5, "length")
    # Declare the token greedy decoding picks first to be the end of sequence: it stops at once.
    ids = encode_prompt(loaded.tokenizer, PROMPTS[0])
    loaded.model.generation_config.eos_token_id = _direct_greedy(loaded, ids, 1)[0]
    stopped = generate_text(loaded.model, loaded.tokenizer, [PROMPTS[0]], greedy5)[0]
    assert (stopped.text, stopped.tokens, stopped.finish_reason) == ("", 1, "eos")
    # generation_config.json values are the defaults; flags win over them.
    loaded.model.generation_config.max_new_tokens = 7
    loaded.model.generation_config.do_sample = False
    kwargs = generation_kwargs(loaded.model, loaded.tokenizer, GenerationSettings())
    assert (kwargs["max_new_tokens"], kwargs["do_sample"]) == (7, False)
    kwargs = generation_kwargs(
        loaded.model, loaded.tokenizer, GenerationSettings(max_new_tokens=3, temperature=0.7)
    )
    assert (kwargs["max_new_tokens"], kwargs["do_sample"], kwargs["temperature"]) == (3, True, 0.7)
    assert kwargs["use_cache"] is True


def test_generation_config_json_is_read_from_the_model_directory(causal_dir, tmp_path):
    import shutil

    from lmctl.workflows.generate import GenerationSettings, generate_text, load_model

    copy = tmp_path / "model"
    shutil.copytree(causal_dir, copy)
    config = json.loads((copy / "generation_config.json").read_text())
    config.update(do_sample=False, max_new_tokens=6, min_new_tokens=6)
    (copy / "generation_config.json").write_text(json.dumps(config))
    loaded = load_model(str(copy), device="cpu")
    results = generate_text(loaded.model, loaded.tokenizer, PROMPTS, GenerationSettings())
    expected = generate_text(
        loaded.model, loaded.tokenizer, PROMPTS, GenerationSettings(greedy=True, max_new_tokens=6)
    )
    assert [r.tokens for r in results] == [6] * len(PROMPTS)
    assert [r.text for r in results] == [r.text for r in expected]


def test_defaults_sample_and_fit_the_context(causal):
    from lmctl.workflows.generate import GenerationSettings, generation_kwargs

    kwargs = generation_kwargs(causal.model, causal.tokenizer, GenerationSettings())
    assert kwargs["do_sample"] is True and kwargs["top_k"] == 50 and kwargs["temperature"] == 1.0
    assert kwargs["max_new_tokens"] == 32  # 50, capped at half of the tiny model's 64 positions


def test_stop_strings_cut_the_text_and_the_stream(causal):
    from lmctl.workflows.generate import GenerationSettings, generate_text

    base = GenerationSettings(greedy=True, max_new_tokens=20, min_new_tokens=20)
    full = generate_text(causal.model, causal.tokenizer, [PROMPTS[2]], base)[0].text
    stop = full[6:8]
    cut = full.find(stop)
    pieces: list[str] = []
    settings = GenerationSettings(greedy=True, max_new_tokens=20, stop=[stop, "never-there"])
    result = generate_text(causal.model, causal.tokenizer, [PROMPTS[2]], settings, on_text=pieces.append)[0]
    assert result.text == full[:cut]
    assert result.finish_reason == "stop"
    assert result.tokens < 20
    assert "".join(pieces) == result.text
    # Several stop strings: the earliest wins; in a batch each result is cut on its own.
    batch = generate_text(
        causal.model,
        causal.tokenizer,
        PROMPTS,
        GenerationSettings(greedy=True, max_new_tokens=20, stop=[stop, full[2:4]]),
    )
    assert batch[2].text == full[: min(full.find(stop), full.find(full[2:4]))]


def test_streaming_gives_exactly_the_final_text(causal):
    from lmctl.workflows.generate import GenerationSettings, generate_text

    pieces: list[str] = []
    settings = GenerationSettings(seed=5, max_new_tokens=25, min_new_tokens=25)
    result = generate_text(causal.model, causal.tokenizer, [PROMPTS[0]], settings, on_text=pieces.append)[0]
    assert len(pieces) > 3  # it really streamed
    assert "".join(pieces) == result.text
    streamless = generate_text(causal.model, causal.tokenizer, [PROMPTS[0]], settings)[0]
    assert streamless.text == result.text


def test_long_prompts_are_cut_from_the_left_or_refused(causal):
    from lmctl.errors import UsageError
    from lmctl.workflows.generate import GenerationSettings, continuation_text, encode_prompt, generate_text

    long_prompt = " ".join(["alpha beta gamma delta"] * 30)
    ids = encode_prompt(causal.tokenizer, long_prompt)
    assert len(ids) > 64
    warnings: list[str] = []
    settings = GenerationSettings(greedy=True, max_new_tokens=10, min_new_tokens=10)
    result = generate_text(causal.model, causal.tokenizer, [long_prompt], settings, warn=warnings.append)[0]
    assert result.prompt_tokens == 54 and len(warnings) == 1 and "--no-truncate" in warnings[0]
    kept = ids[-54:]
    assert result.text == continuation_text(causal.tokenizer, kept, _direct_greedy(causal, kept, 10))
    with pytest.raises(UsageError, match="no-truncate"):
        generate_text(
            causal.model,
            causal.tokenizer,
            [long_prompt],
            GenerationSettings(max_new_tokens=10, truncate=False),
        )
    with pytest.raises(UsageError, match="more than the model's 64-token context"):
        generate_text(
            causal.model, causal.tokenizer, ["hi"], GenerationSettings(max_new_tokens=64, truncate=False)
        )


def test_more_new_tokens_than_the_context_slide_a_window(causal):
    """64 positions, 80 new tokens: steps of 32, 32 and 16, each reading the latest tokens."""
    from lmctl.workflows.generate import GenerationSettings, continuation_text, encode_prompt, generate_text

    prompt = encode_prompt(causal.tokenizer, PROMPTS[0])
    pieces: list[str] = []
    settings = GenerationSettings(greedy=True, max_new_tokens=80, min_new_tokens=80)
    result = generate_text(causal.model, causal.tokenizer, [PROMPTS[0]], settings, on_text=pieces.append)[0]
    seq = list(prompt)
    for step in (32, 32, 16):  # each call: the last 64 - step tokens in, step tokens out
        seq += _direct_greedy(causal, seq[-(64 - step) :], step)
    assert (result.tokens, result.finish_reason) == (80, "length")
    assert result.text == continuation_text(causal.tokenizer, prompt, seq[len(prompt) :])
    assert "".join(pieces) == result.text
    sampled = GenerationSettings(max_new_tokens=70, min_new_tokens=70, seed=0, num_return_sequences=2)
    assert [r.tokens for r in generate_text(causal.model, causal.tokenizer, PROMPTS[:2], sampled)] == [70] * 4


def test_empty_prompt_starts_from_bos(causal):
    from lmctl.workflows.generate import GenerationSettings, encode_prompt, generate_text

    assert encode_prompt(causal.tokenizer, "") == [causal.tokenizer.bos_token_id]
    result = generate_text(
        causal.model, causal.tokenizer, [""], GenerationSettings(max_new_tokens=5, min_new_tokens=5, seed=0)
    )[0]
    assert result.tokens == 5 and result.text


def test_prompt_encoding_drops_only_the_specials_the_tokenizer_added(tokenizer_for):
    from lmctl.workflows.generate import encode_prompt

    xlnet = tokenizer_for("permuted")  # its post-processor wraps a text as <cls> ... <sep>
    wrapped = xlnet("Hello there")["input_ids"]
    plain = xlnet("Hello there", add_special_tokens=False)["input_ids"]
    assert wrapped != plain and encode_prompt(xlnet, "Hello there") == plain
    gpt = tokenizer_for("causal")
    typed = encode_prompt(gpt, "end of one story<|endoftext|>")
    assert typed[-1] == gpt.eos_token_id  # a special token the user wrote stays


def test_bad_settings_are_one_line_usage_errors():
    from lmctl.errors import UsageError
    from lmctl.workflows.generate import GenerationSettings

    for kwargs, flag in [
        ({"max_new_tokens": 0}, "--max-new-tokens"),
        ({"top_p": 0}, "--top-p"),
        ({"top_k": -1}, "--top-k"),
        ({"temperature": -1}, "--temperature"),
        ({"repetition_penalty": 0}, "--repetition-penalty"),
        ({"num_return_sequences": 2, "greedy": True}, "--num-return-sequences"),
        ({"batch_size": 0}, "--batch-size"),
        ({"stop": [""]}, "--stop"),
    ]:
        with pytest.raises(UsageError, match=flag):
            GenerationSettings(**kwargs).validate()


def test_bf16_precision_generates(causal_dir):
    import torch

    from lmctl.core.device import pick_dtype
    from lmctl.workflows.generate import GenerationSettings, generate_text, load_model

    assert pick_dtype("auto", "cpu") == torch.float32
    loaded = load_model(str(causal_dir), device="cpu", precision="bf16")
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
    result = generate_text(
        loaded.model, loaded.tokenizer, ["Hi"], GenerationSettings(max_new_tokens=4, min_new_tokens=4, seed=0)
    )[0]
    assert result.tokens == 4


# --- fill-mask through the library ----------------------------------------------------------------


@pytest.mark.parametrize("family_name", ["masked", "electra"])
def test_fill_mask_matches_a_hand_computed_softmax(family_name, tiny_model_dir):
    import torch
    from transformers import AutoModelForMaskedLM

    from lmctl.workflows.generate import fill_mask, load_model

    path = tiny_model_dir(family_name)
    loaded = load_model(str(path), device="cpu")
    tok = loaded.tokenizer
    prompt = "The [MASK] of the function is <mask> here."
    result = fill_mask(loaded.model, tok, [prompt], top_k=4)[0]
    assert len(result.masks) == 2 and all(len(m) == 4 for m in result.masks)
    # Independent: the MLM head straight from transformers (ELECTRA's lives in generator/).
    reference = AutoModelForMaskedLM.from_pretrained(path / "generator" if family_name == "electra" else path)
    ids = tok(prompt.replace("<mask>", tok.mask_token))["input_ids"]
    with torch.inference_mode():
        probs = reference(torch.tensor([ids])).logits[0].softmax(-1)
    positions = [i for i, t in enumerate(ids) if t == tok.mask_token_id]
    for position, candidates in zip(positions, result.masks, strict=True):
        scores, top = probs[position].topk(4)
        assert [c.token_id for c in candidates] == top.tolist()
        assert [c.score for c in candidates] == pytest.approx(scores.tolist(), rel=1e-4)
        assert candidates[0].token == tok.decode([top[0]]).strip()


def test_fill_mask_batches_and_errors(masked):
    from lmctl.errors import UsageError
    from lmctl.workflows.generate import fill_mask

    prompts = ["A [MASK] b.", "The long sentence with a [MASK] in the middle of it.", "[MASK]"]
    batched = fill_mask(masked.model, masked.tokenizer, prompts, top_k=3, batch_size=3)
    single = [fill_mask(masked.model, masked.tokenizer, [p], top_k=3)[0] for p in prompts]
    for a, b in zip(batched, single, strict=True):
        assert [c.token_id for c in a.masks[0]] == [c.token_id for c in b.masks[0]]
        assert [c.score for c in a.masks[0]] == pytest.approx([c.score for c in b.masks[0]], rel=1e-4)
    with pytest.raises(UsageError, match="prompt 2 has no mask"):
        fill_mask(masked.model, masked.tokenizer, ["ok [MASK]", "no mask here"])
    long_tail = " ".join(["word"] * 80) + " [MASK]."
    warnings: list[str] = []
    assert fill_mask(masked.model, masked.tokenizer, [long_tail], warn=warnings.append)[0].masks
    assert warnings and "--no-truncate" in warnings[0]
    with pytest.raises(UsageError, match="no-truncate"):
        fill_mask(masked.model, masked.tokenizer, [long_tail], truncate=False)
    with pytest.raises(UsageError, match="cut from the left"):
        fill_mask(masked.model, masked.tokenizer, ["[MASK] " + " ".join(["word"] * 80)])


# --- prompts --------------------------------------------------------------------------------------


def test_prompts_file_formats_and_errors(tmp_path):
    from lmctl.cli.prompts import read_prompts_file
    from lmctl.errors import LmctlError

    plain = tmp_path / "p.txt"
    plain.write_text("first prompt\n\n  second one\n", encoding="utf-8")
    assert read_prompts_file(plain) == ["first prompt", "  second one"]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "a\\nb", "id": 1}\n\n{"prompt": "c"}\n', encoding="utf-8")
    assert read_prompts_file(jsonl) == ["a\nb", "c"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n{"text": "b"}\n', encoding="utf-8")
    with pytest.raises(LmctlError, match='line 2 has no string "prompt" field'):
        read_prompts_file(bad)
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("café\n".encode("latin-1"))
    with pytest.raises(LmctlError, match="not UTF-8 text"):
        read_prompts_file(latin)
    with pytest.raises(LmctlError, match="prompts file not found"):
        read_prompts_file(tmp_path / "missing.txt")


# --- loading --------------------------------------------------------------------------------------


def test_load_model_errors(tmp_path, tiny_model_dir, monkeypatch):
    from lmctl.errors import LmctlError, UsageError
    from lmctl.workflows.generate import load_model

    (tmp_path / "empty").mkdir()
    with pytest.raises(LmctlError, match="not a model directory"):
        load_model(str(tmp_path / "empty"))
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((tiny_model_dir("causal") / "config.json").read_text())
    with pytest.raises(LmctlError, match="no weights"):
        load_model(str(no_weights))
    if not _has_cuda():
        with pytest.raises(UsageError, match="no CUDA GPU"):
            load_model(str(tiny_model_dir("causal")), device="cuda:0")
    with pytest.raises(UsageError, match="is not a device"):
        load_model(str(tiny_model_dir("causal")), device="gpu-please")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LmctlError, match="could not download 'no-such-org/no-such-model'"):
        load_model("no-such-org/no-such-model")


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_family_flag_overrides_config(tiny_model_dir):
    from lmctl.errors import UsageError
    from lmctl.workflows.generate import load_model

    assert load_model(str(tiny_model_dir("causal")), family="clm", device="cpu").family.name == "causal"
    with pytest.raises(UsageError, match="unknown family 'nope'"):
        load_model(str(tiny_model_dir("causal")), family="nope")
    result = invoke(
        "--model", str(tiny_model_dir("masked")), "--family", "mlm", "a [MASK]", "--json", "-k", "1"
    )
    assert result.exit_code == 0 and len(json.loads(result.stdout)["masks"][0]) == 1


def test_every_family_loads_with_no_flags(tiny_model_dir):
    from lmctl.workflows.generate import load_model

    kinds = {
        name: load_model(str(tiny_model_dir(name)), device="cpu").kind
        for name in ("causal", "masked", "permuted", "electra")
    }
    assert kinds == {"causal": "text", "masked": "fill-mask", "permuted": "text", "electra": "fill-mask"}
    electra = load_model(str(tiny_model_dir("electra")), device="cpu")
    assert type(electra.model).__name__ == "ElectraForMaskedLM"  # the generator, which has the MLM head


# --- the command line -----------------------------------------------------------------------------


def test_cli_plain_output_is_the_text_and_stats_go_to_stderr(causal_dir):
    args = ["--model", str(causal_dir), "Hello", "--seed", "0", "-n", "12", "--min-new-tokens", "12"]
    first, second = invoke(*args), invoke(*args)
    assert first.exit_code == 0, first.output
    assert first.stdout == second.stdout
    as_json = json.loads(invoke(*args, "--json").stdout)
    assert first.stdout == as_json["text"] + "\n"
    assert "12 tokens" in first.stderr and "tokens/s" in first.stderr
    assert invoke(*args, "--quiet").stderr == ""


def test_cli_json_lines_and_options(causal_dir):
    result = invoke(
        "--model", str(causal_dir), *PROMPTS[:2], "--json", "--seed", "1", "-n", "6", "--min-new-tokens", "6",
        "--num-return-sequences", "2", "--temperature", "0.9", "--top-k", "20", "--top-p", "0.95",
        "--repetition-penalty", "1.1", "--batch-size", "1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["prompt"], r["index"]) for r in records] == [(p, i) for p in PROMPTS[:2] for i in range(2)]
    for record in records:
        assert {"prompt", "text", "tokens", "finish_reason", "tokens_per_s", "model"} <= set(record)
        assert record["tokens"] == 6 and record["finish_reason"] == "length" and record["tokens_per_s"] > 0
        assert record["model"] == str(causal_dir)
    greedy = invoke("--model", str(causal_dir), *PROMPTS, "--greedy", "-n", "8", "--json")
    from lmctl.workflows.generate import GenerationSettings, generate_text, load_model

    loaded = load_model(str(causal_dir), device="cpu")
    library = generate_text(
        loaded.model, loaded.tokenizer, PROMPTS, GenerationSettings(greedy=True, max_new_tokens=8)
    )
    assert [json.loads(line)["text"] for line in greedy.stdout.splitlines()] == [r.text for r in library]


def test_cli_stop_and_several_results_in_plain_text(causal_dir):
    from lmctl.workflows.generate import GenerationSettings, generate_text, load_model

    loaded = load_model(str(causal_dir), device="cpu")
    texts = [
        r.text
        for r in generate_text(
            loaded.model, loaded.tokenizer, PROMPTS[:2], GenerationSettings(greedy=True, max_new_tokens=10)
        )
    ]
    result = invoke("--model", str(causal_dir), *PROMPTS[:2], "--greedy", "-n", "10")
    assert result.stdout == texts[0] + "\n\n" + texts[1] + "\n"  # a blank line between results
    stop = texts[0][3:5]
    cut = invoke("--model", str(causal_dir), PROMPTS[0], "--greedy", "-n", "10", "--stop", stop, "--json")
    record = json.loads(cut.stdout)
    assert record["text"] == texts[0][: texts[0].find(stop)] and record["finish_reason"] == "stop"


def test_cli_prompts_from_file_and_stdin(causal_dir, tmp_path):
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS[:3]), encoding="utf-8")
    base = ["--model", str(causal_dir), "--greedy", "-n", "4", "--json"]
    from_file = invoke(*base, "--prompts-file", str(jsonl))
    assert [json.loads(line)["prompt"] for line in from_file.stdout.splitlines()] == PROMPTS[:3]
    from_stdin = invoke(*base, "-", input="line one\nline two\n")
    assert [json.loads(line)["prompt"] for line in from_stdin.stdout.splitlines()] == ["line one\nline two"]
    lines_from_stdin = invoke(*base, "--prompts-file", "-", input="a\nb\n")
    assert [json.loads(line)["prompt"] for line in lines_from_stdin.stdout.splitlines()] == ["a", "b"]
    args_then_file = invoke(*base, "first", "--prompts-file", str(jsonl))
    assert json.loads(args_then_file.stdout.splitlines()[0])["prompt"] == "first"


def test_cli_errors_are_one_line(causal_dir, tmp_path, tiny_model_dir):
    def error_of(*args: str, input: str | None = None) -> tuple[int, str]:
        result = invoke(*args, input=input)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert "Traceback" not in result.output
        return result.exit_code, lines[0]

    code, line = error_of("--model", str(causal_dir))
    assert code == 2 and "no prompt given" in line
    code, line = error_of("hello")
    assert code == 2 and "--model" in line
    (tmp_path / "not-a-model").mkdir()
    code, line = error_of("--model", str(tmp_path / "not-a-model"), "hi")
    assert code == 1 and "not a model directory" in line
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"caf\xe9\n")
    code, line = error_of("--model", str(causal_dir), "--prompts-file", str(latin))
    assert code == 1 and "not UTF-8 text" in line and "latin.txt" in line
    code, line = error_of("--model", str(causal_dir), "word " * 80, "-n", "10", "--no-truncate")
    assert code == 2 and "prompt 1 has" in line
    code, line = error_of("--model", str(tiny_model_dir("masked")), "no mask at all")
    assert code == 2 and "has no mask" in line and "[MASK]" in line
    code, line = error_of("--model", str(causal_dir), "--model", str(tiny_model_dir("masked")), "a [MASK]")
    assert code == 2 and "one kind at a time" in line
    code, line = error_of("--model", str(causal_dir), "hi", "--top-p", "2")
    assert code == 2 and "--top-p" in line
    code, line = error_of("--model", str(causal_dir), "hi", "--precision", "fp8")
    assert code == 2 and "--precision" in line


def test_cli_truncation_warns_on_stderr(causal_dir):
    result = invoke("--model", str(causal_dir), "word " * 80, "-n", "10", "--json", "--quiet")
    assert result.exit_code == 0
    assert "warning: prompt 1 has" in result.stderr
    assert json.loads(result.stdout)["prompt_tokens"] == 54


def test_cli_fill_mask_tsv_and_json(tiny_model_dir):
    from lmctl.workflows.generate import fill_mask, load_model

    path = str(tiny_model_dir("masked"))
    prompt = "The [MASK] is <mask>."
    loaded = load_model(path, device="cpu")
    expected = fill_mask(loaded.model, loaded.tokenizer, [prompt], top_k=3)[0]
    tsv = invoke("--model", path, prompt, "--top-k", "3")
    assert tsv.exit_code == 0, tsv.output
    rows = [line.split("\t") for line in tsv.stdout.splitlines()]
    assert [(r[0], r[1], r[2]) for r in rows] == [("1", str(m), str(k)) for m in (1, 2) for k in (1, 2, 3)]
    assert [r[3] for r in rows] == [c.token for m in expected.masks for c in m]
    record = json.loads(invoke("--model", path, prompt, "--top-k", "3", "--json").stdout)
    assert record["prompt"] == prompt and record["model"] == path
    assert [[c["token_id"] for c in m] for m in record["masks"]] == [
        [c.token_id for c in m] for m in expected.masks
    ]
    assert all(set(c) >= {"token", "score"} for m in record["masks"] for c in m)
    warned = invoke("--model", path, prompt, "--temperature", "0.5")
    assert "--temperature does not apply to fill-mask" in warned.stderr


def test_cli_compares_models_side_by_side(causal_dir, tiny_model_dir, permuted_dir):
    a, b = str(causal_dir), str(tiny_model_dir("causal"))
    plain = invoke("--model", a, "--model", b, *PROMPTS[:2], "--greedy", "-n", "6")
    assert plain.exit_code == 0, plain.output
    assert plain.stdout.startswith(f"==> {a} <==\n") and f"\n\n==> {b} <==\n" in plain.stdout
    records = [
        json.loads(line)
        for line in invoke(
            "--model", a, "--model", b, *PROMPTS[:2], "--greedy", "-n", "6", "--json"
        ).stdout.splitlines()
    ]
    assert [(r["model"], r["prompt"]) for r in records] == [(m, p) for m in (a, b) for p in PROMPTS[:2]]
    # Each model's results are what it gives alone (same seed, same settings).
    alone = [
        json.loads(line)
        for line in invoke("--model", b, *PROMPTS[:2], "--seed", "4", "-n", "6", "--json").stdout.splitlines()
    ]
    pair = [
        json.loads(line)
        for line in invoke(
            "--model", a, "--model", b, *PROMPTS[:2], "--seed", "4", "-n", "6", "--json"
        ).stdout.splitlines()
    ]
    assert [r["text"] for r in pair[2:]] == [r["text"] for r in alone]
    masks = invoke(
        "--model",
        str(tiny_model_dir("masked")),
        "--model",
        str(tiny_model_dir("electra")),
        "A [MASK].",
        "-k",
        "2",
    )
    assert [line.split("\t")[0] for line in masks.stdout.splitlines()] == [
        str(tiny_model_dir("masked"))
    ] * 2 + [str(tiny_model_dir("electra"))] * 2


def test_terminal_tables_escape_user_text():
    from rich.console import Console

    from lmctl.cli.generate import build_tables
    from lmctl.workflows.generate import FillMaskResult, GenerationResult, MaskCandidate

    texts = [
        GenerationResult(
            prompt="[bold]p[/bold]",
            text=f"[red]{m}[/red]",
            tokens=1,
            finish_reason="length",
            tokens_per_s=1.0,
            model=m,
        )
        for m in ("model-a", "model-b")
    ]
    masks = [FillMaskResult(prompt="x [MASK]", masks=[[MaskCandidate("[/]", 0.5, 7)]], model="m")]
    console = Console(record=True, width=120)
    for table in build_tables(texts, ["model-a", "model-b"]) + build_tables(masks, ["m"]):
        console.print(table)
    shown = console.export_text()
    assert "[bold]p[/bold]" in shown and "[red]model-a[/red]" in shown and "[red]model-b[/red]" in shown
    assert "[/]" in shown and "x [MASK]" in shown and "0.5000" in shown


def test_interactive_loop_answers_each_line_until_eof(causal_dir, tiny_model_dir):
    import io

    from lmctl.cli.generate import interactive
    from lmctl.workflows.generate import GenerateConfig, GenerationSettings

    lines = iter(["Hello", "", "The quick brown fox"])

    def read_line(prompt: str) -> str:
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    out, messages = io.StringIO(), []
    config = GenerateConfig(
        models=[str(causal_dir)], settings=GenerationSettings(greedy=True, max_new_tokens=5)
    )
    answered = interactive(
        config, json_lines=True, report=messages.append, read_line=read_line, stream=out, warn=messages.append
    )
    assert answered == 2
    assert [json.loads(line)["prompt"] for line in out.getvalue().splitlines()] == [
        "Hello",
        "The quick brown fox",
    ]
    # A bad prompt is reported and the loop goes on.
    lines = iter(["no mask", "a [MASK]"])
    out, messages = io.StringIO(), []
    config = GenerateConfig(models=[str(tiny_model_dir("masked"))], settings=GenerationSettings())
    kwargs = dict(
        json_lines=True, report=messages.append, read_line=read_line, stream=out, warn=messages.append
    )
    assert interactive(config, **kwargs) == 1
    assert any(m.startswith("error: prompt 1 has no mask") for m in messages)


def test_trust_remote_code_offline_and_device_reach_the_loader(monkeypatch, causal_dir):
    import lmctl.workflows.generate as gen

    seen = {}
    real = gen.load_model

    def spy(name, **kwargs):
        seen.update(kwargs)
        return real(name, **{**kwargs, "device": "cpu"})

    monkeypatch.setattr(gen, "load_model", spy)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    invoke("--model", str(causal_dir), "hi", "-n", "2")
    assert seen["trust_remote_code"] is False and seen["precision"] == "auto" and seen["device"] == "auto"
    invoke(
        "--model",
        str(causal_dir),
        "hi",
        "-n",
        "2",
        "--trust-remote-code",
        "--offline",
        "--precision",
        "fp32",
        "--device",
        "cpu",
    )
    assert seen["trust_remote_code"] is True and seen["precision"] == "fp32" and seen["device"] == "cpu"
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


def test_same_seed_gives_byte_identical_stdout_in_a_real_process(causal_dir):
    command = [
        sys.executable,
        "-m",
        "lmctl",
        "generate",
        "--model",
        str(causal_dir),
        "ROMEO:",
        "--seed",
        "0",
        "--max-new-tokens",
        "20",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    runs = [subprocess.run(command, capture_output=True, env=env, timeout=120, check=True) for _ in range(2)]
    assert runs[0].stdout == runs[1].stdout and runs[0].stdout.strip()
    assert b"tokens/s" in runs[0].stderr and b"tokens/s" not in runs[0].stdout
