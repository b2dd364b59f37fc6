"""--strategy and accelerate configs: each request honoured or refused by name, in one line, before
anything is built; elastic batch re-derivation.  (The multi-process runs are in
tests/test_train_distributed.py.)"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from lmctl.errors import UsageError
from lmctl.workflows.train.strategy import elastic_batch, resolve_strategy
from tests.conftest import corpus_text, write_prepared

runner = CliRunner()

FSDP2_ENV = {
    "ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_SHARDING_STRATEGY": "FULL_SHARD",
    "FSDP_RESHARD_AFTER_FORWARD": "true", "FSDP_OFFLOAD_PARAMS": "false", "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
    "FSDP_STATE_DICT_TYPE": "SHARDED_STATE_DICT", "FSDP_ACTIVATION_CHECKPOINTING": "false",
}  # fmt: skip


def test_fsdp2_config_is_honoured_setting_by_setting():
    strategy = resolve_strategy("ddp", FSDP2_ENV)
    assert (strategy.name, strategy.source, strategy.reshard_after_forward) == ("fsdp", "the accelerate config", True)
    shard_grad_op = resolve_strategy("ddp", {**FSDP2_ENV, "FSDP_SHARDING_STRATEGY": "SHARD_GRAD_OP"})
    assert shard_grad_op.reshard_after_forward is False
    blocks = resolve_strategy("ddp", {**FSDP2_ENV, "FSDP_TRANSFORMER_CLS_TO_WRAP": "GPT2Block"})
    assert blocks.block_names == ["GPT2Block"]
    checkpointing = resolve_strategy("ddp", {**FSDP2_ENV, "FSDP_ACTIVATION_CHECKPOINTING": "true"})
    assert checkpointing.activation_checkpointing and "activation checkpointing" in checkpointing.describe()


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"FSDP_VERSION": "1"}, "FSDP version 1"),
        ({"FSDP_OFFLOAD_PARAMS": "true"}, "fsdp_offload_params"),
        ({"FSDP_SHARDING_STRATEGY": "NO_SHARD"}, "NO_SHARD"),
        ({"FSDP_SHARDING_STRATEGY": "HYBRID_SHARD"}, "HYBRID_SHARD"),
        ({"FSDP_AUTO_WRAP_POLICY": "SIZE_BASED_WRAP"}, "SIZE_BASED_WRAP"),
        ({"ACCELERATE_USE_DEEPSPEED": "true"}, "both FSDP and DeepSpeed"),
    ],
)
def test_fsdp_settings_lmctl_cannot_honour_are_refused_by_name(change, named):
    with pytest.raises(UsageError, match=named):
        resolve_strategy("ddp", {**FSDP2_ENV, **change})


def test_deepspeed_config_and_strategy_conflicts():
    strategy = resolve_strategy("ddp", {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "1"})
    assert (strategy.name, strategy.deepspeed_stage) == ("deepspeed", 1)
    with pytest.raises(UsageError, match="conflicts"):
        resolve_strategy("fsdp", {"ACCELERATE_USE_DEEPSPEED": "true"})
    with pytest.raises(UsageError, match="conflicts"):
        resolve_strategy("deepspeed", FSDP2_ENV)


@pytest.mark.parametrize(
    ("global_batch", "world", "batch_size", "expected"),
    [(8, 1, 4, (4, 2)), (8, 2, 4, (4, 1)), (8, 4, 4, (2, 1)), (12, 1, 5, (4, 3)), (6, 1, 4, (3, 2)), (8, 1, 8, (8, 1))],
)
def test_elastic_batch_keeps_the_global_batch(global_batch, world, batch_size, expected):
    micro, accum = elastic_batch(global_batch, world, batch_size)
    assert (micro, accum) == expected
    assert micro * accum * world == global_batch and micro <= batch_size


def test_elastic_batch_that_cannot_be_kept_says_why():
    with pytest.raises(UsageError, match="global batch of 8 sequences cannot be split over 3 processes"):
        elastic_batch(8, 3, 4)


@pytest.fixture
def prepared(tmp_path, tokenizer_for):
    return write_prepared(tmp_path / "data", tokenizer_for("causal"), "causal", corpus_text(20_000))


def train_args(prepared, out, *extra):
    return ["train", "--model", "gpt2", "--from-scratch", "--preset", "tiny", "--train", str(prepared), "--max-steps", "4",
            "--block-size", "32", "--batch-size", "4", "--eval-every", "0", "--save-every", "2", "--precision", "fp32",
            "--dropout", "0", "--quiet", "--out", str(out), *extra]  # fmt: skip


@pytest.mark.parametrize(
    ("env", "extra", "line"),
    [
        ({}, ["--strategy", "deepspeed"], "--strategy deepspeed needs CUDA GPUs and this machine has none"),
        ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"}, [], "--strategy deepspeed needs CUDA"),
        ({**FSDP2_ENV, "FSDP_VERSION": "1"}, [], "asks for FSDP version 1; lmctl trains FSDP version 2"),
        ({**FSDP2_ENV, "FSDP_OFFLOAD_PARAMS": "true"}, [], "fsdp_offload_params is not supported"),
        ({"LMCTL_ASKED_WORLD_SIZE": "2"}, [], "started 1 process although 2 were asked"),
        ({}, ["--strategy", "fsdp", "--precision", "fp16"], "--strategy fsdp trains in fp32 or bf16"),
    ],
    ids=["strategy-deepspeed", "deepspeed-config", "fsdp1-config", "fsdp2-offload", "one-process-of-two", "fsdp-fp16"],
)
def test_requests_that_cannot_run_here_fail_in_one_line_before_training(tmp_path, prepared, monkeypatch, env, extra, line):
    from lmctl.cli.app import app

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "out"
    result = runner.invoke(app, train_args(prepared, out, *extra))
    assert result.exit_code == 2, result.output
    assert line in result.output
    assert "Traceback" not in result.output
    assert not (out / "metrics.jsonl").exists() and not (out / "checkpoints").exists()


def test_fsdp2_config_in_one_process_trains_as_fsdp_with_sharded_checkpoints(tmp_path, prepared, monkeypatch):
    """One process: nothing to shard over, but the checkpoints are DCP (so they resume on N processes)
    and the run says it trained as FSDP from the accelerate config; resuming is exact."""
    from lmctl.cli.app import app

    for key, value in FSDP2_ENV.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "out"
    result = runner.invoke(app, train_args(prepared, out))
    assert result.exit_code == 0, result.output
    resolved = json.loads((out / "run.json").read_text())["resolved"]
    assert (resolved["strategy"], resolved["strategy_source"], resolved["world_size"]) == ("fsdp", "the accelerate config", 1)
    step2 = out / "checkpoints" / "step-2"
    assert (step2 / ".metadata").is_file() and json.loads((step2 / "trainer_state.json").read_text())["layout"] == "sharded"

    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    import shutil

    shutil.copytree(step2, resumed / "checkpoints" / "step-2")
    result = runner.invoke(app, train_args(prepared, resumed, "--resume", "auto"))
    assert result.exit_code == 0, result.output
    from safetensors.torch import load_file

    a, b = load_file(str(out / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) == 0.0

    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    result = runner.invoke(app, train_args(prepared, resumed, "--resume", "auto"))
    assert result.exit_code == 2 and "was written with --strategy fsdp: resume it with --strategy fsdp" in result.output
