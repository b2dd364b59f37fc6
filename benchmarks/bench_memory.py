#!/usr/bin/env python3
"""The memory plan against measured peak memory: GPT-2 124M (12 layers, 768 wide, vocabulary
50,257), fp32, full training / --activation-checkpointing / --lora, at batch 2 x block 256 and
batch 4 x block 1024; plus the time of ``lmctl train --dry-run`` for the same model.

    python benchmarks/bench_memory.py [--points 2x256,4x1024] [--modes full,ckpt,lora] [--steps 3]
                                      [--data ../shared/data/tinyshakespeare.txt] [--json results.json]

Each point is one ``lmctl train`` process (``--max-steps N --precision fp32 --dropout 0.1``,
evaluation and checkpoints off); the estimate and the measured peak (process max RSS on a CPU,
CUDA max allocated on a GPU) are read from its run.json, the step time from metrics.jsonl (the
median interval between logged steps, the first step excluded).  The base model is GPT-2 124M
built once with ``lmctl train --from-scratch --max-steps 1`` (LoRA needs a saved base).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GPT2_124M = ["--model-config", "vocab_size=50257", "--model-config", "n_positions=1024", "--dropout", "0.1"]
MODE_FLAGS = {"full": [], "ckpt": ["--activation-checkpointing"], "lora": ["--lora"]}


def lmctl(*args: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lmctl", *args], check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def step_time(out: Path) -> float | None:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    elapsed = [row["elapsed_s"] for row in rows if "train/loss" in row]
    gaps = [b - a for a, b in zip(elapsed, elapsed[1:], strict=False)]
    return statistics.median(gaps) if gaps else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", default="2x256,4x1024")
    parser.add_argument("--modes", default="full,ckpt,lora")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "tinyshakespeare.txt"))
    parser.add_argument("--work", default=None, help="Working directory (default: a temporary one).")
    parser.add_argument("--json", default=None, help="Also write the rows to this JSON file.")
    args = parser.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_memory_"))
    env = dict(os.environ, PYTHONPATH=str(REPO), LMCTL_CACHE=str(work / "cache"))
    rows = []

    dry = [lmctl("train", "--model", "gpt2", "--from-scratch", *GPT2_124M, "--train", args.data, "--dry-run",
                 "--block-size", "256", "--batch-size", "2", "--precision", "fp32", env=env) for _ in range(3)]  # fmt: skip
    rows.append({"mode": "dry-run", "seconds": statistics.median(dry)})
    print(f"dry run: {statistics.median(dry):.2f} s (median of 3)", flush=True)

    base = work / "base"
    if not (base / "config.json").is_file():
        lmctl("train", "--model", "gpt2", "--from-scratch", *GPT2_124M, "--train", args.data, "--out", str(base),
              "--max-steps", "1", "--block-size", "256", "--batch-size", "1", "--eval-every", "0", "--precision", "fp32",
              "--quiet", env=env)  # fmt: skip
    for point in args.points.split(","):
        batch, block = (int(x) for x in point.split("x"))
        for mode in args.modes.split(","):
            out = work / f"{mode}-{batch}x{block}"
            lmctl("train", "--model", str(base), "--train", args.data, "--out", str(out), "--max-steps", str(args.steps),
                  "--batch-size", str(batch), "--block-size", str(block), "--precision", "fp32", "--dropout", "0.1",
                  "--eval-every", "0", "--save-every", "0", "--log-every", "1", "--quiet", *MODE_FLAGS[mode], env=env)  # fmt: skip
            run = json.loads((out / "run.json").read_text())
            estimate, measured = run["result"]["estimated_peak_memory_bytes"], run["result"]["peak_memory_bytes"]
            row = {"mode": mode, "batch": batch, "block": block, "estimate": estimate, "measured": measured,
                   "error": (estimate - measured) / measured, "step_s": step_time(out),
                   "trainable": run["resolved"]["trainable_parameters"], "parameters": run["resolved"]["parameters"]}  # fmt: skip
            rows.append(row)
            print(f"| {mode} | {batch} x {block} | {estimate / 2**30:.2f} | {measured / 2**30:.2f} | "
                  f"{100 * row['error']:+.0f}% | {row['step_s'] or 0:.1f} |", flush=True)  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
