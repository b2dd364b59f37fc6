"""LoRA / QLoRA adapters (peft), activation checkpointing and the memory plan (issue 17).

Tiny models (2 layers, hidden 32) built from config classes; the 124M figures come from
benchmarks/bench_memory.py (docs/scale.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import REPO, corpus_text, newest_checkpoint_step, write_prepared

runner = CliRunner()


def train_config(**kwargs):
    from lmctl.workflows.train.config import TrainConfig

    settings = dict(precision="fp32", max_steps=12, batch_size=4, block_size=32, eval_every=0, save_every=0,
                    log_every=1, lr=3e-3, warmup_steps=0)  # fmt: skip
    settings.update(kwargs)
    return TrainConfig(**settings)


def losses(out: Path) -> list[float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [row["train/loss"] for row in rows if "train/loss" in row]


@pytest.fixture
def causal_setup(tmp_path, tiny_model_dir, tokenizer_for):
    base = tiny_model_dir("causal", 64)
    data = write_prepared(tmp_path / "data", tokenizer_for("causal"), "causal", corpus_text(30_000), corpus_text(6_000)[-3000:])
    return base, data


@pytest.fixture
def masked_setup(tmp_path, tiny_model_dir, tokenizer_for):
    base = tiny_model_dir("masked", 64)
    data = write_prepared(tmp_path / "data-m", tokenizer_for("masked"), "masked", corpus_text(30_000), corpus_text(6_000)[-3000:])
    return base, data


def test_lora_trains_only_adapters_writes_a_peft_dir_and_loads_with_auto_class(tmp_path, causal_setup):
    import torch
    from peft import AutoPeftModelForCausalLM
    from safetensors.torch import load_file

    from lmctl.workflows.train.trainer import train

    base, data = causal_setup
    out = tmp_path / "lora"
    result = train(train_config(model=str(base), train=[str(data)], out=str(out), lora=True, max_steps=20, lr=1e-2, schedule="constant"))
    run = json.loads((out / "run.json").read_text())
    assert run["resolved"]["lora"] == {"r": 8, "alpha": 16.0, "dropout": 0.0, "targets": "all-linear", "quantize": None}
    trainable, total = run["resolved"]["trainable_parameters"], run["resolved"]["parameters"]
    # Independent count: r * (in + out) for each of GPT-2's 4 linear layers per block.
    h, f, layers = 32, 128, 2
    assert trainable == layers * 8 * ((h + 3 * h) + (h + h) + (h + f) + (f + h))
    assert trainable < total
    assert run["result"]["estimated_peak_memory_bytes"] > 0 and run["result"]["peak_memory_bytes"] > 0
    seen = losses(out)
    assert sum(seen[-4:]) / 4 < sum(seen[:4]) / 4 - 0.03, seen  # the fine-tune learns
    assert result.steps == 20
    files = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "tokenizer.json"} <= files
    assert "model.safetensors" not in files and "config.json" not in files
    assert f"base_model: {base}" in (out / "README.md").read_text()
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(base) and adapter["task_type"] == "CAUSAL_LM"
    weights = load_file(out / "adapter_model.safetensors")
    assert weights and all("lora_" in k for k in weights)
    assert not any("lm_head" in k or "wte" in k for k in weights)  # the output layer is not adapted

    # The adapter loads with peft's Auto class and gives the logits lmctl's merged loading gives.
    from lmctl.plugins.registry import get_family

    model = AutoPeftModelForCausalLM.from_pretrained(str(out)).eval()
    merged = get_family("causal").load_for_inference(str(out)).eval()
    plain = get_family("causal").load_pretrained(str(base)).eval()
    ids = torch.randint(0, 300, (2, 24))
    with torch.no_grad():
        a, b, c = model(input_ids=ids).logits, merged(input_ids=ids).logits, plain(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-5)
    assert (a - c).abs().max() > 1e-4  # the adapter changed the model


def test_export_merge_eval_and_generate_accept_an_adapter(tmp_path, causal_setup):
    import torch
    from peft import AutoPeftModelForCausalLM

    from lmctl.cli.app import app
    from lmctl.workflows.train.trainer import train

    base, data = causal_setup
    out = tmp_path / "lora"
    train(train_config(model=str(base), train=[str(data)], out=str(out), lora=True, max_steps=6))
    merged_dir = tmp_path / "merged"
    res = runner.invoke(app, ["export", str(out), "--merge", "--out", str(merged_dir)])
    assert res.exit_code == 0, res.output
    assert (merged_dir / "model.safetensors").is_file() and not (merged_dir / "adapter_config.json").exists()
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(str(merged_dir)).eval()
    peft_model = AutoPeftModelForCausalLM.from_pretrained(str(out)).eval()
    ids = torch.randint(0, 300, (2, 24))
    with torch.no_grad():
        assert torch.allclose(plain(input_ids=ids).logits, peft_model(input_ids=ids).logits, atol=1e-5)

    res = runner.invoke(app, ["export", str(out), "--out", str(tmp_path / "nomerge")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "nomerge" / "adapter_config.json").is_file()

    res = runner.invoke(app, ["eval", "--model", str(out), "--data", str(data), "--json"])
    assert res.exit_code == 0, res.output
    res_merged = runner.invoke(app, ["eval", "--model", str(merged_dir), "--data", str(data), "--json"])
    assert res_merged.exit_code == 0, res_merged.output
    loss = [json.loads(line)["loss"] for line in res.stdout.strip().splitlines() if line.startswith("{")]
    loss_merged = [json.loads(line)["loss"] for line in res_merged.stdout.strip().splitlines() if line.startswith("{")]
    assert loss and loss[0] == pytest.approx(loss_merged[0], abs=1e-5)

    res = runner.invoke(app, ["generate", "--model", str(out), "The", "--max-new-tokens", "5", "--seed", "0"])
    assert res.exit_code == 0, res.output


def test_lora_refusals(tmp_path, causal_setup):
    from lmctl.cli.app import app

    base, data = causal_setup
    cases = [
        (["--model", "gpt2", "--from-scratch", "--lora"], "--lora adapts pretrained weights"),
        (["--model", str(base), "--quantize", "4bit"], "add --lora"),
        (["--model", str(base), "--lora", "--quantize", "8bit"], "--quantize must be 4bit"),
        (["--model", str(base), "--lora", "--family", "permuted"], "does not support LoRA"),
        (["--model", str(base), "--lora", "--lora-targets", "no_such_module"], "--lora-targets"),
    ]
    for args, message in cases:
        res = runner.invoke(app, ["train", "--train", str(data), "--out", str(tmp_path / "x"), "-q", "--max-steps", "1", *args])
        assert res.exit_code == 2, (args, res.output)
        assert message in res.output, (args, res.output)
        assert len(res.output.strip().splitlines()) == 1, res.output


def test_activation_checkpointing_gives_the_same_losses(tmp_path, causal_setup):
    from lmctl.workflows.train.trainer import train

    base, data = causal_setup
    for lora in (False, True):
        a, b = tmp_path / f"plain-{lora}", tmp_path / f"ckpt-{lora}"
        train(train_config(model=str(base), train=[str(data)], out=str(a), lora=lora, max_steps=5, dropout=0.0))
        train(train_config(model=str(base), train=[str(data)], out=str(b), lora=lora, max_steps=5, dropout=0.0,
                           activation_checkpointing=True))  # fmt: skip
        assert json.loads((b / "run.json").read_text())["resolved"]["activation_checkpointing"] is True
        la, lb = losses(a), losses(b)
        assert len(la) == len(lb) == 5
        assert la == pytest.approx(lb, abs=1e-5), (lora, la, lb)


def test_activation_checkpointing_refused_for_a_model_without_it(tmp_path, tiny_model_dir, tokenizer_for):
    from lmctl.cli.app import app

    base = tiny_model_dir("permuted", 64)
    data = write_prepared(tmp_path / "d", tokenizer_for("permuted"), "permuted", corpus_text(10_000))
    res = runner.invoke(app, ["train", "--model", str(base), "--train", str(data), "--out", str(tmp_path / "x"), "-q",
                              "--max-steps", "1", "--gradient-checkpointing", "--block-size", "32"])  # fmt: skip
    assert res.exit_code == 2, res.output
    assert "does not support activation checkpointing" in res.output


def final_adapter(out: Path):
    from safetensors.torch import load_file

    return load_file(out / "adapter_model.safetensors")


@pytest.mark.parametrize("family_setup", ["causal_setup", "masked_setup"])
def test_sigkill_then_resume_gives_the_same_adapter(tmp_path, family_setup, request):
    """An uninterrupted run and one SIGKILLed after a checkpoint, then --resume auto, end with the
    same adapter weights (checkpoints hold the adapter, the optimizer state of the trainable
    parameters and the RNG; lora dropout 0.1 makes the RNG matter)."""
    import torch

    base, data = request.getfixturevalue(family_setup)
    args = ["train", "--model", str(base), "--train", str(data), "--lora", "--lora-dropout", "0.1", "--precision", "fp32",
            "--max-steps", "40", "--batch-size", "4", "--block-size", "32", "--save-every", "4", "--eval-every", "0",
            "--log-every", "1", "--lr", "3e-3", "--quiet"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    ref = tmp_path / "ref"
    subprocess.run([sys.executable, "-m", "lmctl", *args, "--out", str(ref)], env=env, check=True, capture_output=True)
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "lmctl", *args, "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 300
    while time.time() < deadline and newest_checkpoint_step(out) < 8 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "adapter_model.safetensors").exists(), "killed too late: the run had finished"
    saved = [p for p in (out / "checkpoints").iterdir() if (p / "trainer_state.json").is_file()]
    assert saved
    for checkpoint in saved:  # only the adapter (and the training state) is stored
        assert (checkpoint / "adapter_model.safetensors").is_file() and not (checkpoint / "model.safetensors").exists()
    subprocess.run([sys.executable, "-m", "lmctl", *args, "--out", str(out), "--resume", "auto"], env=env, check=True,
                   capture_output=True)  # fmt: skip
    a, b = final_adapter(ref), final_adapter(out)
    assert a.keys() == b.keys() and a
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key
    # the LoRA settings are part of the resume fingerprint
    res = subprocess.run([sys.executable, "-m", "lmctl", *args, "--out", str(out), "--resume", "auto", "--lora-r", "4"],
                         env=env, capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 2 and "lora" in res.stderr, res.stderr


def test_masked_lora_loads_with_auto_peft_model(tmp_path, masked_setup):
    import torch
    from peft import AutoPeftModel

    from lmctl.plugins.registry import get_family
    from lmctl.workflows.train.trainer import train

    base, data = masked_setup
    out = tmp_path / "mlora"
    train(train_config(model=str(base), train=[str(data)], out=str(out), lora=True, max_steps=20, lr=5e-3))
    seen = losses(out)
    assert sum(seen[-4:]) / 4 < sum(seen[:4]) / 4, seen
    model = AutoPeftModel.from_pretrained(str(out)).eval()
    assert type(model.base_model.model).__name__.endswith("ForMaskedLM")
    merged = get_family("masked").load_for_inference(str(out)).eval()
    ids = torch.randint(5, 300, (2, 24))
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, merged(input_ids=ids).logits, atol=1e-5)


@pytest.mark.slow
def test_qlora_loss_falls_and_the_adapter_reloads_onto_the_4bit_base(tmp_path, causal_setup):
    pytest.importorskip("bitsandbytes")
    import torch
    from peft import PeftModel

    from lmctl.kit.adapters import quantization_config
    from lmctl.workflows.train.trainer import Trainer

    base, data = causal_setup
    out = tmp_path / "qlora"
    trainer = Trainer(train_config(model=str(base), train=[str(data)], out=str(out), lora=True, quantize="4bit",
                                   max_steps=20, eval_every=5, save_every=10, lr=1e-2, schedule="constant"))  # fmt: skip
    trainer.setup()
    assert any(type(m).__name__ == "Linear4bit" for m in trainer.model.modules())
    trainer.run()
    seen = losses(out)
    assert sum(seen[-4:]) / 4 < sum(seen[:4]) / 4 - 0.03, seen
    assert json.loads((out / "run.json").read_text())["resolved"]["lora"]["quantize"] == "4bit"
    model = trainer.accelerator.unwrap_model(trainer.model).eval()
    ids = torch.randint(0, 300, (2, 24))
    with torch.no_grad():
        ref = model(input_ids=ids).logits
    from transformers import AutoModelForCausalLM

    from lmctl.kit.adapters import keep_4bit_training_layout

    fresh = AutoModelForCausalLM.from_pretrained(str(base), quantization_config=quantization_config(), device_map="cpu")
    keep_4bit_training_layout(fresh)  # as lmctl keeps it (bitsandbytes' CPU inference repacking is fragile)
    reloaded = PeftModel.from_pretrained(fresh, str(out)).eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, ref, atol=1e-5)


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, monkeypatch):
    from lmctl.cli.app import app

    monkeypatch.setenv("LMCTL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    data = tmp_path / "data.txt"
    data.write_text(corpus_text(20_000))
    before = set(tmp_path.rglob("*"))
    res = runner.invoke(app, ["train", "--model", "gpt2", "--from-scratch", "--model-config", "vocab_size=50257",
                              "--model-config", "n_positions=1024", "--train", str(data), "--out", str(tmp_path / "run"),
                              "--dry-run", "--block-size", "256", "--batch-size", "2", "--precision", "fp32"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "parameters:" in res.stdout and "124,439,808" in res.stdout  # GPT-2 small (tied output layer)
    assert "estimated peak memory:" in res.stdout
    assert set(tmp_path.rglob("*")) == before  # no --out, no prepare cache, no precision cache


def test_memory_plan_matches_the_documented_formula():
    """The estimate recomputed by hand from the module docstring's formula (GPT-2 124M, fp32)."""
    from lmctl.core import memory_plan as mp

    cfg = {"model_type": "gpt2", "n_layer": 12, "n_embd": 768, "n_head": 12, "vocab_size": 50257, "n_positions": 1024,
           "n_inner": None, "activation_function": "gelu_new", "resid_pdrop": 0.0, "embd_pdrop": 0.0,
           "attn_pdrop": 0.0, "tie_word_embeddings": True}  # fmt: skip
    P = 124_439_808
    plan = mp.estimate_memory(cfg, batch_size=2, block_size=256)
    assert plan.total_params == P
    N, h, L, V, f = 512, 768, 12, 50257, 3072
    layer = N * h * (4 * (9 + 5 * f / h))  # no dropout: no masks, fused SDPA (no scores)
    acts = L * layer + N * h * 8
    expected = 4 * P + 4 * P + (8 * P + 4 * V * h) + acts + N * V * 12 + mp.DEFAULT_BASELINE + mp.DEFAULT_RUNTIME
    assert plan.total == pytest.approx(expected, rel=1e-9)
    ckpt = mp.estimate_memory(cfg, batch_size=4, block_size=1024, activation_checkpointing=True)
    full = mp.estimate_memory(cfg, batch_size=4, block_size=1024)
    assert ckpt.activations < full.activations / 5
    lora = mp.estimate_memory(cfg, batch_size=2, block_size=256, lora={"r": 8})
    assert lora.trainable_params == 1_179_648 and lora.trainable_params / P < 0.01  # r=8 trains < 1%


def test_memory_warning_line():
    from lmctl.workflows.train.trainer import memory_warning

    assert memory_warning(10 << 30, 20 << 30) is None
    assert memory_warning(10 << 30, None) is None
    line = memory_warning(30 << 30, 20 << 30)
    assert line.startswith("warning: the estimated peak memory (30.00 GiB) exceeds the available memory (20.00 GiB)")


def test_activation_checkpointing_for_electra_from_scratch(tmp_path, tokenizer_for):
    from lmctl.workflows.train.trainer import train

    data = write_prepared(tmp_path / "d", tokenizer_for("electra"), "electra", corpus_text(20_000))
    runs = []
    for flag in (False, True):
        out = tmp_path / f"e-{flag}"
        train(train_config(model="electra", from_scratch=True, preset="tiny", train=[str(data)], out=str(out),
                           max_steps=4, activation_checkpointing=flag))  # fmt: skip
        runs.append(losses(out))
    assert runs[0] == pytest.approx(runs[1], abs=1e-5)


def test_a_run_whose_estimate_exceeds_the_available_memory_says_so(tmp_path, causal_setup, monkeypatch):
    import lmctl.workflows.train.trainer as trainer_module
    from lmctl.cli.app import app

    base, data = causal_setup
    monkeypatch.setattr(trainer_module, "available_memory_bytes", lambda device: 1 << 20)
    res = runner.invoke(app, ["train", "--model", str(base), "--train", str(data), "--out", str(tmp_path / "run"),
                              "--max-steps", "1", "--precision", "fp32", "--eval-every", "0", "--block-size", "32"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "warning: the estimated peak memory" in res.output and "exceeds the available memory (1 MiB)" in res.output
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["result"]["estimated_peak_memory_bytes"] == run["resolved"]["memory_estimate"]["total_bytes"]
