"""lmctl on a CUDA GPU: precision, the fused loss, eval, generate, resume, DDP on NCCL, compile, and
the features that exist only for GPUs (LoRA/QLoRA, activation checkpointing, FSDP2, the memory plan).

Marked ``gpu`` (not in the default suite) and skipped without CUDA; ``benchmarks/gpu.py`` runs them
on a lent GPU.  Tests of a flag that ``lmctl train`` does not have (yet) skip, so they start
checking as soon as the feature lands.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FAMILY_SETUP, REPO, corpus_text, write_prepared

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


# --- helpers --------------------------------------------------------------------------------------


def tiny_config(prepared: Path, out: Path, family: str, **overrides):
    from lmctl.workflows.train.config import TrainConfig

    settings = dict(
        model=FAMILY_SETUP[family][0], from_scratch=True, preset="tiny", train=[str(prepared)], out=str(out),
        max_steps=12, batch_size=8, block_size=32, log_every=1, eval_every=0, eval_batches=4, lr=3e-3,
        dropout=0.0, precision="bf16",
    )  # fmt: skip
    settings.update(overrides)
    return TrainConfig(**settings)


def losses_by_step(metrics) -> dict[int, float]:
    return {m["step"]: m["train/loss"] for m in metrics if "train/loss" in m}


@functools.lru_cache(maxsize=1)
def train_flags() -> frozenset[str]:
    """Every option ``lmctl train --help`` lists (read from the Typer command itself)."""
    import typer.main

    from lmctl.cli.app import app

    command = typer.main.get_command(app)
    params = command.commands["train"].params
    return frozenset(opt for p in params for opt in [*p.opts, *getattr(p, "secondary_opts", [])])


def needs_flags(*flags: str) -> None:
    missing = [f for f in flags if f not in train_flags()]
    if missing:
        pytest.skip(f"lmctl train has no {', '.join(missing)} yet")


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip


def lmctl_cli(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "lmctl", *map(str, args)], cwd=cwd, env=env(),
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def read_run(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


def metrics_losses(out: Path) -> dict[int, float]:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return losses_by_step(lines)


@pytest.fixture
def causal_data(tmp_path, tokenizer_for) -> Path:
    return write_prepared(tmp_path / "data", tokenizer_for("causal"), "causal", corpus_text(40_000))


# --- precision: every family trains a few steps in bf16 and fp16 ----------------------------------


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("family", sorted(FAMILY_SETUP))
def test_each_family_trains_in_half_precision_on_cuda(family, precision, tmp_path, tokenizer_for):
    from lmctl.workflows.train.trainer import train

    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    prepared = write_prepared(tmp_path / "data", tokenizer_for(family), family, corpus_text(40_000))
    torch.cuda.reset_peak_memory_stats()
    result = train(tiny_config(prepared, tmp_path / "run", family, precision=precision), quiet=True)
    assert result.interrupted is None and result.steps == 12
    losses = losses_by_step(result.metrics)
    assert all(v == v and abs(v) < 1e4 for v in losses.values()), losses
    assert losses[12] < losses[1], losses
    run = read_run(tmp_path / "run")
    assert run["resolved"]["precision"] == precision
    # run.json records the peak CUDA memory of the run (torch.cuda.max_memory_allocated).
    peak = run["result"]["peak_memory_bytes"]
    assert 0 < peak <= torch.cuda.max_memory_allocated()


def test_auto_precision_on_cuda_is_bf16_where_supported(causal_data, tmp_path):
    from lmctl.workflows.train.trainer import train

    train(tiny_config(causal_data, tmp_path / "run", "causal", precision="auto", max_steps=2), quiet=True)
    expected = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    assert read_run(tmp_path / "run")["resolved"]["precision"] == expected


def test_fp16_gradient_overflow_lowers_the_loss_scale_instead_of_stopping(causal_data, tmp_path, monkeypatch):
    """A loss scale of 2^40 overflows fp16 gradients for the first ~24 steps: the scaler must skip
    those updates and halve its scale each time; lmctl's NaN guard must not stop the run."""
    from lmctl.workflows.train.trainer import Trainer

    original = torch.amp.GradScaler.__init__

    def huge_scale(self, *args, **kwargs):
        kwargs["init_scale"] = 2.0**40
        original(self, *args, **kwargs)

    monkeypatch.setattr(torch.amp.GradScaler, "__init__", huge_scale)
    trainer = Trainer(tiny_config(causal_data, tmp_path / "run", "causal", precision="fp16", max_steps=60), quiet=True)
    trainer.setup()
    result = trainer.run()
    assert result.interrupted is None and result.steps == 60
    assert not any("nan_skipped" in m for m in result.metrics)
    assert trainer.accelerator.scaler.get_scale() < 2.0**30  # lowered at each overflow
    # The first steps changed nothing (skipped by the scaler); the later ones learned.
    losses = losses_by_step(result.metrics)
    assert losses[60] < losses[1] - 0.1, losses


# --- the fused output layer's loss against F.cross_entropy on CUDA -------------------------------


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_fused_loss_matches_cross_entropy_on_cuda(autocast, smoothing):
    """Several GPU-sized chunks (50,304 classes), ignored rows, fp32 and bf16 autocast."""
    import torch.nn.functional as F

    from lmctl.kit.losses import IGNORE, LinearCrossEntropy, _chunk_rows

    gen = torch.Generator(device="cuda").manual_seed(0)
    n, d, vocab = 4096, 256, 50304
    device = torch.device("cuda")
    assert _chunk_rows(n, vocab, device) < n  # the test crosses chunk boundaries
    hidden = (torch.randn(n, d, device=device, generator=gen) * 0.5).requires_grad_()
    weight = (torch.randn(vocab, d, device=device, generator=gen) * 0.05).requires_grad_()
    targets = torch.randint(0, vocab, (n,), device=device, generator=gen)
    targets[::7] = IGNORE
    dtype = torch.bfloat16
    ctx = torch.autocast("cuda", dtype=dtype) if autocast else torch.autocast("cuda", enabled=False)
    with ctx:
        fused = LinearCrossEntropy.apply(hidden, weight, targets, smoothing)
    fused.backward()
    grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    with ctx:
        logits = hidden @ weight.t()
    reference = F.cross_entropy(logits.float(), targets, ignore_index=IGNORE, reduction="sum", label_smoothing=smoothing)
    reference.backward()
    tol = 2e-2 if autocast else 1e-4
    assert fused.dtype == torch.float32
    assert torch.allclose(fused, reference, rtol=tol / 10), (fused.item(), reference.item())
    assert torch.allclose(grads[0], hidden.grad, rtol=tol, atol=tol * hidden.grad.abs().max().item())
    assert torch.allclose(grads[1], weight.grad, rtol=tol, atol=tol * weight.grad.abs().max().item())


# --- eval and generate on CUDA --------------------------------------------------------------------


def test_eval_on_cuda_matches_cpu(tiny_model_dir, causal_data, tmp_path):
    model = tiny_model_dir("causal")
    common = ["eval", "--model", model, "--data", causal_data, "--split", "train", "--block-size", "32", "--json"]
    cpu = json.loads(lmctl_cli(*common, "--device", "cpu", "--precision", "fp32", cwd=tmp_path).stdout.splitlines()[-1])
    gpu = json.loads(lmctl_cli(*common, "--device", "cuda", "--precision", "fp32", cwd=tmp_path).stdout.splitlines()[-1])
    half = json.loads(lmctl_cli(*common, "--device", "cuda", "--precision", "auto", cwd=tmp_path).stdout.splitlines()[-1])
    assert gpu["tokens"] == cpu["tokens"] and gpu["settings"]["device"].startswith("cuda")
    assert gpu["loss"] == pytest.approx(cpu["loss"], rel=1e-4)
    assert half["loss"] == pytest.approx(cpu["loss"], rel=2e-2)


def test_generate_on_cuda_matches_model_generate(tiny_model_dir):
    """Greedy: lmctl's ids are model.generate's, same weights, dtype and device; sampling is
    reproducible with a seed."""
    from lmctl.workflows.generate import (
        GenerationSettings,
        continuation_text,
        encode_prompt,
        generate_text,
        load_model,
    )

    loaded = load_model(str(tiny_model_dir("causal")), device="cuda", precision="auto")
    model, tok = loaded.model, loaded.tokenizer
    assert next(model.parameters()).device.type == "cuda"
    prompt = "The return statement"
    greedy = GenerationSettings(max_new_tokens=20, min_new_tokens=20, greedy=True, batch_size=1)
    ours = generate_text(model, tok, [prompt], greedy)[0]
    bos = model.generation_config.bos_token_id
    ids = encode_prompt(tok, prompt, bos_id=bos if isinstance(bos, int) else None)
    input_ids = torch.tensor([ids], device="cuda")
    with torch.inference_mode():
        out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                             max_new_tokens=20, min_new_tokens=20, pad_token_id=tok.pad_token_id,
                             eos_token_id=tok.eos_token_id)  # fmt: skip
    direct = continuation_text(tok, ids, out[0, len(ids) :].tolist())
    assert ours.tokens == 20 and ours.text == direct
    sampled = GenerationSettings(max_new_tokens=20, temperature=0.8, top_k=50, seed=3, batch_size=2)
    first = [r.text for r in generate_text(model, tok, [prompt, "A class"], sampled)]
    second = [r.text for r in generate_text(model, tok, [prompt, "A class"], sampled)]
    assert first == second


# --- resume, DDP, compile -------------------------------------------------------------------------


class StopAt:
    def __init__(self, step: int) -> None:
        self.step = step

    def on_log(self, event):
        import signal

        if event.get("step") == self.step and "train/loss" in event:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resume_is_exact_on_cuda(precision, causal_data, tmp_path):
    """30 steps straight == 15 steps, Ctrl-C, --resume auto to 30 (CUDA kernels are not all
    deterministic: atomics in the embedding backward; hence a small tolerance)."""
    from safetensors.torch import load_file

    from lmctl.plugins.registry import get_registry
    from lmctl.workflows.train.trainer import train

    common = dict(max_steps=30, dropout=0.1, grad_accum=2, batch_size=4, precision=precision)
    straight = train(tiny_config(causal_data, tmp_path / "a", "causal", **common), quiet=True)
    registry = get_registry()
    registry.callbacks["stop-at-15"] = StopAt(15)  # a callback runs only when the run names it
    try:
        first = train(
            tiny_config(causal_data, tmp_path / "b", "causal", save_every=0, callbacks=["stop-at-15"], **common), quiet=True
        )
    finally:
        del registry.callbacks["stop-at-15"]
    assert first.interrupted == "SIGINT" and first.steps == 15
    second = train(tiny_config(causal_data, tmp_path / "b", "causal", resume="auto", **common), quiet=True)
    assert second.steps == 30
    a = losses_by_step(straight.metrics)
    b = {**losses_by_step(first.metrics), **losses_by_step(second.metrics)}
    tol = 1e-4 if precision == "fp32" else 5e-3
    for step in a:
        assert a[step] == pytest.approx(b[step], abs=tol), step
    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=tol * 10), key


DDP_SCRIPT = """
import json, sys
import torch.distributed as dist
from lmctl.workflows.train.config import TrainConfig
from lmctl.workflows.train.trainer import Trainer

trainer = Trainer(TrainConfig(**json.loads(sys.argv[1])), quiet=True)
trainer.setup()
report = {"wrapper": type(trainer.model).__name__, "world": trainer.world,
          "backend": dist.get_backend() if dist.is_initialized() else None,
          "device": str(trainer.accelerator.device)}
result = trainer.run()
report["steps"] = result.steps
print("REPORT " + json.dumps(report))
"""


@pytest.mark.xdist_group("process-group")  # one worker: both start process groups
def test_world_size_1_nccl_process_group_through_torchrun(causal_data, tmp_path):
    config = dict(model="gpt2", from_scratch=True, preset="tiny", train=[str(causal_data)], out=str(tmp_path / "run"),
                  max_steps=6, batch_size=8, block_size=32, log_every=1, eval_every=0, precision="bf16")  # fmt: skip
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", str(script), json.dumps(config)],
        cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(re.search(r"^REPORT (.*)$", done.stdout, re.M).group(1))
    assert report == {**report, "wrapper": "DistributedDataParallel", "world": 1, "backend": "nccl", "steps": 6}
    assert report["device"].startswith("cuda")
    # The same through the CLI, launched by torchrun.
    cli = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m", "lmctl", "train",
         "--model", "gpt2", "--from-scratch", "--preset", "tiny", "--train", str(causal_data), "--max-steps", "4",
         "--block-size", "32", "--eval-every", "0", "--quiet", "--out", str(tmp_path / "cli")],
        cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert read_run(tmp_path / "cli")["status"] == "finished"


def test_compile_on_cuda_trains_like_eager(causal_data, tmp_path):
    args = ["train", "--model", "gpt2", "--from-scratch", "--preset", "tiny", "--train", causal_data, "--max-steps", "10",
            "--block-size", "32", "--batch-size", "8", "--eval-every", "0", "--log-every", "1", "--precision", "fp32",
            "--dropout", "0", "--quiet"]  # fmt: skip
    lmctl_cli(*args, "--out", tmp_path / "eager", cwd=tmp_path)
    lmctl_cli(*args, "--compile", "--out", tmp_path / "compiled", cwd=tmp_path)
    eager, compiled = metrics_losses(tmp_path / "eager"), metrics_losses(tmp_path / "compiled")
    assert sorted(eager) == sorted(compiled) == list(range(1, 11))
    for step in eager:
        assert compiled[step] == pytest.approx(eager[step], rel=1e-3), step


# --- features being built for GPUs: live as soon as `lmctl train` has the flag -------------------


def base_train_args(data: Path) -> list:
    return ["train", "--train", data, "--max-steps", "6", "--block-size", "32", "--batch-size", "8",
            "--eval-every", "0", "--log-every", "1", "--precision", "bf16", "--dropout", "0", "--quiet"]  # fmt: skip


def test_activation_checkpointing_gives_the_same_losses(causal_data, tmp_path):
    needs_flags("--activation-checkpointing")
    args = [*base_train_args(causal_data), "--model", "gpt2", "--from-scratch", "--model-config", "n_layer=4",
            "--model-config", "n_embd=128", "--model-config", "n_head=4"]  # fmt: skip
    lmctl_cli(*args, "--out", tmp_path / "plain", cwd=tmp_path)
    lmctl_cli(*args, "--activation-checkpointing", "--out", tmp_path / "ckpt", cwd=tmp_path)
    plain, ckpt = metrics_losses(tmp_path / "plain"), metrics_losses(tmp_path / "ckpt")
    for step in plain:
        assert ckpt[step] == pytest.approx(plain[step], rel=5e-3), step
    assert read_run(tmp_path / "ckpt")["status"] == "finished"


def test_lora_step_on_cuda(tiny_model_dir, causal_data, tmp_path):
    needs_flags("--lora")
    lmctl_cli(*base_train_args(causal_data), "--model", tiny_model_dir("causal"), "--lora", "--lr", "1e-3",
              "--out", tmp_path / "lora", cwd=tmp_path)  # fmt: skip
    losses = metrics_losses(tmp_path / "lora")
    assert read_run(tmp_path / "lora")["status"] == "finished" and len(losses) == 6
    assert all(v == v for v in losses.values())


def test_qlora_4bit_step_on_cuda(tiny_model_dir, causal_data, tmp_path):
    needs_flags("--lora", "--quantize")
    pytest.importorskip("bitsandbytes")
    lmctl_cli(*base_train_args(causal_data), "--model", tiny_model_dir("causal"), "--lora", "--quantize", "4bit",
              "--lr", "1e-3", "--out", tmp_path / "qlora", cwd=tmp_path)  # fmt: skip
    losses = metrics_losses(tmp_path / "qlora")
    assert read_run(tmp_path / "qlora")["status"] == "finished" and len(losses) == 6
    assert all(v == v for v in losses.values())


@pytest.mark.xdist_group("process-group")  # one worker: both start process groups
def test_fsdp2_one_process_step_on_cuda(causal_data, tmp_path):
    needs_flags("--strategy")
    args = [*base_train_args(causal_data), "--model", "gpt2", "--from-scratch", "--preset", "tiny", "--precision", "fp32"]
    lmctl_cli(*args, "--out", tmp_path / "ddp", cwd=tmp_path)
    lmctl_cli(*args, "--strategy", "fsdp", "--out", tmp_path / "fsdp", cwd=tmp_path)
    plain, sharded = metrics_losses(tmp_path / "ddp"), metrics_losses(tmp_path / "fsdp")
    assert read_run(tmp_path / "fsdp")["status"] == "finished"
    for step in plain:  # one shard holds everything: the same optimisation, to float rounding
        assert sharded[step] == pytest.approx(plain[step], rel=1e-3), step


def _bytes(text: str) -> int | None:
    """The first 'N GiB/MiB/GB/MB' figure in ``text``."""
    match = re.search(r"([\d.,]+)\s*(GiB|MiB|GB|MB|KiB)\b", text)
    if not match:
        return None
    scale = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "MB": 10**6, "GB": 10**9}[match.group(2)]
    return int(float(match.group(1).replace(",", "")) * scale)


def test_memory_plan_estimate_against_max_memory_allocated(causal_data, tmp_path):
    """``--dry-run``'s estimate of the peak against the run's measured peak (run.json:
    ``torch.cuda.max_memory_allocated``): within a factor of 1.5 either way on a model big enough
    for the estimate to matter (GPT-2, 6 layers, 384 wide, block 256)."""
    needs_flags("--dry-run")
    args = [*base_train_args(causal_data), "--model", "gpt2", "--from-scratch", "--model-config", "n_layer=6",
            "--model-config", "n_embd=384", "--model-config", "n_head=6", "--block-size", "256"]  # fmt: skip
    plan = lmctl_cli(*args, "--dry-run", "--out", tmp_path / "plan", cwd=tmp_path)
    text = plan.stdout + plan.stderr
    estimate = None
    for line in text.splitlines():  # the peak/total line of the plan, in any unit
        if re.search(r"peak|total|estimate", line, re.I):
            estimate = _bytes(line)
            if estimate:
                break
    assert estimate, f"no memory estimate found in --dry-run's output:\n{text[-2000:]}"
    lmctl_cli(*args, "--out", tmp_path / "run", cwd=tmp_path)
    measured = read_run(tmp_path / "run")["result"]["peak_memory_bytes"]
    assert measured / 1.5 <= estimate <= measured * 1.5, (estimate, measured)
