"""Two CPU processes (gloo) with batch B train exactly like one process with batch 2B."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, corpus_text, write_prepared

pytestmark = pytest.mark.multiprocess


def run_cli(args, cwd):
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    import os

    env = {**os.environ, **env}
    completed = subprocess.run([sys.executable, "-m", "lmctl", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


def losses(out):
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {e["step"]: e["train/loss"] for e in lines if "train/loss" in e}


@pytest.mark.parametrize("launcher", ["--num-processes", "accelerate-launch"])
# accelerate launch has no multi-process CPU mode of its own (it expects mpirun there); its
# --multi_gpu launcher starts torch's elastic agent, and lmctl's Accelerator(cpu=True) then runs
# DDP over gloo.  Both launch paths must give the same curve.
def test_two_processes_match_one_process_with_double_batch(tmp_path, tokenizer_for, launcher):
    prepared = write_prepared(tmp_path / "data", tokenizer_for("causal"), "causal", corpus_text(30_000))
    common = ["--model", "gpt2", "--from-scratch", "--preset", "tiny", "--train", str(prepared), "--max-steps", "12",
              "--block-size", "32", "--log-every", "1", "--eval-every", "0", "--dropout", "0", "--precision", "fp32", "--quiet"]  # fmt: skip
    run_cli(["train", *common, "--batch-size", "8", "--out", str(tmp_path / "one")], tmp_path)
    if launcher == "--num-processes":
        run_cli(["train", *common, "--batch-size", "4", "--num-processes", "2", "--out", str(tmp_path / "two")], tmp_path)
    else:
        completed = subprocess.run(
            [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "-m", "lmctl",
             "train", *common, "--batch-size", "4", "--out", str(tmp_path / "two")],  # fmt: skip
            cwd=tmp_path, capture_output=True, text=True, timeout=600,
        )
        assert completed.returncode == 0, completed.stderr[-3000:]
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert sorted(one) == sorted(two) == list(range(1, 13))
    for step in one:
        assert one[step] == pytest.approx(two[step], abs=1e-4), step
    run = json.loads((tmp_path / "two" / "run.json").read_text())
    assert run["resolved"]["world_size"] == 2
