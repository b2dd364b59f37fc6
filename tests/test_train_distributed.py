"""Past one process, on 2 gloo CPU processes: FSDP (sharded, resumable, consolidated), two
"machines" on loopback with separate --out directories, and elastic resume (2 processes -> 1).

Every run is the real CLI in a subprocess.  The reference points are independent: 2-process DDP,
one process with twice the batch, and uninterrupted runs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, corpus_text, newest_checkpoint_step, write_prepared

pytestmark = pytest.mark.multiprocess

STEPS = 12
ADAPTER = "adapter_model.safetensors"


def env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}


def common(prepared: Path) -> list[str]:
    return ["--model", "gpt2", "--from-scratch", "--preset", "tiny", "--train", str(prepared), "--max-steps", str(STEPS),
            "--block-size", "32", "--log-every", "1", "--eval-every", "0", "--save-every", "4", "--keep-last", "5", "--dropout", "0",
            "--precision", "fp32", "--quiet"]  # fmt: skip


def lmctl(*args, cwd):
    return subprocess.Popen(
        [sys.executable, "-m", "lmctl", "train", *args], cwd=cwd, env=env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip


def finish(*procs):
    outputs = [proc.communicate(timeout=600) for proc in procs]
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
    return outputs


def run(*args, cwd):
    return finish(lmctl(*args, cwd=cwd))[0]


def process_tree(proc):
    """A run's processes: lmctl, torch's launcher and the workers (which sit in sessions of their own)."""
    import psutil

    root = psutil.Process(proc.pid)
    return [root, *root.children(recursive=True)]


def kill_after_checkpoint(procs, out: Path, step: int = 4):
    """SIGKILL every process of every run once ``out`` has a checkpoint at or after ``step``: each
    machine dies mid-run, workers included, and nothing gets to save."""
    import psutil

    deadline = time.time() + 600
    while newest_checkpoint_step(out) < step:
        assert all(p.poll() is None for p in procs), [p.communicate()[1][-2000:] for p in procs]
        assert time.time() < deadline
        time.sleep(0.005)
    trees = [process_tree(proc) for proc in procs]
    for process in [p for tree in trees for p in tree]:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()  # psutil checks that the pid still names the same process
    for proc in procs:
        proc.wait()
    _gone, alive = psutil.wait_procs([p for tree in trees for p in tree], timeout=60)
    assert not alive, alive
    assert not (out / "model.safetensors").exists(), "the run finished before it was killed"


def kill_lmctl_alone(proc, out: Path):
    """SIGKILL the lmctl process only, once step 1 is logged; wait for the rest of its tree to end."""
    import psutil

    metrics = out / "metrics.jsonl"
    deadline = time.time() + 600
    while not (metrics.exists() and '"train/loss"' in metrics.read_text()):
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() < deadline
        time.sleep(0.005)
    tree = process_tree(proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _gone, alive = psutil.wait_procs(tree, timeout=90)
    assert not alive, f"workers outlived a SIGKILL of lmctl: {alive}"


def losses(out: Path) -> dict[int, float]:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {e["step"]: e["train/loss"] for e in lines if "train/loss" in e}


def weights(out: Path, file: str = "model.safetensors"):
    from safetensors.torch import load_file

    return load_file(str(out / file))


def max_diff(a: Path, b: Path, file: str = "model.safetensors") -> float:
    """The largest difference between two runs' saved tensors (the model, or ``file``: an adapter)."""
    wa, wb = weights(a, file), weights(b, file)
    assert set(wa) == set(wb) and wa
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def save_tiny_llama(path: Path, tokenizer) -> Path:
    """A pretrained-model directory: a 2-layer Llama (rotary buffers, no tied weights) and its tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
    ))  # fmt: skip
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def prepared(tmp_path, tokenizer_for):
    return write_prepared(tmp_path / "data", tokenizer_for("causal"), "causal", corpus_text(30_000))


def test_fsdp_shards_matches_ddp_resumes_exactly_and_elastically(tmp_path, prepared):
    args = common(prepared)
    ddp, fsdp, killed = tmp_path / "ddp", tmp_path / "fsdp", tmp_path / "killed"
    run(*args, "--batch-size", "4", "--num-processes", "2", "--out", str(ddp), cwd=tmp_path)
    run(*args, "--batch-size", "4", "--num-processes", "2", "--strategy", "fsdp", "--out", str(fsdp), cwd=tmp_path)

    # Each process holds half the parameters, read from its local shards.
    resolved = json.loads((fsdp / "run.json").read_text())["resolved"]
    assert resolved["strategy"] == "fsdp" and resolved["world_size"] == 2
    per_process, whole = resolved["parameter_bytes_per_process"], resolved["parameter_bytes"]
    assert len(per_process) == 2 and sum(per_process) == whole
    assert all(abs(b - whole / 2) / whole < 0.02 for b in per_process)
    assert json.loads((ddp / "run.json").read_text())["resolved"]["parameter_bytes_per_process"] == [whole, whole]

    # The loss curve matches 2-process DDP.
    one, two = losses(ddp), losses(fsdp)
    assert sorted(one) == sorted(two) == list(range(1, STEPS + 1))
    assert max(abs(one[s] - two[s]) for s in one) < 1e-4

    # Sharded checkpoints (DCP), and a consolidated final model any transformers can load.
    step4 = fsdp / "checkpoints" / "step-4"
    assert (step4 / "__0_0.distcp").is_file() and (step4 / "__1_0.distcp").is_file() and (step4 / ".metadata").is_file()
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(fsdp))
    saved = weights(fsdp)
    for name, tensor in model.state_dict().items():
        if name in saved:
            assert float((tensor - saved[name]).abs().max()) == 0.0
    assert max_diff(fsdp, ddp) < 1e-4

    # SIGKILL mid-run, then --resume auto: the same final weights as the uninterrupted run.
    procs = [lmctl(*args, "--batch-size", "4", "--num-processes", "2", "--strategy", "fsdp", "--out", str(killed), cwd=tmp_path)]
    kill_after_checkpoint(procs, killed)
    run(*args, "--batch-size", "4", "--num-processes", "2", "--strategy", "fsdp", "--out", str(killed), "--resume", "auto", cwd=tmp_path)
    assert max_diff(killed, fsdp) < 1e-5

    # SIGKILL of lmctl alone (a user's `kill -9`; the workers are in sessions of their own): the
    # kernel sends its launcher SIGTERM, the workers save the step they are at and stop; none
    # trains on.  --resume auto then ends as the uninterrupted run.
    alone = tmp_path / "lmctl-killed"
    proc = lmctl(*args, "--batch-size", "4", "--num-processes", "2", "--out", str(alone), cwd=tmp_path)
    kill_lmctl_alone(proc, alone)
    assert json.loads((alone / "run.json").read_text())["status"] == "SIGTERM"
    assert not (alone / "model.safetensors").exists()
    run(*args, "--batch-size", "4", "--num-processes", "2", "--out", str(alone), "--resume", "auto", cwd=tmp_path)
    assert max_diff(alone, ddp) < 1e-6

    # Elastic: the 2-process checkpoints of step 4 resumed on 1 process (4 x accumulation 2).
    for name, source in (("ddp", ddp), ("fsdp", fsdp)):
        out = tmp_path / f"elastic-{name}"
        (out / "checkpoints").mkdir(parents=True)
        shutil.copytree(source / "checkpoints" / "step-4", out / "checkpoints" / "step-4")
        run(*args, "--batch-size", "4", "--strategy", name, "--out", str(out), "--resume", "auto", cwd=tmp_path)
        resolved = json.loads((out / "run.json").read_text())["resolved"]
        assert (resolved["micro_batch"], resolved["grad_accum"], resolved["global_batch"], resolved["world_size"]) == (4, 2, 8, 1)
        assert max_diff(out, source) < 1e-4, name
        resumed = losses(out)
        assert max(abs(resumed[s] - losses(source)[s]) for s in resumed) < 1e-4


def test_two_machines_without_a_shared_filesystem(tmp_path, prepared):
    """Two commands, one process each, 127.0.0.1 only, --out directories that share nothing."""
    args = common(prepared)
    run(*args, "--batch-size", "8", "--out", str(tmp_path / "one"), cwd=tmp_path)

    def machines(name, *extra):
        port = str(free_port())
        outs = [tmp_path / name / f"machine{rank}" for rank in range(2)]
        procs = [
            lmctl(*args, "--batch-size", "4", "--num-machines", "2", "--machine-rank", str(rank), "--main-process-ip",
                  "127.0.0.1", "--main-process-port", port, "--out", str(outs[rank]), *extra, cwd=tmp_path)  # fmt: skip
            for rank in range(2)
        ]
        return outs, procs

    (m0, m1), procs = machines("whole")
    finish(*procs)
    assert max_diff(m0, tmp_path / "one") < 1e-4
    assert list(m1.iterdir()) == [], list(m1.rglob("*"))  # only the global main process writes
    record = json.loads((m0 / "run.json").read_text())["resolved"]
    assert record["world_size"] == 2 and record["num_machines"] == 2

    # SIGKILL both machines mid-run, then resume both: identical to the uninterrupted pair.
    (k0, k1), procs = machines("killed")
    kill_after_checkpoint(procs, k0)
    assert list(k1.iterdir()) == []
    (r0, r1), procs = machines("killed", "--resume", "auto")
    finish(*procs)
    assert max_diff(r0, m0) < 1e-6
    assert list(r1.iterdir()) == []


def test_two_machines_resume_a_finished_ddp_run(tmp_path, prepared):
    """--resume auto on a finished pair: machine 0 holds the last step's checkpoint and machine 1
    nothing, yet both must agree that it need not be saved again (a save is a collective: a machine
    saving alone fails on the other's closed connection).  Both finish with the same weights and
    machine 1's --out stays empty."""
    from lmctl.core.checkpoint import list_checkpoints

    args = [*common(prepared), "--batch-size", "4"]
    outs = [tmp_path / f"machine{rank}" for rank in range(2)]

    def machines(*extra):
        port = str(free_port())
        return [
            lmctl(*args, "--num-machines", "2", "--machine-rank", str(rank), "--main-process-ip", "127.0.0.1",
                  "--main-process-port", port, "--out", str(outs[rank]), *extra, cwd=tmp_path)  # fmt: skip
            for rank in range(2)
        ]

    finish(*machines())
    first = tmp_path / "first"
    shutil.copytree(outs[0], first)
    assert list_checkpoints(outs[0])[-1][0] == STEPS  # the last step is checkpointed; machine 1 has none
    finish(*machines("--resume", "auto"))
    assert max_diff(outs[0], first) < 1e-6
    assert json.loads((outs[0] / "run.json").read_text())["status"] == "finished"
    assert list(outs[1].iterdir()) == []


def test_two_machines_fsdp_keep_each_shard_on_its_machine(tmp_path, prepared):
    args = [*common(prepared), "--strategy", "fsdp", "--batch-size", "4"]
    port = str(free_port())

    def machines(*extra):
        return [
            lmctl(*args, "--num-machines", "2", "--machine-rank", str(rank), "--main-process-ip", "127.0.0.1",
                  "--main-process-port", port, "--out", str(tmp_path / f"machine{rank}"), *extra, cwd=tmp_path)  # fmt: skip
            for rank in range(2)
        ]

    procs = machines()
    kill_after_checkpoint(procs, tmp_path / "machine0", step=8)
    for rank in range(2):
        names = {p.name for p in (tmp_path / f"machine{rank}" / "checkpoints" / "step-8").iterdir()}
        assert f"__{rank}_0.distcp" in names and f"__{1 - rank}_0.distcp" not in names, names
    port = str(free_port())
    finish(*machines("--resume", "auto"))
    assert (tmp_path / "machine0" / "model.safetensors").is_file()
    assert not (tmp_path / "machine1" / "model.safetensors").exists()
    run(*common(prepared), "--batch-size", "8", "--out", str(tmp_path / "one"), cwd=tmp_path)  # 1 process, twice the batch
    assert max_diff(tmp_path / "machine0", tmp_path / "one") < 1e-4


def test_accelerate_fsdp2_config_trains_with_fsdp_and_activation_checkpointing(tmp_path, prepared):
    config = tmp_path / "fsdp2.yaml"
    config.write_text(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: FSDP\nfsdp_config:\n  fsdp_version: 2\n"
        "  fsdp_activation_checkpointing: true\n"
        "  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP\n  fsdp_reshard_after_forward: true\n"
        "  fsdp_state_dict_type: SHARDED_STATE_DICT\nmixed_precision: 'no'\nnum_machines: 1\nnum_processes: 2\nuse_cpu: false\n"
    )
    out = tmp_path / "out"
    raw = tmp_path / "corpus.txt"  # raw text: prepared into the cache by one process, then read by all
    raw.write_text(corpus_text(20_000))
    args = [str(raw) if arg == str(prepared) else arg for arg in common(prepared)]
    completed = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "-m", "lmctl", "train",
         *args, "--tokenizer", str(prepared / "tokenizer"), "--max-steps", "4", "--batch-size", "4", "--out", str(out)],  # fmt: skip
        cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    resolved = json.loads((out / "run.json").read_text())["resolved"]
    assert resolved["strategy"] == "fsdp" and resolved["strategy_source"] == "the accelerate config"
    assert resolved["strategy_settings"] == ["activation checkpointing"]
    assert resolved["world_size"] == 2 and max(resolved["parameter_bytes_per_process"]) < resolved["parameter_bytes"]
    # The same curve as one process with the whole batch, without checkpointing.
    one = tmp_path / "one"
    run(*args, "--tokenizer", str(prepared / "tokenizer"), "--max-steps", "4", "--batch-size", "8", "--out", str(one), cwd=tmp_path)
    a, b = losses(out), losses(one)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    assert max(abs(a[s] - b[s]) for s in a) < 1e-4


def test_accelerate_launch_without_multi_gpu_is_refused(tmp_path, prepared):
    completed = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "-m", "lmctl", "train",
         *common(prepared), "--out", str(tmp_path / "out")],  # fmt: skip
        cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode != 0
    assert "accelerate launch started 1 process although 2 were asked: add --multi_gpu" in completed.stderr
    assert not (tmp_path / "out" / "metrics.jsonl").exists()


def test_fsdp_lora_and_activation_checkpointing_on_two_processes(tmp_path):
    """Library level: peft LoRA and non-reentrant activation checkpointing on a sharded model give
    the losses of one unsharded process with the whole batch."""
    script = tmp_path / "lora_fsdp.py"
    script.write_text(LORA_SCRIPT)
    results = {}
    for mode in ("single", "fsdp"):
        out = tmp_path / f"{mode}.json"
        if mode == "single":
            command = [sys.executable, str(script), mode, str(out)]
        else:
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                       str(script), mode, str(out)]  # fmt: skip
        completed = subprocess.run(command, env=env(), capture_output=True, text=True, timeout=600)
        assert completed.returncode == 0, completed.stderr[-3000:]
        results[mode] = json.loads(out.read_text())
    single, fsdp = results["single"], results["fsdp"]
    assert fsdp["trainable_sharded"] > 0 and fsdp["local_bytes"] < 0.6 * fsdp["full_bytes"]
    assert max(abs(a - b) for a, b in zip(single["losses"], fsdp["losses"], strict=True)) < 1e-5
    assert fsdp["losses"][-1] < fsdp["losses"][0]
    assert fsdp["consolidated_diff"] < 1e-5 and not fsdp["plain_is_sharded"]


LORA_SCRIPT = '''
import json, os, sys
import torch
import torch.distributed as dist
from peft import LoraConfig, get_peft_model
from transformers import GPT2Config, GPT2LMHeadModel
from lmctl.core import sharding

mode, out = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
base = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=256, n_positions=64,
                                  resid_pdrop=0, embd_pdrop=0, attn_pdrop=0))
base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
model = get_peft_model(base, LoraConfig(r=4, target_modules=["c_attn", "c_proj", "c_fc"], lora_dropout=0.0))
rank, world = 0, 1
if mode == "fsdp":
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    sharding.shard_model(model)
local, full = sharding.parameter_bytes(model)
model.train()
params = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=1e-2)
data = torch.randint(0, 256, (8, 32), generator=torch.Generator().manual_seed(1))
rows = data[rank * 8 // world:(rank + 1) * 8 // world]
losses = []
for step in range(3):
    loss = model(input_ids=rows, labels=rows).loss
    loss.backward()
    sharding.clip_grad_norm(params, 1.0)
    opt.step(); opt.zero_grad()
    value = loss.detach().clone()
    if world > 1:
        dist.all_reduce(value); value /= world
    losses.append(float(value))
# The consolidated model (gathered on rank 0, rebuilt unsharded) predicts what the trained one does.
state = sharding.full_model_state(model) if world > 1 else model.state_dict()
model.eval()
with torch.no_grad():
    logits = model(input_ids=data[:2]).logits  # every rank the same input (a sharded forward is collective)
if rank == 0:
    from torch.distributed.tensor import DTensor
    plain = sharding.unsharded_copy(model, state) if world > 1 else model
    plain.eval()
    with torch.no_grad():
        plain_logits = plain(input_ids=data[:2]).logits
    json.dump({"losses": losses, "local_bytes": local, "full_bytes": full,
               "trainable_sharded": sum(isinstance(p, DTensor) for p in params),
               "consolidated_diff": float((plain_logits - logits).abs().max()),
               "plain_is_sharded": any(isinstance(p, DTensor) for p in plain.parameters())}, open(out, "w"))
if world > 1:
    dist.destroy_process_group()
'''


def test_fsdp_fine_tunes_a_pretrained_llama_read_by_process_0_only(tmp_path, prepared, tokenizer_for):
    """Process 1 builds the model on the meta device and receives its shards from process 0; the
    rotary buffers, in no state dict, are rebuilt.  The curve matches DDP, where both read it."""
    pretrained = save_tiny_llama(tmp_path / "llama", tokenizer_for("causal"))
    args = ["--model", str(pretrained), "--train", str(prepared), "--max-steps", "4", "--block-size", "32", "--batch-size", "4",
            "--log-every", "1", "--eval-every", "0", "--lr", "1e-3", "--dropout", "0", "--precision", "fp32", "--quiet",
            "--num-processes", "2"]  # fmt: skip
    run(*args, "--out", str(tmp_path / "ddp"), cwd=tmp_path)
    run(*args, "--strategy", "fsdp", "--out", str(tmp_path / "fsdp"), cwd=tmp_path)
    one, two = losses(tmp_path / "ddp"), losses(tmp_path / "fsdp")
    assert sorted(one) == sorted(two) == [1, 2, 3, 4]
    assert max(abs(one[s] - two[s]) for s in one) < 1e-4
    assert max_diff(tmp_path / "ddp", tmp_path / "fsdp") < 1e-4


def test_fsdp_with_lora_and_activation_checkpointing_through_the_cli(tmp_path, prepared, tokenizer_for):
    """``--lora --activation-checkpointing --strategy fsdp`` on 2 processes: the adapter is sharded,
    the losses are 2-process DDP's, a SIGKILL of both processes then --resume auto ends with the
    adapter of the uninterrupted run, and the saved adapter loads with AutoPeftModelForCausalLM."""
    base = save_tiny_llama(tmp_path / "llama", tokenizer_for("causal"))
    args = ["--model", str(base), "--train", str(prepared), "--max-steps", str(STEPS), "--block-size", "32", "--batch-size", "4",
            "--log-every", "1", "--eval-every", "0", "--save-every", "4", "--keep-last", "5", "--lr", "1e-2", "--dropout", "0",
            "--precision", "fp32", "--quiet", "--lora", "--activation-checkpointing", "--num-processes", "2"]  # fmt: skip
    ddp, fsdp, killed = tmp_path / "ddp", tmp_path / "fsdp", tmp_path / "killed"
    run(*args, "--out", str(ddp), cwd=tmp_path)
    run(*args, "--strategy", "fsdp", "--out", str(fsdp), cwd=tmp_path)

    resolved = json.loads((fsdp / "run.json").read_text())["resolved"]
    assert resolved["strategy"] == "fsdp" and resolved["world_size"] == 2
    per_process, whole = resolved["parameter_bytes_per_process"], resolved["parameter_bytes"]
    assert sum(per_process) == whole and max(per_process) < 0.6 * whole
    one, two = losses(ddp), losses(fsdp)
    assert sorted(two) == list(range(1, STEPS + 1)) and max(abs(one[s] - two[s]) for s in one) < 1e-4
    assert two[STEPS] < two[1]

    assert max_diff(fsdp, ddp, ADAPTER) < 1e-4
    procs = [lmctl(*args, "--strategy", "fsdp", "--out", str(killed), cwd=tmp_path)]
    kill_after_checkpoint(procs, killed)
    assert not (killed / "adapter_model.safetensors").exists(), "the run finished before it was killed"
    run(*args, "--strategy", "fsdp", "--out", str(killed), "--resume", "auto", cwd=tmp_path)
    assert max_diff(killed, fsdp, ADAPTER) < 1e-5

    from peft import AutoPeftModelForCausalLM

    reloaded = AutoPeftModelForCausalLM.from_pretrained(str(fsdp))
    saved = weights(fsdp, ADAPTER)
    state = reloaded.state_dict()
    for name, tensor in saved.items():
        key = name.replace(".lora_A.weight", ".lora_A.default.weight").replace(".lora_B.weight", ".lora_B.default.weight")
        assert float((state[key] - tensor).abs().max()) == 0.0, name


def test_machines_with_different_data_refuse_to_train(tmp_path, prepared, tokenizer_for):
    other = write_prepared(tmp_path / "other", tokenizer_for("causal"), "causal", corpus_text(40_000)[10_000:])
    port = str(free_port())
    procs = []
    for rank, data in enumerate((prepared, other)):
        args = [arg if arg != str(prepared) else str(data) for arg in common(prepared)]
        procs.append(lmctl(*args, "--batch-size", "4", "--num-machines", "2", "--machine-rank", str(rank), "--main-process-ip",
                           "127.0.0.1", "--main-process-port", port, "--out", str(tmp_path / f"m{rank}"), cwd=tmp_path))  # fmt: skip
    outputs = [proc.communicate(timeout=600) for proc in procs]
    assert all(proc.returncode != 0 for proc in procs)
    assert "the processes read different training data" in outputs[0][1], outputs[0][1][-2000:]
    assert not (tmp_path / "m0" / "metrics.jsonl").exists()


ONE_PROCESS_SCRIPT = """
import json, sys
import torch.distributed as dist
from lmctl.workflows.train.config import TrainConfig
from lmctl.workflows.train.trainer import Trainer

trainer = Trainer(TrainConfig(**json.loads(sys.argv[1])), quiet=True)
trainer.setup()
report = {"wrapper": type(trainer.model).__name__, "world": trainer.world, "backend": dist.get_backend()}
report["steps"] = trainer.run().steps
print("REPORT " + json.dumps(report))
"""


def test_a_launcher_of_one_process_gets_ddp_and_the_plain_run_losses(tmp_path, prepared):
    """``torchrun --nproc_per_node 1``: a process group of one, the DDP wrapper (Accelerate leaves
    it out at world size 1; lmctl adds it so a launched run runs the code N processes run), and
    with gradient accumulation the same losses as plain ``lmctl train`` (DDP's no_sync used)."""
    script = tmp_path / "one.py"
    script.write_text(ONE_PROCESS_SCRIPT)
    config = dict(model="gpt2", from_scratch=True, preset="tiny", train=[str(prepared)], out=str(tmp_path / "launched"),
                  max_steps=6, batch_size=4, grad_accum=2, block_size=32, log_every=1, eval_every=0, dropout=0.0,
                  precision="fp32")  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", str(script),
                           json.dumps(config)], cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.split("REPORT ", 1)[1].splitlines()[0])
    assert report == {"wrapper": "DistributedDataParallel", "world": 1, "backend": "gloo", "steps": 6}
    run("--model", "gpt2", "--from-scratch", "--preset", "tiny", "--train", str(prepared), "--max-steps", "6", "--batch-size", "4",
        "--grad-accum", "2", "--block-size", "32", "--log-every", "1", "--eval-every", "0", "--dropout", "0", "--precision", "fp32",
        "--quiet", "--out", str(tmp_path / "plain"), cwd=tmp_path)  # fmt: skip

    def losses(out):
        lines = [
            json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()
        ]
        return [m["train/loss"] for m in lines if "train/loss" in m]

    launched, plain = losses(tmp_path / "launched"), losses(tmp_path / "plain")
    assert len(launched) == len(plain) == 6
    assert launched == pytest.approx(plain, rel=1e-5)
