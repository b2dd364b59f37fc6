"""Helpers shared by the benchmark scripts: corpora, measured subprocesses, machine description."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
SOURCES = [SHARED / "data" / "tinyshakespeare.txt", SHARED / "data" / "wikitext-2" / "valid.txt"]


def build_corpus(path: Path, megabytes: float) -> int:
    """Repeat the shared corpora (tinyshakespeare + WikiText-2 valid) until ``path`` holds ``megabytes`` MB."""
    base = b"".join(p.read_bytes() for p in SOURCES)
    target = int(megabytes * 1_000_000)
    with open(path, "wb") as f:
        written = 0
        while written < target:
            f.write(base)
            written += len(base)
    return written


def run_measured(cmd: list[str], env: dict[str, str] | None = None, cwd: str | Path | None = None) -> dict:
    """Run a command; wall time, CPU time and peak RSS of that process (its own, via wait4)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd)
    # Read the pipes while it runs, then reap this very child with wait4 for its rusage.
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{stderr.decode()[-2000:]}")
    return {
        "seconds": seconds,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "stdout": stdout.decode(),
        "stderr": stderr.decode(),
    }


def write_section(path: Path, lines: list[str]) -> None:
    """Write a benchmark's markdown section to benchmarks/results/ (for run.py --assemble) and echo it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{cpu}, {os.cpu_count()} CPUs{mem}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def versions() -> str:
    import tokenizers
    import torch
    import transformers

    import lmctl

    return f"lmctl {lmctl.__version__}, torch {torch.__version__}, transformers {transformers.__version__}, tokenizers {tokenizers.__version__}"
