"""`lmctl runs` and `lmctl plot`: the run table's figures come from metrics.jsonl, the terminal
chart and the PNG show every run, and the PNG is checked as an image (size, content, colours)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import FAMILY_SETUP

# matplotlib's default colour cycle: C0 (blue) for the first run, C1 (orange) for the second.
C0, C1 = (0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)


def invoke(*args: str):
    from lmctl.cli.app import app

    return CliRunner().invoke(app, list(args))


@pytest.fixture
def two_runs(prepared_for, tmp_path):
    """Two tiny causal runs on the same data, with different learning rates (different curves)."""
    from lmctl.workflows.train.config import TrainConfig
    from lmctl.workflows.train.trainer import train

    prepared = prepared_for("causal")
    runs = []
    for name, lr in (("fast", 3e-3), ("slow", 5e-4)):
        config = TrainConfig(
            model=FAMILY_SETUP["causal"][0], from_scratch=True, preset="tiny", train=[str(prepared)],
            out=str(tmp_path / "runs" / name), max_steps=20, batch_size=8, block_size=32, log_every=2,
            eval_every=5, eval_batches=2, save_every=0, lr=lr, dropout=0.0, precision="fp32",
        )  # fmt: skip
        train(config, quiet=True)
        runs.append(tmp_path / "runs" / name)
    return runs


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def colour_pixels(image, rgb, tolerance: float = 0.06):
    import numpy as np

    target = np.array(rgb) / 255.0
    return np.all(np.abs(image[:, :, :3] - target) < tolerance, axis=2)


def test_plot_png_is_an_image_of_both_runs(two_runs, tmp_path):
    import matplotlib.image
    import numpy as np

    png = tmp_path / "out" / "curves.png"
    png.parent.mkdir()
    result = invoke("plot", *map(str, two_runs), "--png", str(png))
    assert result.exit_code == 0, result.output
    assert f"wrote {png}" in result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in png.parent.iterdir()] == ["curves.png"]  # no temporary file left behind

    image = matplotlib.image.imread(png)
    assert image.shape == (4 * 110, 11 * 110, 4)  # figsize (11, 4) inches at 110 dpi, RGBA
    assert image[:, :, :3].std() > 0.05  # not blank
    white = np.all(image[:, :, :3] > 0.97, axis=2).mean()
    assert 0.5 < white < 0.99  # a white background with drawing on it
    # One colour per run, in both panels (loss on the left, perplexity on the right).
    half = image.shape[1] // 2
    for rgb in (C0, C1):
        mask = colour_pixels(image, rgb)
        assert mask[:, :half].sum() > 150 and mask[:, half:].sum() > 150, rgb


def test_train_writes_curves_png(two_runs):
    import matplotlib.image

    image = matplotlib.image.imread(two_runs[0] / "curves.png")
    assert image.shape == (440, 1210, 4) and image[:, :, :3].std() > 0.05
    # A single run: training curve C0, evaluations C1.
    assert colour_pixels(image, C0).sum() > 300 and colour_pixels(image, C1).sum() > 100


def test_plot_in_the_terminal(two_runs):
    from lmctl.workflows.runs import curves_for

    result = invoke("plot", *map(str, two_runs))
    assert result.exit_code == 0, result.output
    out = result.output
    for label in ("fast: train", "fast: eval", "slow: train", "slow: eval"):
        assert label in out
    # The axis spans the runs' logged steps and losses (read independently from metrics.jsonl).
    points = [
        (e["step"], e[key]) for run in two_runs for e in metrics(run) for key in ("train/loss", "eval/loss")
        if key in e and not e.get("final")
    ]  # fmt: skip
    assert f"step {min(p[0] for p in points)}" in out and f"step {max(p[0] for p in points)}" in out
    assert f"{max(p[1] for p in points):.3g}" in out and f"{min(p[1] for p in points):.3g}" in out
    curves = curves_for(two_runs, "loss")
    assert curves["fast: train"] == [(e["step"], e["train/loss"]) for e in metrics(two_runs[0]) if "train/loss" in e]
    # Each curve has its own glyph, so the chart reads without colour too.
    assert all(glyph in out for glyph in "•×+o")

    perplexity = invoke("plot", *map(str, two_runs), "--metric", "perplexity")
    assert perplexity.exit_code == 0 and "perplexity" in perplexity.output


def test_runs_table_figures_come_from_the_run(two_runs, tmp_path):
    from lmctl.cli.display import format_number

    result = invoke("runs", str(tmp_path / "runs"), "--json")
    assert result.exit_code == 0, result.output
    rows = {Path(row["run"]).name: row for row in map(json.loads, result.output.splitlines())}
    assert set(rows) == {"fast", "slow"}
    for run in two_runs:
        row, events = rows[run.name], metrics(run)
        evals = [e["eval/loss"] for e in events if "eval/loss" in e]
        assert row["steps"] == 20 and row["tokens"] == 20 * 8 * 32
        assert row["best_eval_loss"] == min(evals)
        assert row["best_eval_perplexity"] == pytest.approx(math.exp(min(evals)))
        assert row["model"] == "gpt2" and row["family"] == "causal" and row["status"] == "finished"
    table = invoke("runs", str(tmp_path / "runs"))
    assert table.exit_code == 0 and "eval loss" in table.output
    # Runs are named relative to DIR; each row shows its figures (the table drops the status
    # column when every run finished).
    cells = {line.split()[0]: line.split() for line in table.output.splitlines() if line.split()[:1] in (["fast"], ["slow"])}
    assert set(cells) == {"fast", "slow"}
    assert cells["fast"][1:6] == ["gpt2", "causal", "20", "5,120", format_number(rows["fast"]["best_eval_loss"])]


def test_plot_errors_are_one_line(tmp_path):
    missing = invoke("plot", str(tmp_path / "nope"))
    assert missing.exit_code == 1
    assert missing.output.strip().splitlines() == [f"error: {tmp_path / 'nope'} is not an lmctl run directory (no metrics.jsonl)"]
    bad_metric = invoke("plot", str(tmp_path), "--metric", "accuracy")
    assert bad_metric.exit_code == 2 and "--metric must be loss or perplexity" in bad_metric.output


def test_run_labels_stay_distinct():
    from lmctl.workflows.runs import run_labels

    assert run_labels([Path("runs/a"), Path("runs/b")]) == ["a", "b"]
    assert run_labels([Path("exp1/out"), Path("exp2/out")]) == ["exp1/out", "exp2/out"]


def test_metrics_log_of_a_fresh_and_a_resumed_run(tmp_path):
    from lmctl.workflows.runs import open_metrics_log, read_metrics

    log = tmp_path / "metrics.jsonl"
    events = [{"step": s, "train/loss": 5.0 - s / 10} for s in range(1, 9)]
    log.write_text("".join(json.dumps(e) + "\n" for e in events) + '{"step": 9, "train/lo')  # torn last line
    # Resumed from the checkpoint at step 5: the events after it are dropped (they are logged again).
    with open_metrics_log(tmp_path, 5) as f:
        f.write(json.dumps({"step": 6, "train/loss": 0.1}) + "\n")
    assert [(e["step"], e["train/loss"]) for e in read_metrics(tmp_path)] == [
        (e["step"], e["train/loss"]) for e in events[:5]
    ] + [(6, 0.1)]
    # A fresh run in the same directory starts an empty log.
    with open_metrics_log(tmp_path, 0) as f:
        f.write(json.dumps({"step": 1, "train/loss": 9.0}) + "\n")
    assert read_metrics(tmp_path) == [{"step": 1, "train/loss": 9.0}]


def test_training_again_into_a_run_directory_replaces_its_curves(two_runs):
    from lmctl.workflows.train.config import TrainConfig
    from lmctl.workflows.train.trainer import train

    run = two_runs[0]
    config = json.loads((run / "run.json").read_text())["config"]
    train(TrainConfig(**{**config, "max_steps": 4, "eval_every": 2, "overwrite": True}), quiet=True)
    events = metrics(run)
    assert max(e["step"] for e in events) == 4
    assert sum(1 for e in events if e.get("final")) == 1
