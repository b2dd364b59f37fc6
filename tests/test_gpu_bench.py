"""benchmarks/gpu.py runs on a CPU with --tiny, so the GPU benchmark cannot rot between GPU runs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, SHARED_DATA

SCRIPT = REPO / "benchmarks" / "gpu.py"


def run_bench(tmp_path, *options: str) -> tuple[dict, str]:
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--out", str(out), "--work", str(tmp_path / "work"), *options],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    table = (out / "results.md").read_text()
    assert (out / "gpu.md").read_text() == table
    return results, table


def test_tiny_quick_run_writes_results_and_table(tmp_path):
    results, table = run_bench(tmp_path, "--quick")
    assert results["mode"] == "tiny quick" and not results["errors"]
    # The gpu tests ran (and, without CUDA, skipped) through pytest's JUnit report.
    tests = results["tests"]
    assert tests["exit_code"] == 0 and tests["failed"] == 0
    assert tests["passed"] + tests["skipped"] >= 10
    rows = {row["pipeline"]: row for row in results["training"]}
    assert list(rows) == ["lmctl train"]
    row = rows["lmctl train"]
    assert row["timed_windows"] >= 3 and row["tokens_per_s"] > 0
    assert row["peak_memory_bytes"] > 0 and row["final_loss"] > 0
    assert 0 < row["mfu_measured"] and row["mfu_datasheet"] is None  # no datasheet peak for a CPU
    assert results["matmul"]["tflops"] > 0
    assert "| lmctl train |" in table and "6N + 12·L·H·Q·T" in table
    assert "eval" not in results and "HF Trainer" not in table  # --quick: tests and the lmctl row only


def bench_module():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import gpu
    finally:
        sys.path.pop(0)
    return gpu


def test_mfu_arithmetic_is_nanogpts():
    """GPT-2 124M with the padded vocabulary: nanoGPT prints "number of parameters: 123.59M"
    (bias=False, without wpe), and estimate_mfu counts 6N + 12 L H Q T per token."""
    gpu = bench_module()
    assert gpu.nanogpt_parameters(gpu.FULL) == 123_587_328
    assert gpu.flops_per_token(gpu.FULL) == 6 * 123_587_328 + 12 * 12 * 12 * 64 * 1024
    assert gpu.datasheet_peak("NVIDIA H100 80GB HBM3") == 989e12
    assert gpu.datasheet_peak("NVIDIA H100 PCIe") == 756e12
    assert gpu.datasheet_peak("NVIDIA A100-SXM4-80GB") == 312e12
    assert gpu.datasheet_peak("Some CPU") is None
    assert gpu.median_after_warmup([100.0, 1.0, 3.0, 2.0, 4.0], 1) == (2.5, [1.0, 3.0, 2.0, 4.0])


def test_parameter_count_matches_nanogpts_model(monkeypatch):
    """Cross-check against nanoGPT's own model.py (when ../shared has it) on the tiny shape."""
    nanogpt = SHARED_DATA.parent / "third_party" / "nanoGPT"
    if not (nanogpt / "model.py").is_file():
        pytest.skip("nanoGPT is not available")
    gpu = bench_module()
    monkeypatch.syspath_prepend(str(nanogpt))
    import model as nano

    s = gpu.TINY
    config = nano.GPTConfig(block_size=s.block, vocab_size=s.vocab, n_layer=s.layers, n_head=s.heads, n_embd=s.dim,
                            dropout=0.0, bias=False)  # fmt: skip
    assert nano.GPT(config).get_num_params() == gpu.nanogpt_parameters(s)


@pytest.mark.slow
def test_tiny_full_run_has_every_row(tmp_path):
    """Every pipeline side by side (nanoGPT when ../shared has it), eval and generate ratios."""
    nanogpt = SHARED_DATA.parent / "third_party" / "nanoGPT"
    options = ["--skip-tests"] + (["--nanogpt", str(nanogpt)] if nanogpt.is_dir() else [])
    results, table = run_bench(tmp_path, *options)
    rows = {row["pipeline"]: row for row in results["training"]}
    expected = {"lmctl train", "HF Trainer"} | ({"nanoGPT train.py"} if nanogpt.is_dir() else set())
    assert set(rows) == expected, results["errors"]
    for row in rows.values():
        assert row["tokens_per_s"] > 0 and row["final_loss"] > 0 and row["peak_memory_bytes"] > 0
    # Same data, same schedule, a few steps from the same kind of init: losses close together.
    losses = [row["final_loss"] for row in rows.values()]
    assert max(losses) - min(losses) < 0.5, losses
    assert results["eval"]["ratio"] > 0 and results["generate"]["ratio"] > 0
    assert results["eval"]["loss_lmctl"] == pytest.approx(results["eval"]["loss_direct"], rel=1e-2)
    assert "lmctl eval speed / direct no_grad loop" in table
