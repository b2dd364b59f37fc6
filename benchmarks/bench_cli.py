#!/usr/bin/env python3
"""CLI start-up time: ``lmctl --help`` and ``lmctl train --help`` against the Hugging Face CLIs.

    python benchmarks/bench_cli.py [--repeats 15] [--out benchmarks/results/cli.md]

Median wall time of the whole process (interpreter start included), commands interleaved.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine, write_section  # noqa: E402


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cli.md")
    args = parser.parse_args(argv)
    lmctl = shutil.which("lmctl") or "lmctl"
    commands = {
        "lmctl --help": [lmctl, "--help"],
        "lmctl train --help": [lmctl, "train", "--help"],
        "lmctl plugins list": [lmctl, "plugins", "list"],
    }
    for name in ("accelerate", "transformers"):
        path = shutil.which(name)
        if path:
            commands[f"{name} --help"] = [path, "--help"]
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.repeats):
        for name, cmd in commands.items():
            times[name].append(timed(cmd))
    lines = [
        "## CLI start-up",
        "",
        f"Command: `python benchmarks/bench_cli.py --repeats {args.repeats}` ({datetime.date.today()}, {machine()}). "
        "Median wall time of the whole process, interleaved.",
        "",
        "| command | median (s) | target |",
        "| --- | --- | --- |",
    ]
    for name, values in times.items():
        target = "< 0.3 s: " + ("met" if statistics.median(values) < 0.3 else "NOT met") if name.startswith("lmctl") and "help" in name else ""
        lines.append(f"| `{name}` | {statistics.median(values):.3f} | {target} |")
    lines.append("")
    write_section(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
