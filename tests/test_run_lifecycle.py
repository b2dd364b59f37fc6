"""A run directory over its life: resumed (with a new budget), interrupted, re-run, used by eval and
generate; and what the dashboard shows meanwhile."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import REPO, corpus_text, write_prepared
from tests.test_train import StopAt, tiny_config


def cli(*args: str):
    from lmctl.cli.app import app

    return CliRunner().invoke(app, list(args))


def events_of(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def prepared(tmp_path, tokenizer_for):
    text = corpus_text(20_000)
    cut = int(len(text) * 0.9)
    return write_prepared(tmp_path / "data", tokenizer_for("causal"), "causal", text[:cut], text[cut:])


def train_quiet(prepared: Path, out: Path, **overrides):
    from lmctl.workflows.train.trainer import train

    settings = dict(max_steps=10, eval_every=5, save_every=5, log_every=1)
    settings.update(overrides)
    return train(tiny_config(prepared, out, "causal", **settings), quiet=True)


# --- resume keeps the run's state; a finished run continues with a new budget ----------------------


def test_finished_run_continues_to_a_new_max_steps_with_the_whole_runs_state(prepared, tmp_path):
    from lmctl.workflows.runs import summarize
    from lmctl.workflows.train.trainer import learning_rate

    run = tmp_path / "run"
    first = train_quiet(prepared, run)
    assert first.steps == 10 and (run / "checkpoints" / "step-10").is_dir()  # the last step is checkpointed
    first_elapsed = max(e["elapsed_s"] for e in events_of(run) if "elapsed_s" in e)
    first_best = first.best_eval_loss

    result = cli(
        "train", "--model", "gpt2", "--from-scratch", "--preset", "tiny", "--train", str(prepared), "--out", str(run),
        "--max-steps", "16", "--block-size", "32", "--batch-size", "8", "--lr", "3e-3", "--dropout", "0",
        "--precision", "fp32", "--eval-every", "5", "--save-every", "5", "--log-every", "1", "--eval-batches", "4",
        "--resume", "auto",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "after 16 steps" in result.output

    events = events_of(run)
    train_steps = [e["step"] for e in events if "train/loss" in e]
    assert train_steps == list(range(1, 17))  # the whole run, each step once
    # Elapsed time continues from the checkpoint's total instead of restarting at 0.
    second = [e for e in events if "train/loss" in e and e["step"] > 10]
    assert second[0]["elapsed_s"] >= first_elapsed
    # The learning rate follows the schedule over the new total, from the step reached (docs/train.md).
    record = json.loads((run / "run.json").read_text())
    warmup = record["resolved"]["warmup_steps"]
    assert warmup == 1  # kept from the first session (min(100, 10 // 10)), not recomputed from 16
    expected = learning_rate(10, lr=3e-3, min_lr=3e-4, warmup=warmup, total=16, schedule="cosine")
    assert second[0]["lr"] == pytest.approx(expected)
    # Best eval over the whole run, in metrics.jsonl and `lmctl runs`.
    evals = [e["eval/loss"] for e in events if "eval/loss" in e and not e.get("final")]
    best = min(evals)
    assert best <= first_best
    assert [e for e in events if "eval/loss" in e and not e.get("final")][-1]["best_eval_loss"] == pytest.approx(best)
    summary = summarize(run)
    assert summary["steps"] == 16 and summary["status"] == "finished"
    assert summary["wall_seconds"] >= first_elapsed
    assert record["result"]["best_checkpoint"] is None or Path(record["result"]["best_checkpoint"]).is_dir()
    assert (run / "model.safetensors").is_file() and (run / "lmctl_model.json").is_file()


def test_interrupted_continuation_leaves_the_directory_consistent(prepared, tmp_path):
    from lmctl.core.checkpoint import list_checkpoints
    from lmctl.plugins.registry import get_registry
    from lmctl.workflows.runs import summarize

    run = tmp_path / "run"
    train_quiet(prepared, run)
    assert (run / "model.safetensors").is_file() and (run / "README.md").is_file()
    registry = get_registry()
    registry.callbacks["stop-at-13"] = StopAt(13)  # a callback runs only when the run names it
    try:
        stopped = train_quiet(prepared, run, max_steps=20, resume="auto", callbacks=["stop-at-13"])
    finally:
        del registry.callbacks["stop-at-13"]
    assert stopped.interrupted == "SIGINT" and stopped.steps == 13
    # The finished model of step 10 is gone: run.json, metrics.jsonl and checkpoints tell one story.
    assert not (run / "model.safetensors").exists() and not (run / "README.md").exists()
    assert not (run / "curves.png").exists()
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "SIGINT" and record["result"]["steps"] == 13
    best = record["result"]["best_checkpoint"]
    assert best is None or Path(best).is_dir()
    assert list_checkpoints(run)[-1][0] == 13
    assert summarize(run)["steps"] == 13  # not the last logged step
    # The run directory is still usable: eval/generate take its latest checkpoint, and say so.
    text = tmp_path / "t.txt"
    text.write_text(corpus_text(3000))
    result = cli("eval", "--model", str(run), "--data", str(text), "--json")
    assert result.exit_code == 0, result.output
    assert "latest checkpoint, step 13" in result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["model"].endswith("step-13")


def test_a_new_run_into_an_earlier_runs_directory_is_refused_unless_overwrite(prepared, tmp_path):
    from lmctl.errors import UsageError

    run = tmp_path / "run"
    train_quiet(prepared, run, max_steps=4, eval_every=0, save_every=0)
    (run / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="already holds an earlier run \\(finished at step 4\\)"):
        train_quiet(prepared, run, max_steps=4, eval_every=0)
    result = train_quiet(prepared, run, max_steps=3, eval_every=0, save_every=0, overwrite=True)
    assert result.steps == 3
    assert [e["step"] for e in events_of(run) if "train/loss" in e] == [1, 2, 3]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-3"]
    assert (run / "notes.txt").read_text() == "mine"  # only lmctl's own files are replaced


def test_checkpoint_choice_for_eval_and_generate(prepared, tmp_path):
    from lmctl.core.run_dir import resolve_model_dir
    from lmctl.errors import UsageError

    run = tmp_path / "run"
    train_quiet(prepared, run, max_steps=10, keep_last=1)
    assert resolve_model_dir(str(run)).path == run and resolve_model_dir(str(run)).note is None
    best_step = json.loads((run / "checkpoints" / "step-10" / "trainer_state.json").read_text())["best_step"]
    chosen = resolve_model_dir(str(run), "best")
    assert chosen.path == run / "checkpoints" / f"step-{best_step}" and "best checkpoint" in chosen.note
    assert resolve_model_dir(str(run), "latest").path == run / "checkpoints" / "step-10"
    with pytest.raises(UsageError, match="no such checkpoint.*have: "):
        resolve_model_dir(str(run), "step-3")
    result = cli("generate", "--model", str(run), "--checkpoint", "latest", "--greedy", "-n", "5", "--include-prompt", "The for")
    assert result.exit_code == 0, result.output
    assert "using the latest checkpoint" in result.stderr
    assert result.stdout.startswith("The for")
    # A run directory that never saved anything: a pointer, not "no config.json".
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "run.json").write_text(json.dumps({"status": "SIGINT"}))
    result = cli("generate", "--model", str(empty), "hi")
    assert result.exit_code == 2 and "neither a final model nor a checkpoint" in result.output


# --- the dashboard ----------------------------------------------------------------------------------


def render(dashboard) -> str:
    from rich.console import Console

    console = Console(width=120, record=True, file=open(os.devnull, "w"))
    console.print(dashboard._render())
    return console.export_text()


def test_dashboard_counts_steps_against_the_plan_and_shows_the_resumed_best():
    from lmctl.cli.display import RichTrainDashboard

    dashboard = RichTrainDashboard()
    dashboard.update({"step": 20, "total_steps": 300, "best_eval_loss": 8.055, "best_eval_step": 20, "elapsed_s": 200.0, "initial": True})
    dashboard.progress(23)  # before the first log event of the session
    text = render(dashboard)
    assert "step 23/300" in text and "8%" in text
    assert "8.055 (step 20)" in text
    assert "elapsed 3:2" in text  # 200 s before the resume, and counting


def test_precision_measurement_is_not_counted_as_steps(tmp_path, tokenizer_for, monkeypatch):
    """--precision auto's probe passes run before the dashboard exists and report a status instead."""
    from lmctl.core import precision
    from lmctl.workflows.train.trainer import train

    monkeypatch.setattr(precision, "should_measure", lambda *a: True)
    monkeypatch.setenv("LMCTL_CACHE", str(tmp_path / "cache"))
    statuses, progress = [], []

    class Display:
        def start(self, plan): progress.append(("start", plan["optimizer steps"]))
        def update(self, event): progress.append(("update", event.get("step"), event.get("total_steps")))
        def progress(self, step): progress.append(("progress", step))
        def message(self, text): pass
        def close(self): pass

    text = corpus_text(20_000)
    data = write_prepared(tmp_path / "data", tokenizer_for("causal"), "causal", text)
    config = tiny_config(data, tmp_path / "run", "causal", max_steps=3, eval_every=0, precision="auto")
    train(config, display=lambda main: Display(), status=statuses.append)
    assert "measuring precision (fp32 vs bf16 steps)" in statuses and statuses[-1] is None
    assert progress[0] == ("start", 3) and progress[1] == ("update", 0, 3)
    assert [p[1] for p in progress if p[0] == "progress"] == [1, 2, 3]


# --- raw-text eval uses the model's document convention (done-when 1) -------------------------------


def direct_causal_loss(model_dir: Path, ids: list[int], block: int) -> float:
    """Mean NLL of every token after the first, in consecutive windows of `block` predictions,
    computed with F.cross_entropy on the model's logits (independent of lmctl's scoring)."""
    import torch
    import torch.nn.functional as F
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
    total, count, target = 0.0, 0, 1
    with torch.no_grad():
        while target < len(ids):
            end = min(target + block, len(ids))
            begin = max(0, end - 1 - block)
            window = torch.tensor(ids[begin:end])[None]
            logits = model(input_ids=window[:, :-1]).logits[0].float()
            targets = window[0, 1:]
            first = target - begin - 1  # positions before it were scored by the previous window
            total += F.cross_entropy(logits[first:], targets[first:], reduction="sum").item()
            count += len(targets) - first
            target = end
    return total / count


@pytest.mark.parametrize("split", ["file", "lines", "blank-lines"])
def test_eval_on_raw_text_uses_the_trained_document_convention(split, tmp_path, monkeypatch):
    import numpy as np

    monkeypatch.setenv("LMCTL_CACHE", str(tmp_path / "train-cache"))
    lines = corpus_text(12_000).splitlines(keepends=True)
    cut = int(len(lines) * 0.9)
    head, tail = tmp_path / "head90.txt", tmp_path / "tail10.txt"
    head.write_text("".join(lines[:cut]))
    tail.write_text("".join(lines[cut:]))
    run = tmp_path / "run"
    result = cli(
        "train", "--model", "gpt2", "--from-scratch", "--preset", "tiny", "--tokenizer", "char", "--train", str(head),
        "--validation", str(tail), "--document-split", split, "--max-steps", "8", "--block-size", "48", "--batch-size",
        "8", "--precision", "fp32", "--out", str(run), "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    final = json.loads((run / "run.json").read_text())["result"]["final_eval"]["loss"]

    copy = tmp_path / "elsewhere" / "valid.txt"
    copy.parent.mkdir()
    shutil.copy(tail, copy)
    monkeypatch.setenv("LMCTL_CACHE", str(tmp_path / "eval-cache"))  # an empty cache
    result = cli("eval", "--model", str(run), "--data", str(copy), "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.splitlines()[-1])
    assert record["settings"]["block_size"] == 48  # the trained block size, not the model's 128 positions
    assert record["document_split"] == f"{split} (as trained)"
    assert abs(record["loss"] - final) < 1e-4, (record["loss"], final)

    manifest = next((tmp_path / "eval-cache").rglob("manifest.json"))
    info = json.loads(manifest.read_text())
    ids = np.fromfile(manifest.parent / "train.bin", dtype=info["dtype"]).astype(np.int64).tolist()
    assert abs(direct_causal_loss(run, ids, 48) - final) < 1e-4

    other = "file" if split != "file" else "lines"
    result = cli("eval", "--model", str(run), "--data", str(copy), "--json", "--document-split", other)
    assert result.exit_code == 0, result.output
    overridden = json.loads(result.stdout.splitlines()[-1])
    assert overridden["document_split"] == f"{other} (as asked)"
    assert overridden["tokens"] != record["tokens"] or overridden["loss"] != pytest.approx(record["loss"], abs=1e-7)
    table = cli("eval", "--model", str(run), "--data", str(copy))
    shown = " ".join(table.stdout.split())
    assert f"raw text, documents: {split} (as trained)" in shown and "train split" not in shown


# --- Ctrl-C during the quickstart ------------------------------------------------------------------


@pytest.mark.slow
def test_ctrl_c_during_quickstart_is_not_a_success(tmp_path):
    """An earlier finished quickstart in the same directory, then Ctrl-C in a new one: exit 130 with
    `lmctl train`'s message, no "Trained", no sample from the earlier model."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
    out = tmp_path / "runs" / "quickstart"
    first = subprocess.run(
        [sys.executable, "-m", "lmctl", "quickstart", "--out", str(out), "--max-steps", "2"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert (out / "model.safetensors").is_file()

    process = subprocess.Popen(
        [sys.executable, "-m", "lmctl", "quickstart", "--out", str(out), "--max-steps", "5000"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # A shell's background job ignores SIGINT, and Python keeps an ignored SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:  # wait for the new run's first logged step
            metrics = out / "metrics.jsonl"
            lines = metrics.read_text().splitlines() if metrics.is_file() else []
            if any('"train/loss"' in line and '"total_steps": 5000' in line for line in lines):
                break
            assert process.poll() is None, process.communicate()
            time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, (stdout, stderr)
    assert "interrupted at step" in stderr and "continue with --resume auto" in stderr
    assert "Trained" not in stdout and "Sample" not in stdout
    assert not (out / "model.safetensors").exists()  # the earlier run was replaced, not mixed in
    assert math.isfinite(json.loads((out / "run.json").read_text())["result"]["steps"])
