#!/usr/bin/env python3
"""Compare two revisions of lmctl on the same workloads: did a change make anything slower?

    python benchmarks/bench_compare.py BASE [NEW] [--pairs 5] [--only train,prepare,nanogpt]
                                       [--out benchmarks/results/compare.md]

BASE and NEW are git revisions (NEW defaults to the working tree).  Each is checked out into a
temporary git worktree and run with ``PYTHONPATH`` pointing at it, in the same virtual environment,
as separate processes, in interleaved pairs (BASE, NEW, BASE, NEW, ...) so that drifting load on a
shared machine hits both alike.  The figure is the median over pairs of NEW / BASE (higher is better
for throughput: BASE time / NEW time for wall times).

Workloads (the figures docs/benchmarks.md reports):

* ``train``: the throughput row of bench_train.py: gpt2 4 layers / 4 heads / 128 wide, vocab 4096,
  block 128, batch 16, ``--steps`` steps (default 150), fp32 (the precision probe is left out so both
  sides run the same arithmetic); tokens/s of the loop from run.json.
* ``prepare``: ``lmctl prepare`` of a ``--mb`` MB corpus (default 20, bench_prepare.py's size) with a
  trained byte-level BPE tokenizer reused from a first run; whole-process wall time.
* ``nanogpt``: the nanoGPT shakespeare-char reference run of bench_train.py (2000 steps, char
  tokenizer, the final evaluation of the whole validation split): wall time and validation loss.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import NANOGPT_ARGS, SHAKESPEARE  # noqa: E402
from common import REPO, build_corpus, machine, run_measured, write_section  # noqa: E402

WORKLOADS = ("train", "prepare", "nanogpt")
CPU_SECONDS: dict[str, dict[str, list[float]]] = {}  # workload -> side -> CPU seconds of each process


def checkout(revision: str | None, where: Path) -> Path:
    """A worktree of ``revision`` (None: this working tree, used in place).  The worktree gets its
    own ``../shared`` link when this checkout has one (benchmarks read the corpora from there)."""
    if revision is None:
        return REPO
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(where), revision], check=True,
                   capture_output=True)  # fmt: skip
    return where


def lmctl_env(tree: Path, cache: Path) -> dict[str, str]:
    # PASSIVE: idle OpenMP threads sleep instead of spinning, so on a machine shared with other work
    # neither side's time depends on how long its threads spun (the same setting for both sides).
    return {**os.environ, "PYTHONPATH": str(tree), "LMCTL_CACHE": str(cache), "OMP_WAIT_POLICY": "PASSIVE"}


def lmctl(*args: str) -> list[str]:
    return [sys.executable, "-m", "lmctl", *args]


def run_in(tree: Path, cmd: list[str], cache: Path) -> dict:
    """Run ``cmd`` against ``tree``: ``python -m`` puts the working directory first on sys.path, so
    the process runs inside the tree (and PYTHONPATH names it for anything it starts)."""
    return run_measured(cmd, env=lmctl_env(tree, cache), cwd=tree)


def measure_train(tree: Path, work: Path, data: Path, steps: int, tag: str) -> float:
    out = work / f"train-{tag}"
    shutil.rmtree(out, ignore_errors=True)
    shape = ["--model", "gpt2", "--from-scratch", "--model-config", "n_layer=4", "--model-config", "n_head=4",
             "--model-config", "n_embd=128", "--block-size", "128", "--batch-size", "16", "--lr", "1e-3",
             "--max-steps", str(steps), "--eval-every", "0", "--save-every", "0", "--quiet", "--precision", "fp32"]  # fmt: skip
    result = run_in(tree, lmctl("train", *shape, "--train", str(data), "--out", str(out)), work / "cache")
    if result.get("returncode"):
        raise SystemExit(f"train failed in {tree}: {result['stderr'][-2000:]}")
    CPU_SECONDS.setdefault("train", {}).setdefault(tag.split("-")[0], []).append(result["cpu_seconds"])
    return json.loads((out / "run.json").read_text())["result"]["tokens_per_s"]


def measure_prepare(tree: Path, work: Path, corpus: Path, tokenizer: Path, tag: str) -> float:
    out = work / f"prepared-{tag}"
    result = run_in(tree, lmctl("prepare", "--train", str(corpus), "--tokenizer", str(tokenizer), "--block-size", "128",
                                "--out", str(out), "--force"), work / "cache")  # fmt: skip
    if result.get("returncode"):
        raise SystemExit(f"prepare failed in {tree}: {result['stderr'][-2000:]}")
    CPU_SECONDS.setdefault("prepare", {}).setdefault(tag.split("-")[0], []).append(result["cpu_seconds"])
    return result["seconds"]


def measure_nanogpt(tree: Path, work: Path, tag: str) -> tuple[float, float]:
    out = work / f"nano-{tag}"
    shutil.rmtree(out, ignore_errors=True)
    cache = work / f"nano-cache-{tag}"  # an empty cache: the implicit prepare is timed each time
    shutil.rmtree(cache, ignore_errors=True)
    result = run_in(tree, lmctl("train", *NANOGPT_ARGS, "--train", str(SHAKESPEARE), "--out", str(out), "--quiet"), cache)
    if result.get("returncode"):
        raise SystemExit(f"nanoGPT run failed in {tree}: {result['stderr'][-2000:]}")
    CPU_SECONDS.setdefault("nanogpt", {}).setdefault(tag.split("-")[0], []).append(result["cpu_seconds"])
    record = json.loads((out / "run.json").read_text())
    return result["seconds"], record["result"]["final_eval"]["loss"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base")
    parser.add_argument("new", nargs="?", default=None)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--mb", type=float, default=20.0)
    parser.add_argument("--only", default=",".join(WORKLOADS))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "compare.md")
    args = parser.parse_args(argv)
    only = [w.strip() for w in args.only.split(",") if w.strip()]
    if "nanogpt" in only and not SHAKESPEARE.is_file():
        print(f"skipping nanogpt: {SHAKESPEARE} is absent")
        only.remove("nanogpt")

    work = Path(tempfile.mkdtemp(prefix="lmctl-compare-"))
    trees = {"base": checkout(args.base, work / "base-tree"), "new": checkout(args.new, work / "new-tree")}
    for side, tree in trees.items():  # each side must import its own lmctl
        found = subprocess.run([sys.executable, "-c", "import lmctl; print(lmctl.__file__)"], cwd=tree,
                               env=lmctl_env(tree, work / "cache"), capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
        if not Path(found).resolve().is_relative_to(Path(tree).resolve()):
            raise SystemExit(f"the {side} side imports lmctl from {found}, not from {tree}")
    figures: dict[str, dict[str, list[float]]] = {w: {"base": [], "new": []} for w in only}
    extra: dict[str, list[float]] = {"base": [], "new": []}
    try:
        corpus = work / "corpus.txt"
        if "train" in only or "prepare" in only:
            build_corpus(corpus, 2.0)
            data = work / "train-data"
            run_in(trees["base"], lmctl("prepare", "--train", str(corpus), "--tokenizer", "bytelevel-bpe", "--vocab-size",
                                        "4096", "--block-size", "128", "--out", str(data), "--force"), work / "cache")  # fmt: skip
        if "prepare" in only:
            big = work / "big.txt"
            build_corpus(big, args.mb)
        for pair in range(args.pairs):
            order = ("base", "new") if pair % 2 == 0 else ("new", "base")  # alternate who goes first
            for side in order:
                tree, tag = trees[side], f"{side}-{pair}"
                if "train" in only:
                    figures["train"][side].append(measure_train(tree, work, data, args.steps, tag))
                if "prepare" in only:
                    figures["prepare"][side].append(measure_prepare(tree, work, big, data / "tokenizer", tag))
                if "nanogpt" in only:
                    seconds, loss = measure_nanogpt(tree, work, tag)
                    figures["nanogpt"][side].append(seconds)
                    extra[side].append(loss)
            print(json.dumps({"pair": pair, **{w: {s: v[-1] for s, v in f.items()} for w, f in figures.items()}}), flush=True)
    finally:
        for side in ("base", "new"):
            if trees[side] != REPO:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(trees[side])], capture_output=True)

    def ratios(workload: str, higher_is_better: bool) -> list[float]:
        pairs = zip(figures[workload]["base"], figures[workload]["new"], strict=True)
        return [new / base if higher_is_better else base / new for base, new in pairs]

    new_name = args.new or "working tree"
    cmd = f"python benchmarks/bench_compare.py {args.base}{' ' + args.new if args.new else ''} --pairs {args.pairs} --only {','.join(only)}"
    lines = [
        "## Before and after a change",
        "",
        f"Command: `{cmd}` on {machine()}. BASE = `{args.base}`, NEW = `{new_name}`; {args.pairs} interleaved pairs, "
        "each side a separate process with OMP_WAIT_POLICY=PASSIVE; the ratio is NEW/BASE per pair (>= 1 means NEW is "
        "as fast or faster), median over pairs; the last column compares the processes' CPU time (user + system), "
        "which drifting load from other work disturbs less than wall time.",
        "",
        "| workload | BASE (median) | NEW (median) | NEW/BASE per pair | median ratio | CPU-time ratio (BASE/NEW) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    units = {"train": ("tokens/s", True), "prepare": ("s", False), "nanogpt": ("s", False)}
    for workload in only:
        unit, higher = units[workload]
        r = ratios(workload, higher)
        base_med, new_med = statistics.median(figures[workload]["base"]), statistics.median(figures[workload]["new"])
        cpu = CPU_SECONDS.get(workload, {})
        cpu_ratio = [b / n for b, n in zip(cpu.get("base", []), cpu.get("new", []), strict=False)]
        lines.append(
            f"| {workload} | {base_med:,.1f} {unit} | {new_med:,.1f} {unit} | {', '.join(f'{x:.3f}' for x in r)} | "
            f"**{statistics.median(r):.3f}** | {statistics.median(cpu_ratio):.3f} |"
        )
    if "nanogpt" in only:
        lines += ["", f"nanoGPT validation loss (whole split): BASE {sorted(set(round(x, 4) for x in extra['base']))}, "
                      f"NEW {sorted(set(round(x, 4) for x in extra['new']))}."]  # fmt: skip
    lines.append("")
    write_section(args.out, lines)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
