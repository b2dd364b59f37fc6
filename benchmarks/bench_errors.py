#!/usr/bin/env python3
"""Time to a usage error: every mistake that needs no model is reported before torch or
transformers is imported.

    python benchmarks/bench_errors.py [--repeats 5] [--out benchmarks/results/errors.md]

Each case runs ``python -m lmctl ...`` in a fresh process (interpreter start included) in a
scratch directory, with an empty Hugging Face cache; the table gives the median wall time and
whether torch/transformers were imported when the error was raised (they must not be).
tests/test_early_errors.py runs the same cases and checks the exit codes, messages and imports.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine, write_section  # noqa: E402

# Runs the CLI as `python -m lmctl` does and, at exit, prints which heavy modules were imported.
PROBE = (
    "import atexit, sys, runpy\n"
    "atexit.register(lambda: sys.stderr.write('\\nHEAVY=' + ','.join(m for m in ('torch', 'transformers', 'accelerate') "
    "if m in sys.modules) + '\\n'))\n"
    "sys.argv = ['lmctl'] + sys.argv[1:]\n"
    "runpy.run_module('lmctl', run_name='__main__')\n"
)


def make_cases(root: Path) -> list[dict]:
    """Files for the mistakes, and the cases: name, argv, extra env, exit code, expected message."""
    (root / "runs" / "finished").mkdir(parents=True)
    (root / "runs" / "finished" / "run.json").write_text(json.dumps({"status": "finished", "result": {"steps": 90}}))
    (root / "runs" / "empty").mkdir()
    corpus = root / "corpus.txt"
    corpus.write_text("The quick brown fox jumps over the lazy dog.\n" * 200)
    (root / "one-line.txt").write_text("just one line of text\n")
    (root / "bad.toml").write_text("max_stepz = 10\n")
    (root / "model").mkdir()
    (root / "model" / "config.json").write_text("{}")
    scratch = ["--from-scratch", "--preset", "tiny"]
    return [
        # The floor: interpreter start and the CLI's own import, no error (exit 0).
        dict(name="reference: `lmctl --help` (no error)", argv=["--help"], code=0, message="Usage", reference=True),
        dict(name="generate: mistyped local path", argv=["generate", "--model", "runs/nonexistent", "hi"], code=1, message="model directory not found: runs/nonexistent"),
        dict(name="eval: mistyped local path", argv=["eval", "--model", "./runs/nonexistent", "--data", "corpus.txt"], code=1, message="no such directory"),
        dict(name="train --offline: hub id not cached", argv=["train", "--model", "gpt2", "--train", "corpus.txt", "--offline"], code=1, message="not in the local Hugging Face cache"),
        dict(name="HF_HUB_OFFLINE=1: hub id not cached", argv=["train", "--model", "gpt2", "--train", "corpus.txt"], env={"HF_HUB_OFFLINE": "1"}, code=1, message="not in the local Hugging Face cache"),
        dict(name="generate --offline: hub id not cached", argv=["generate", "--model", "gpt2", "--offline", "hi"], code=1, message="not in the local Hugging Face cache"),
        dict(name="train: --out holds an earlier run", argv=["train", "--model", "gpt2", *scratch, "--train", "corpus.txt", "--out", "runs/finished"], code=2, message="already holds an earlier run"),
        dict(name="train: --resume auto without checkpoints", argv=["train", "--model", "gpt2", *scratch, "--train", "corpus.txt", "--out", "runs/empty", "--resume", "auto"], code=2, message="no checkpoint"),
        dict(name="train: training file missing", argv=["train", "--model", "gpt2", *scratch, "--train", "missing.txt"], code=2, message="input not found"),
        dict(name="train: 1-line file, --validation-split", argv=["train", "--model", "gpt2", *scratch, "--train", "one-line.txt", "--validation-split", "0.1"], code=2, message="leaves no validation data"),
        dict(name="train: 1-line file, block 128", argv=["train", "--model", "gpt2", *scratch, "--train", "one-line.txt"], code=2, message="less than one block"),
        dict(name="train: unknown key in --config", argv=["train", "--config", "bad.toml", "--train", "corpus.txt"], code=2, message="max_stepz"),
        dict(name="train: bad --precision", argv=["train", "--model", "gpt2", *scratch, "--train", "corpus.txt", "--precision", "fp8"], code=2, message="--precision"),
        dict(name="eval: data file missing", argv=["eval", "--model", "model", "--data", "missing.txt"], code=1, message="data not found"),
        dict(name="eval: bad --document-split", argv=["eval", "--model", "model", "--data", "corpus.txt", "--document-split", "pages"], code=2, message="--document-split"),
        dict(name="generate: run dir with nothing saved", argv=["generate", "--model", "runs/finished", "hi"], code=2, message="neither a final model nor a checkpoint"),
    ]  # fmt: skip


def run_case(case: dict, root: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(
        PYTHONPATH=str(REPO), HF_HOME=str(root / "hf-home"), LMCTL_CACHE=str(root / "lmctl-cache"), NO_COLOR="1",
        **case.get("env", {}),
    )  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *case["argv"]], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )
    seconds = time.perf_counter() - start
    heavy = proc.stderr.rsplit("HEAVY=", 1)[-1].strip() if "HEAVY=" in proc.stderr else "?"
    return {"code": proc.returncode, "stderr": proc.stderr, "heavy": heavy, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "errors.md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cases = make_cases(root)
        times: dict[str, list[float]] = {case["name"]: [] for case in cases}
        imported: dict[str, str] = {}
        for _ in range(args.repeats):
            for case in cases:
                outcome = run_case(case, root)
                times[case["name"]].append(outcome["seconds"])
                imported[case["name"]] = outcome["heavy"] or "none"
        load = os.getloadavg()[0]
    lines = [
        "## Time to a usage error",
        "",
        f"Command: `python benchmarks/bench_errors.py --repeats {args.repeats}` ({datetime.date.today()}, {machine()}; "
        f"1-minute load average {load:.1f} at the end). Median wall time of `python -m lmctl ...` to its one-line error, "
        "interpreter start included, and what of torch/transformers/accelerate was imported by then.",
        "",
        "| mistake | command | median (s) | / `lmctl --help` | heavy imports | target < 1 s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    reference = statistics.median(times[cases[0]["name"]])
    for case in cases:
        median = statistics.median(times[case["name"]])
        env = "".join(f"{k}={v} " for k, v in case.get("env", {}).items())
        command = env + "lmctl " + " ".join(case["argv"])
        lines.append(
            f"| {case['name']} | `{command}` | {median:.2f} | {median / reference:.2f}x | {imported[case['name']]} | "
            f"{'met' if median < 1 else 'NOT met'} |"
        )
    lines += [
        "",
        "The `/ lmctl --help` column is the time over that of the plain `lmctl --help` of the same run "
        "(interpreter start and the CLI's import, 0.2 s on a quiet machine): on a busy machine every process "
        "start is slower, and the ratio is what the error checks themselves add.",
    ]
    lines.append("")
    write_section(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
