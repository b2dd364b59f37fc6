"""--precision auto: the measured choice, and remembering it so a command stays reproducible."""

from __future__ import annotations

import json

import pytest

from tests.test_train import tiny_config


def fake_step(times):
    """A step function returning the next recorded time for each precision."""
    calls = {"fp32": 0, "bf16": 0}

    def step(precision):
        calls[precision] += 1
        return times[precision][(calls[precision] - 1) % len(times[precision])]

    return step, calls


def test_bf16_is_kept_only_when_its_median_is_clearly_faster():
    from lmctl.core.precision import measure_faster_precision

    # One lucky bf16 time (0.5) does not decide: the median does.
    step, calls = fake_step({"fp32": [1.0, 1.0, 1.0, 1.0], "bf16": [1.0, 0.5, 0.95, 0.96]})
    choice, timings = measure_faster_precision(step)
    assert choice == "fp32" and timings["bf16"] == pytest.approx(0.95)
    assert calls == {"fp32": 4, "bf16": 4}  # one warm-up each, then 3 interleaved
    step, _ = fake_step({"fp32": [1.0], "bf16": [0.8]})
    assert measure_faster_precision(step)[0] == "bf16"
    step, calls = fake_step({"fp32": [3.0], "bf16": [9.0]})  # slow fp32 step: big model, not measured further
    assert measure_faster_precision(step) == ("bf16", {"fp32": 3.0}) and calls["bf16"] == 0


def test_tiny_models_are_not_measured():
    import torch

    from lmctl.core.precision import CPU_BF16_MEASURE_MIN_PARAMETERS, should_measure

    cpu = torch.device("cpu")
    assert not should_measure("auto", cpu, CPU_BF16_MEASURE_MIN_PARAMETERS - 1)
    assert not should_measure("fp32", cpu, 10**9)
    assert not should_measure("auto", torch.device("cuda"), 10**9)  # GPUs: bf16 without measuring


def test_decisions_are_remembered_per_key_and_survive_a_damaged_file(tmp_path, monkeypatch):
    from lmctl.core.precision import decision_key, remember_precision, remembered_precision

    monkeypatch.setenv("LMCTL_CACHE", str(tmp_path))
    key = decision_key({"block": 64, "batch": 12})
    other = decision_key({"block": 128, "batch": 12})
    assert key != other and "block=64" in key
    assert remembered_precision(key) is None
    remember_precision(key, "bf16", {"fp32": 0.2, "bf16": 0.1})
    remember_precision(other, "fp32", {"fp32": 0.1, "bf16": 0.2})
    assert remembered_precision(key)["precision"] == "bf16"
    assert remembered_precision(other)["precision"] == "fp32"
    (tmp_path / "precision.json").write_text("{not json")
    assert remembered_precision(key) is None  # damaged: measure again, and the file is rewritten
    remember_precision(key, "fp32", {})
    assert json.loads((tmp_path / "precision.json").read_text())[key]["precision"] == "fp32"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".precision-")]  # no temp files left


def test_a_second_auto_run_reuses_the_first_runs_measured_choice(prepared_for, tmp_path, monkeypatch):
    import lmctl.core.precision
    from lmctl.workflows.train.trainer import train

    monkeypatch.setenv("LMCTL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(lmctl.core.precision, "should_measure", lambda name, device, params: name == "auto")
    measured = []

    def measure(step, **kwargs):
        measured.append(step("fp32"))  # the real probe step runs
        return "bf16", {"fp32": measured[-1], "bf16": measured[-1] / 2}

    monkeypatch.setattr(lmctl.core.precision, "measure_faster_precision", measure)
    prepared = prepared_for("causal")
    runs = []
    for name in ("first", "second"):
        train(tiny_config(prepared, tmp_path / name, "causal", max_steps=2, eval_every=0, precision="auto"), quiet=True)
        runs.append(json.loads((tmp_path / name / "run.json").read_text())["resolved"])
    assert len(measured) == 1 and measured[0] > 0
    assert [r["precision"] for r in runs] == ["bf16", "bf16"]
    assert [r["precision_source"] for r in runs] == ["measured", "remembered"]
    # Another training shape is measured afresh.
    train(tiny_config(prepared, tmp_path / "third", "causal", max_steps=2, eval_every=0, precision="auto",
                      block_size=16), quiet=True)  # fmt: skip
    assert len(measured) == 2
