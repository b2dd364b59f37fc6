#!/usr/bin/env python3
"""The quickstart under load: quiet against 4 busy processes on the same cores.

    python benchmarks/bench_load.py [--repeats 3] [--max-steps 100] [--busy 4] [--out benchmarks/results/load.md]

Each repeat runs ``lmctl quickstart --quiet`` on a quiet machine and with BUSY processes spinning
(``while True: pass``), interleaved, once with lmctl's default (``OMP_WAIT_POLICY=PASSIVE``: idle
torch threads sleep) and once with libgomp's own default (idle threads spin; ``GOMP_SPINCOUNT=300000``,
its built-in value, which lmctl leaves alone).  The fair share: with BUSY single-thread processes and
lmctl's threads (one per core) on C cores, every runnable thread gets C / (BUSY + C) of a core, so a
run should take (BUSY + C) / C times as long; the target is at most 1.5x that.

Other work on the machine distorts both figures (the load average is printed with them): run it on
an otherwise quiet machine.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine, write_section  # noqa: E402

SETTINGS = {
    "lmctl default (OMP_WAIT_POLICY=PASSIVE)": {},
    "libgomp default (threads spin)": {"GOMP_SPINCOUNT": "300000"},
}


def quickstart_seconds(max_steps: int, extra_env: dict[str, str], root: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(PYTHONPATH=str(REPO), LMCTL_CACHE=str(root / "cache"), **extra_env)
    out = root / "runs" / f"q-{time.monotonic_ns()}"
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "lmctl", "quickstart", "--out", str(out), "--max-steps", str(max_steps), "--quiet"],
        env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=100)
    parser.add_argument("--busy", type=int, default=4)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "load.md")
    args = parser.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    times: dict[tuple[str, str], list[float]] = {}
    loads: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        quickstart_seconds(2, {}, root)  # warm the prepare cache: every timed run then starts alike
        for repeat in range(args.repeats):
            for condition in (("quiet", "loaded") if repeat % 2 == 0 else ("loaded", "quiet")):
                busy = []
                if condition == "loaded":
                    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
                    time.sleep(1)
                try:
                    for name, env in SETTINGS.items():
                        times.setdefault((name, condition), []).append(quickstart_seconds(args.max_steps, env, root))
                        loads.append(os.getloadavg()[0])
                finally:
                    for process in busy:
                        process.kill()
                        process.wait()
    fair = (args.busy + cores) / cores
    lines = [
        "## Under load",
        "",
        f"Command: `python benchmarks/bench_load.py --repeats {args.repeats} --max-steps {args.max_steps} --busy {args.busy}` "
        f"({datetime.date.today()}, {machine()}; load average during the runs {min(loads):.1f}-{max(loads):.1f}). "
        f"`lmctl quickstart --max-steps {args.max_steps} --quiet`, whole process, median of {args.repeats}; loaded: "
        f"{args.busy} busy processes on the {cores} cores.  Fair share: {fair:.1f}x slower (target: at most "
        f"{1.5 * fair:.1f}x).",
        "",
        "| setting | quiet (s) | loaded (s) | slowdown | target |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in SETTINGS:
        quiet = statistics.median(times[(name, "quiet")])
        loaded = statistics.median(times[(name, "loaded")])
        slowdown = loaded / quiet
        lines.append(
            f"| {name} | {quiet:.1f} | {loaded:.1f} | {slowdown:.1f}x | {'met' if slowdown <= 1.5 * fair else 'NOT met'} |"
        )
    lines.append("")
    write_section(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
