"""Training: every family trains and reloads; resume is exact; the schedule and data order are right."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FAMILY_SETUP, corpus_text, write_prepared


def tiny_config(prepared: Path, out: Path, family: str, **overrides):
    from lmctl.workflows.train.config import TrainConfig

    settings = dict(
        model=FAMILY_SETUP[family][0],
        from_scratch=True,
        preset="tiny",
        train=[str(prepared)],
        out=str(out),
        max_steps=30,
        batch_size=8,
        block_size=32,
        log_every=5,
        eval_batches=4,
        lr=3e-3,
        dropout=0.0,
        precision="fp32",  # "auto" may measure and pick bf16; these tests compare exact numbers
    )
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.mark.parametrize("family", sorted(FAMILY_SETUP))
def test_tiny_run_of_each_family_learns_and_reloads(family, prepared_for, tmp_path):
    import transformers

    from lmctl.plugins.registry import get_family
    from lmctl.workflows.train.trainer import train

    out = tmp_path / "run"
    result = train(tiny_config(prepared_for(family), out, family, eval_every=15), quiet=True)
    losses = [m["train/loss"] for m in result.metrics if "train/loss" in m]
    assert len(losses) == 6
    assert losses[-1] < losses[0] - 0.1, losses
    evals = [m for m in result.metrics if "eval/loss" in m]
    assert evals and math.isfinite(evals[-1]["eval/loss"]) and evals[-1].get("final")
    assert result.final_eval is not None
    # A plain Hugging Face directory, loadable with the family's Auto class.
    auto = getattr(transformers, get_family(family).auto_class)
    auto.from_pretrained(out)
    transformers.AutoTokenizer.from_pretrained(out)
    card = (out / "README.md").read_text()
    assert "library_name: transformers" in card and f"- {family}" in card
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("train/loss" in e for e in lines) and any("eval/perplexity" in e for e in lines)
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "finished" and run["versions"]["torch"]
    if family == "electra":
        transformers.AutoModelForMaskedLM.from_pretrained(out / "generator")


def losses_by_step(metrics):
    return {m["step"]: m["train/loss"] for m in metrics if "train/loss" in m}


class StopAt:
    """A callback that sends SIGINT to this process at a given step (as Ctrl-C would)."""

    def __init__(self, step):
        self.step = step

    def on_log(self, event):
        if event.get("step") == self.step and "train/loss" in event:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.parametrize("family", ["causal", "masked"])
def test_resume_is_exact(family, tmp_path, tokenizer_for):
    """40 steps straight == 20 steps, Ctrl-C, --resume auto to 40 (losses to 1e-5, same weights)."""
    import torch
    from safetensors.torch import load_file

    from lmctl.plugins.registry import get_registry
    from lmctl.workflows.train.trainer import train

    prepared = write_prepared(tmp_path / "data", tokenizer_for(family), family, corpus_text(40_000))
    common = dict(max_steps=40, log_every=1, dropout=0.1, eval_every=0, grad_accum=2, batch_size=4)
    straight = train(tiny_config(prepared, tmp_path / "a", family, **common), quiet=True)

    registry = get_registry()
    registry.callbacks["stop-at-20"] = StopAt(20)  # a callback runs only when the run names it
    try:
        first = train(tiny_config(prepared, tmp_path / "b", family, save_every=0, callbacks=["stop-at-20"], **common), quiet=True)
    finally:
        del registry.callbacks["stop-at-20"]
    assert first.interrupted == "SIGINT" and first.steps == 20
    assert (tmp_path / "b" / "checkpoints" / "step-20" / "trainer_state.json").is_file()
    second = train(tiny_config(prepared, tmp_path / "b", family, resume="auto", **common), quiet=True)
    assert second.steps == 40

    a, b = losses_by_step(straight.metrics), {**losses_by_step(first.metrics), **losses_by_step(second.metrics)}
    assert sorted(a) == sorted(b) == list(range(1, 41))
    for step in a:
        assert a[step] == pytest.approx(b[step], abs=1e-5), step
    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=1e-6), key


def test_resume_refuses_changed_config(tmp_path, tokenizer_for):
    from lmctl.errors import UsageError
    from lmctl.workflows.train.trainer import train

    prepared = write_prepared(tmp_path / "data", tokenizer_for("causal"), "causal", corpus_text(20_000))
    train(tiny_config(prepared, tmp_path / "run", "causal", max_steps=4, save_every=2, eval_every=0), quiet=True)
    with pytest.raises(UsageError, match="config changed.*lr"):
        train(tiny_config(prepared, tmp_path / "run", "causal", max_steps=4, lr=1e-2, resume="auto", eval_every=0), quiet=True)
    with pytest.raises(UsageError, match="already holds an earlier run"):
        train(tiny_config(prepared, tmp_path / "run", "causal", max_steps=4, eval_every=0), quiet=True)
    with pytest.raises(UsageError, match="no checkpoint"):
        train(tiny_config(prepared, tmp_path / "other", "causal", max_steps=4, resume="auto", eval_every=0), quiet=True)


def test_checkpoints_are_pruned_and_loadable(tmp_path, tokenizer_for):
    import transformers

    from lmctl.core.checkpoint import list_checkpoints
    from lmctl.workflows.train.trainer import train

    prepared = write_prepared(tmp_path / "data", tokenizer_for("causal"), "causal", corpus_text(20_000))
    train(tiny_config(prepared, tmp_path / "run", "causal", max_steps=10, save_every=2, keep_last=2, eval_every=0), quiet=True)
    steps = [s for s, _ in list_checkpoints(tmp_path / "run")]
    assert steps == [8, 10]  # the last step is checkpointed too (a finished run can be continued)
    transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "checkpoints" / "step-8")
    assert not [p for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.startswith(".tmp")]


def test_learning_rate_schedule_matches_nanogpt():
    from lmctl.workflows.train.trainer import learning_rate

    kw = dict(lr=1e-3, min_lr=1e-4, warmup=100, total=2000)
    assert learning_rate(0, schedule="cosine", **kw) == pytest.approx(1e-3 / 101)
    assert learning_rate(99, schedule="cosine", **kw) == pytest.approx(1e-3 * 100 / 101)
    assert learning_rate(100, schedule="cosine", **kw) == pytest.approx(1e-3)
    assert learning_rate(1050, schedule="cosine", **kw) == pytest.approx(5.5e-4)
    assert learning_rate(2000, schedule="cosine", **kw) == pytest.approx(1e-4)
    assert learning_rate(1050, schedule="linear", **kw) == pytest.approx(5.5e-4)
    assert learning_rate(500, schedule="constant", **kw) == 1e-3
    assert learning_rate(400, schedule="inverse-sqrt", **kw) == pytest.approx(1e-3 * 10 / math.sqrt(401))


def test_data_order_splits_global_batches_across_processes():
    """Process r of N with batch B sees exactly its slice of the 1-process batch N*B, every step."""
    from lmctl.workflows.train.trainer import ExampleOrder

    order = ExampleOrder(50, seed=3)
    B, N, A = 4, 2, 3
    for step in range(10):  # crosses epoch boundaries (50 examples, 24 per step)
        for micro in range(A):
            one, one_epochs = order.indices((step * A + micro) * N * B, N * B)
            parts = [order.indices(((step * A + micro) * N + r) * B, B) for r in range(N)]
            assert np.array_equal(np.concatenate([p[0] for p in parts]), one)
            assert np.array_equal(np.concatenate([p[1] for p in parts]), one_epochs)
    epoch0, epochs = order.indices(0, 50)
    assert sorted(epoch0) == list(range(50)) and set(epochs) == {0}
    assert not np.array_equal(epoch0, order.indices(50, 50)[0])


def test_later_epochs_cut_the_stream_at_seeded_offsets():
    """Epoch 0 reads the prepared blocks; later epochs shift the cut, so windows are new."""
    from types import SimpleNamespace

    from lmctl.workflows.train.trainer import BatchSource

    tokens = np.arange(1000, dtype=np.uint16)
    split = SimpleNamespace(tokens=tokens, offsets=None, num_tokens=1000)
    source = BatchSource(split, block_size=32, pad_id=0, seed=5)
    assert len(source) == (1000 - 31) // 32
    first, _ = source.batch(np.array([3, 0]), np.array([0, 0]))
    assert first[:, 0].tolist() == [0, 96] and (first[:, 1:] - first[:, :-1] == 1).all()
    offsets = {source.offset(e) for e in range(1, 20)}
    assert len(offsets) > 3 and all(0 <= o < 32 for o in offsets)
    again = BatchSource(split, block_size=32, pad_id=0, seed=5)
    assert [again.offset(e) for e in range(1, 20)] == [source.offset(e) for e in range(1, 20)]
    last, _ = source.batch(np.array([len(source) - 1]), np.array([7]))
    assert last.shape == (1, 32) and int(last.max()) < 1000


def test_causal_rows_carry_the_next_token_so_every_token_is_a_target():
    """With a lookahead of 1, row i is tokens[i*T : (i+1)*T + 1]: every token after the first is the
    target of exactly one input position in an epoch, and no row reads past the end of the data."""
    from types import SimpleNamespace

    import torch

    from lmctl.families.causal import next_token_batch
    from lmctl.workflows.train.trainer import BatchSource

    tokens = np.arange(1000, dtype=np.uint16)
    split = SimpleNamespace(tokens=tokens, offsets=None, num_tokens=1000)
    source = BatchSource(split, block_size=32, pad_id=0, seed=5, lookahead=1)
    assert len(source) == (1000 - 1 - 31) // 32
    rows, mask = source.batch(np.arange(len(source)), np.zeros(len(source), dtype=np.int64))
    assert mask is None and rows.shape == (len(source), 33)
    assert (rows[1:, 0] == rows[:-1, -1]).all()  # consecutive rows share one token
    batch = next_token_batch(rows)
    assert batch["input_ids"].shape == (len(source), 32) and torch.equal(batch["labels"], rows)
    targets = batch["labels"][:, 1:].flatten().tolist()
    assert targets == list(range(1, len(source) * 32 + 1))  # each once, in order, none skipped
    for epoch in range(1, 30):  # shifted epochs stay inside the data
        last, _ = source.batch(np.array([len(source) - 1]), np.array([epoch]))
        assert int(last.max()) < 1000
    # Padded rows (line by line) are the model input itself; padding is never a target.
    ids = torch.tensor([[5, 6, 7, 0], [5, 6, 7, 8]])
    padded = next_token_batch(ids, (ids != 0).long())
    assert torch.equal(padded["input_ids"], ids) and padded["labels"][0].tolist() == [5, 6, 7, -100]


def test_nan_loss_stops_with_saved_state(tmp_path, tokenizer_for):
    from lmctl.workflows.train.trainer import train

    prepared = write_prepared(tmp_path / "data", tokenizer_for("causal"), "causal", corpus_text(20_000))
    result = train(tiny_config(prepared, tmp_path / "run", "causal", max_steps=10, lr=1e30, eval_every=0), quiet=True)
    assert result.interrupted == "nan"
    assert (tmp_path / "run" / "checkpoints").is_dir()


def test_out_of_memory_halves_micro_batch_and_keeps_effective_batch(tmp_path, tokenizer_for, monkeypatch):
    """An injected OOM (as CUDA raises it) for micro-batches over 2: the run continues with
    micro-batch 2 x 4 accumulation and matches a run configured that way from the start."""
    import torch

    from lmctl.families.causal import CausalFamily
    from lmctl.workflows.train.trainer import train

    prepared = write_prepared(tmp_path / "data", tokenizer_for("causal"), "causal", corpus_text(20_000))
    reference = train(
        tiny_config(prepared, tmp_path / "ref", "causal", max_steps=6, log_every=1, batch_size=2, grad_accum=4, eval_every=0),
        quiet=True,
    )
    real = CausalFamily.compute_loss

    def flaky(self, model, batch, options):
        if batch["input_ids"].shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real(self, model, batch, options)

    monkeypatch.setattr(CausalFamily, "compute_loss", flaky)
    result = train(
        tiny_config(prepared, tmp_path / "oom", "causal", max_steps=6, log_every=1, batch_size=8, grad_accum=1, eval_every=0),
        quiet=True,
    )
    assert [m["oom_micro_batch"] for m in result.metrics if "oom_micro_batch" in m] == [4, 2]
    a, b = losses_by_step(reference.metrics), losses_by_step(result.metrics)
    assert a.keys() == b.keys()
    for step in a:
        assert a[step] == pytest.approx(b[step], abs=1e-5)
