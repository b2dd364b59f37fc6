#!/usr/bin/env python3
"""Reproduce every row of docs/benchmarks.md: run each benchmark, then assemble the page.

    python benchmarks/run.py                 # everything (about half an hour on 2 CPU cores)
    python benchmarks/run.py --only train    # one area: cli, prepare, train, eval, generate
    python benchmarks/run.py --assemble      # only rebuild docs/benchmarks.md from benchmarks/results/
    python benchmarks/run.py --nanogpt DIR   # also run nanoGPT's train.py (a prepared checkout) side by side

The GPU section comes from `python benchmarks/gpu.py --update-docs` on a GPU machine (see that
script); `--assemble` keeps whatever benchmarks/results/gpu.md holds.

Each script writes its section to benchmarks/results/<area>.md; run them on a quiet machine
(the figures are ratios measured side by side, but a loaded machine still skews them).
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from common import machine  # noqa: E402

AREAS = {
    "cli": ["bench_cli.py"],
    "prepare": ["bench_prepare.py", "--quiet-load", "1.5"],
    "train": ["bench_train.py"],
    "eval": ["bench_eval.py", "--runs", "5", "--markdown", "benchmarks/results/eval.md"],
    "generate": ["bench_generate.py", "--runs", "5", "--markdown", "benchmarks/results/generate.md"],
    "errors": ["bench_errors.py"],
    "load": ["bench_load.py"],
    # Two revisions side by side (here: the restructure against the commit before it).
    "compare": ["bench_compare.py", "1e0e534", "97f06b3", "--pairs", "5"],
}
ORDER = ["cli", "errors", "load", "prepare", "train", "eval", "generate", "compare"]

HEADER = """# Benchmarks

Every figure on this page is produced by a script in [`benchmarks/`](https://github.com/lmctl/lmctl/tree/main/benchmarks);
`python benchmarks/run.py` (or `nox -s bench`) reruns them all and rebuilds this page.  Each
section names its exact command.  The machines these ran on are shared and noisy: every figure is
a ratio measured side by side in one run, as a median of several runs, and the absolute numbers
drift between runs.

Machine: {machine}. Assembled {date}.
"""


def assemble() -> Path:
    parts = [HEADER.format(machine=machine(), date=datetime.date.today())]
    for area in ORDER:
        path = HERE / "results" / f"{area}.md"
        if path.is_file():
            text = path.read_text().strip()
            # Sections are level-2 headings here, whatever the script used.
            text = "\n".join(("#" + line) if line.startswith("# ") else line for line in text.splitlines())
            parts.append(text + "\n")
    extra = HERE / "results" / "notes.md"
    if extra.is_file():
        parts.append(extra.read_text().strip() + "\n")
    # The GPU section: its figures written by `benchmarks/gpu.py --update-docs` on a GPU (not run
    # from here: its shapes are GPU-sized), then its hand-written notes (method, open questions).
    for name in ("gpu.md", "gpu-notes.md"):
        path = HERE / "results" / name
        if path.is_file():
            text = path.read_text().strip()
            parts.append("\n".join(("#" + line) if line.startswith("# ") else line for line in text.splitlines()) + "\n")
    out = REPO / "docs" / "benchmarks.md"
    out.write_text("\n".join(parts))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=ORDER, action="append")
    parser.add_argument("--assemble", action="store_true", help="only rebuild docs/benchmarks.md")
    parser.add_argument("--nanogpt", help="a nanoGPT checkout with data/shakespeare_char prepared (train benchmark)")
    args = parser.parse_args(argv)
    failures = []
    if not args.assemble:
        for area in args.only or ORDER:
            script, *options = AREAS[area]
            if area == "train" and args.nanogpt:
                options = [*options, "--nanogpt", args.nanogpt]
            print(f"== {area}: {script} {' '.join(options)}", file=sys.stderr)
            if subprocess.run([sys.executable, str(HERE / script), *options], cwd=REPO).returncode != 0:
                failures.append(area)
    print(f"wrote {assemble()}", file=sys.stderr)
    if failures:
        print(f"benchmarks with unmet targets or errors: {', '.join(failures)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
