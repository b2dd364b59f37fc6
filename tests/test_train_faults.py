"""Crash safety: SIGKILL at any moment, including in the middle of a checkpoint save, never stops
--resume auto from finishing like an uninterrupted run.  A full disk during a save (a real one):
tests/test_faults.py."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, corpus_text, write_prepared


def final_step_loss(out):
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [e for e in events if "train/loss" in e][-1]


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_matches_uninterrupted(tmp_path, tokenizer_for):
    prepared = write_prepared(tmp_path / "data", tokenizer_for("causal"), "causal", corpus_text(30_000))
    args = ["-m", "lmctl", "train", "--model", "gpt2", "--from-scratch", "--preset", "tiny", "--train", str(prepared),
            "--max-steps", "60", "--batch-size", "4", "--block-size", "32", "--log-every", "1", "--save-every", "2",
            "--keep-last", "2", "--eval-every", "0", "--dropout", "0.1", "--precision", "fp32", "--quiet"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, *args, "--out", str(tmp_path / "ref")], check=True, env=env, timeout=600)

    out = tmp_path / "faulty"
    rng = random.Random(0)
    kills = during_save = 0
    faulty_args = [a for a in args if a != "--quiet"]  # plain "step N/40 | ..." lines on stdout show progress
    for _attempt in range(40):
        has_checkpoint = (out / "checkpoints").is_dir() and any(
            (p / "trainer_state.json").is_file() for p in (out / "checkpoints").glob("step-*")
        )
        cmd = [sys.executable, *faulty_args, "--out", str(out)] + (["--resume", "auto"] if has_checkpoint else [])
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if kills < 10:
            # Three kinds of moment, in turn, chosen by progress rather than by the clock so the
            # test holds on fast and slow machines alike.
            if kills % 3 == 0:  # start-up: imports, data, model building, RNG restore
                time.sleep(rng.uniform(0.2, 2.5))
            elif kills % 3 == 1:  # inside a checkpoint save: its temporary directory exists
                deadline = time.time() + 120
                while time.time() < deadline and proc.poll() is None:
                    if any(p.name.startswith(".tmp-step-") for p in (out / "checkpoints").glob(".tmp-*")):
                        break
                    time.sleep(0.0005)
            else:  # mid-training, a few steps after this attempt's first logged step
                wanted = rng.randint(1, 4)
                seen = 0
                for line in proc.stdout:
                    if line.startswith("step ") and "train/loss" in line:
                        seen += 1
                        if seen >= wanted:
                            break
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                if any(p.name.startswith(".tmp-") for p in (out / "checkpoints").glob(".tmp-*")):
                    during_save += 1
                continue
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-2000:]
        if json.loads((out / "run.json").read_text())["status"] == "finished":
            break
    assert kills == 10
    assert during_save >= 2, "the test must kill some runs in the middle of a checkpoint save"
    reference, resumed = final_step_loss(tmp_path / "ref"), final_step_loss(out)
    assert resumed["step"] == reference["step"] == 60
    assert resumed["train/loss"] == pytest.approx(reference["train/loss"], abs=1e-5)

    import torch
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "ref" / "model.safetensors"), load_file(out / "model.safetensors")
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


# --- --on-nan skip ------------------------------------------------------------------------------------


def nan_on_steps(monkeypatch, bad_steps):
    """Make the causal loss NaN on the given optimizer steps (1-based; one micro-batch per step, no
    evaluation and --precision fp32 (auto would time a probe step first), so the n-th call of
    compute_loss is step n).  The NaN flows through backward
    into the gradients, as a real overflow would."""
    from lmctl.families.base import LossOutput
    from lmctl.families.causal import CausalFamily

    real = CausalFamily.compute_loss
    calls = {"n": 0, "weights": []}

    def flaky(self, model, batch, options):
        calls["n"] += 1
        calls["weights"].append(next(model.parameters()).detach().clone())  # as the step starts
        out = real(self, model, batch, options)
        if calls["n"] in bad_steps:
            return LossOutput(loss=out.loss * float("nan"), tokens=out.tokens, metrics=out.metrics)
        return out

    monkeypatch.setattr(CausalFamily, "compute_loss", flaky)
    return calls


def skip_config(prepared, out, **overrides):
    from lmctl.workflows.train.config import TrainConfig

    settings = dict(model="gpt2", from_scratch=True, preset="tiny", train=[str(prepared)], out=str(out), max_steps=6,
                    batch_size=4, block_size=32, log_every=1, eval_every=0, save_every=1, keep_last=20, on_nan="skip",
                    precision="fp32")  # fmt: skip
    settings.update(overrides)
    return TrainConfig(**settings)


def test_on_nan_skip_skips_the_step_counts_it_and_goes_on(tmp_path, tokenizer_for, monkeypatch):
    import torch
    from safetensors.torch import load_file

    from lmctl.workflows.train.trainer import train

    prepared = write_prepared(tmp_path / "data", tokenizer_for("causal"), "causal", corpus_text(20_000))
    calls = nan_on_steps(monkeypatch, {3, 4})
    result = train(skip_config(prepared, tmp_path / "run"), quiet=True)
    assert calls["n"] == 6
    assert result.interrupted is None and result.steps == 6
    logged = {e["step"]: e for e in result.metrics if "train/loss" in e}
    assert sorted(logged) == [1, 2, 5, 6]  # skipped steps log nothing
    assert all(math.isfinite(e["train/loss"]) for e in logged.values())
    assert "nan_skipped" not in logged[2] and logged[5]["nan_skipped"] == logged[6]["nan_skipped"] == 2

    # A skipped step changes nothing: the weights as steps 3, 4 and 5 start are those after step 2;
    # every step that was not skipped changed them.
    w = calls["weights"]  # w[i]: the weights as step i + 1 starts
    assert torch.equal(w[2], w[3]) and torch.equal(w[3], w[4])
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2]) and not torch.equal(w[4], w[5])
    # ... nor the optimizer: AdamW counted 3 updates (steps 1, 2, 5) by the checkpoint of step 5.
    optimizer = load_file(tmp_path / "run" / "checkpoints" / "step-5" / "optimizer.safetensors")
    counts = {float(v) for k, v in optimizer.items() if k.endswith(".step")}
    assert counts == {3.0}
    final = load_file(tmp_path / "run" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in final.values())


def test_on_nan_skip_stops_after_ten_in_a_row_with_one_error_line(tmp_path, tokenizer_for, monkeypatch):
    import torch
    from safetensors.torch import load_file
    from typer.testing import CliRunner

    from lmctl.cli.app import app
    from lmctl.workflows.train.trainer import train

    prepared = write_prepared(tmp_path / "data", tokenizer_for("causal"), "causal", corpus_text(20_000))
    nan_on_steps(monkeypatch, set(range(3, 100)))
    result = train(skip_config(prepared, tmp_path / "run", max_steps=30), quiet=True)
    # Steps 3..12 are the ten in a row; the run stops at the tenth, saving the last good state.
    assert result.interrupted == "nan" and result.steps == 11
    root = tmp_path / "run" / "checkpoints"
    good, saved = load_file(root / "step-2" / "model.safetensors"), load_file(root / "step-11" / "model.safetensors")
    assert all(torch.equal(good[key], saved[key]) for key in good)
    assert not (tmp_path / "run" / "model.safetensors").exists()  # no "final" model from a failed run

    monkeypatch.undo()
    calls = nan_on_steps(monkeypatch, set(range(3, 100)))
    cli = CliRunner().invoke(app, ["train", "--model", "gpt2", "--from-scratch", "--preset", "tiny", "--train", str(prepared),
                                   "--out", str(tmp_path / "cli"), "--max-steps", "30", "--batch-size", "4", "--block-size", "32",
                                   "--eval-every", "0", "--on-nan", "skip", "--precision", "fp32", "--quiet"])  # fmt: skip
    assert calls["n"] == 12
    assert cli.exit_code == 1 and "Traceback" not in cli.output
    lines = cli.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: 10 steps in a row up to step 12 had a NaN/inf loss"), cli.stderr
    assert str(tmp_path / "cli" / "checkpoints") in lines[0]
