#!/usr/bin/env python3
"""Benchmark ``lmctl train`` against the classic recipe and the nanoGPT reference run.

    python benchmarks/bench_train.py [--repeats 3] [--steps 150] [--skip-nanogpt] [--skip-scaling]
                                     [--nanogpt NANOGPT_CHECKOUT]
                                     [--out benchmarks/results/train.md]

All side by side on this machine, each command a separate process (wall time and peak RSS of that
process via wait4):

1. **Throughput vs the Trainer recipe**: ``seed_pipeline.py train`` (datasets + transformers.Trainer,
   fp32 defaults) and ``lmctl train`` with its default settings on the same corpus
   (tinyshakespeare + WikiText-2 valid), the same byte-level BPE tokenizer (vocab 4096, trained once
   by ``lmctl prepare``), the same model shape (gpt2, 4 layers, 4 heads, 128 wide, block 128, batch
   16) and the same number of steps; interleaved, medians of ``--repeats``.  Throughput is tokens
   per second of optimizer steps: the seed's figure is its own (steps x batch x block / the
   Trainer's ``train()`` time), lmctl's comes from ``run.json`` (the loop after its first step).
   Also: lmctl's final loss with ``--precision auto`` vs ``--precision fp32`` (must stay within 2%),
   and peak RSS of both pipelines.
2. **nanoGPT reference** (shakespeare-char): the whole ``lmctl train`` process (implicit prepare with
   a char tokenizer, 2000 steps, final evaluation of the full validation split) against nanoGPT's
   ``train.py`` with its README's CPU settings, run interleaved in the checkout given by
   ``--nanogpt DIR`` (its ``data/shakespeare_char/prepare.py`` already run); without it, against
   the reference figure of ../shared/bench/README.md (59.4 s, val loss 1.8857, another machine).
3. **Scaling**: tokens/s and peak RSS of ``lmctl train`` for about 1M, 10M and 50M parameters at
   block sizes 128 and 512 (a few steps each).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, SHARED, build_corpus, machine, run_measured, versions, write_section  # noqa: E402

SEED = SHARED / "bench" / "seed_pipeline.py"
SHAKESPEARE = SHARED / "data" / "tinyshakespeare.txt"
NANOGPT_SECONDS = 59.4  # nanoGPT train.py, whole process, measured on this machine class
NANOGPT_VAL_LOSS = 1.8857

NANOGPT_ARGS = [
    "--model", "gpt2", "--from-scratch", "--model-config", "n_layer=4", "--model-config", "n_head=4",
    "--model-config", "n_embd=128", "--tokenizer", "char", "--validation-split", "0.1", "--document-split", "file",
    "--block-size", "64", "--batch-size", "12", "--dropout", "0", "--max-steps", "2000", "--lr", "1e-3",
    "--min-lr", "1e-4", "--warmup-steps", "100", "--weight-decay", "0.1", "--beta2", "0.99", "--grad-clip", "1.0",
    "--eval-every", "250", "--eval-batches", "20", "--save-every", "0", "--log-every", "100",
]  # fmt: skip


def lmctl(*args: str) -> list[str]:
    return [sys.executable, "-m", "lmctl", *args]


def run_record(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


def final_train_loss(out: Path) -> float:
    return run_record(out)["result"]["final_train_loss"]


def throughput(args: argparse.Namespace, work: Path) -> list[str]:
    corpus = work / "corpus.txt"
    build_corpus(corpus, 2.0)  # ~2 MB: enough for every step without repeating an epoch
    data = work / "prepared"
    run_measured(lmctl("prepare", "--train", str(corpus), "--tokenizer", "bytelevel-bpe", "--vocab-size", "4096",
                       "--block-size", "128", "--out", str(data), "--force"))  # fmt: skip
    tokenizer = data / "tokenizer"
    shape = ["--model", "gpt2", "--from-scratch", "--model-config", "n_layer=4", "--model-config", "n_head=4",
             "--model-config", "n_embd=128", "--block-size", "128", "--batch-size", "16", "--lr", "1e-3",
             "--max-steps", str(args.steps), "--eval-every", "0", "--save-every", "0", "--quiet"]  # fmt: skip
    rows: dict[str, list[dict]] = {"seed": [], "lmctl": [], "lmctl-fp32": []}
    # A cache of its own, as on a fresh machine: the first default run measures fp32 against bf16
    # (--precision auto) and later runs reuse that decision, as they would for a user.
    env = {**os.environ, "LMCTL_CACHE": str(work / "cache")}
    for repeat in range(args.repeats):
        seed = run_measured([sys.executable, str(SEED), "train", "--text", str(corpus), "--tokenizer", str(tokenizer),
                             "--steps", str(args.steps)])  # fmt: skip
        figures = json.loads(seed["stdout"].strip().splitlines()[-1])
        rows["seed"].append({**seed, "tokens_per_s": figures["tokens_per_s"], "loss": figures["train_loss"]})
        for name, extra in (("lmctl", []), ("lmctl-fp32", ["--precision", "fp32"])):
            out = work / f"{name}-{repeat}"
            result = run_measured(lmctl("train", *shape, "--train", str(data), "--out", str(out), *extra), env=env)
            record = run_record(out)
            rows[name].append(
                {**result, "tokens_per_s": record["result"]["tokens_per_s"], "loss": final_train_loss(out),
                 "precision": record["resolved"]["precision"]}  # fmt: skip
            )
    med = {name: {k: statistics.median(r[k] for r in runs) for k in ("tokens_per_s", "seconds", "peak_rss_mib", "loss")}
           for name, runs in rows.items()}  # fmt: skip
    ratio = med["lmctl"]["tokens_per_s"] / med["seed"]["tokens_per_s"]
    loss_gap = abs(med["lmctl"]["loss"] - med["lmctl-fp32"]["loss"]) / med["lmctl-fp32"]["loss"]
    precision = "/".join(sorted({r["precision"] for r in rows["lmctl"]}))
    cmd = (f"python benchmarks/bench_train.py --repeats {args.repeats} --steps {args.steps}")
    lines = [
        "## Training throughput vs the classic Trainer recipe",
        "",
        f"Command: `{cmd}`. gpt2 4 layers / 4 heads / 128 wide, vocab 4096 (byte-level BPE), block 128, batch 16, "
        f"{args.steps} steps, medians of {args.repeats} interleaved runs. lmctl defaults resolved to precision **{precision}**.",
        "",
        "| pipeline | tokens/s | whole process (s) | peak RSS (MiB) | final train loss |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, label in (("seed", "seed_pipeline.py train (Trainer, fp32)"), ("lmctl", "lmctl train (defaults)"),
                        ("lmctl-fp32", "lmctl train --precision fp32")):  # fmt: skip
        m = med[name]
        lines.append(f"| {label} | {m['tokens_per_s']:,.0f} | {m['seconds']:.1f} | {m['peak_rss_mib']:.0f} | {m['loss']:.4f} |")
    lines += [
        "",
        f"* lmctl / seed throughput: **{ratio:.2f}x** (target >= 1.6x: {'met' if ratio >= 1.6 else 'NOT met'}).",
        f"* final loss, lmctl defaults vs fp32: {loss_gap * 100:.2f}% apart (target <= 2%: {'met' if loss_gap <= 0.02 else 'NOT met'}). "
        "(The seed's loss column is the Trainer's mean over all steps, not comparable.)",
        f"* peak RSS, lmctl vs seed: {med['lmctl']['peak_rss_mib']:.0f} vs {med['seed']['peak_rss_mib']:.0f} MiB "
        f"(target: no higher: {'met' if med['lmctl']['peak_rss_mib'] <= med['seed']['peak_rss_mib'] else 'NOT met'}).",
        "",
    ]
    return lines


NANOGPT_COMMAND = [
    "train.py", "config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20",
    "--log_interval=1", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128",
    "--max_iters=2000", "--lr_decay_iters=2000", "--dropout=0.0",
]  # fmt: skip  (nanoGPT's README, "I only have a macbook")


def nanogpt(args: argparse.Namespace, work: Path) -> list[str]:
    runs, reference = [], []
    for repeat in range(args.repeats):
        # Interleaved: nanoGPT, then lmctl, so drifting load on a shared machine hits both alike.
        if args.nanogpt:
            timed = run_measured(["bash", "-c", 'cd "$0" && exec "$@"', str(args.nanogpt), sys.executable,
                                  *NANOGPT_COMMAND])  # fmt: skip
            found = re.findall(r"step (\d+): train loss [\d.]+, val loss ([\d.]+)", timed["stdout"])
            reference.append({**timed, "val_loss": float(found[-1][1])})
        out = work / f"nano-{repeat}"
        # An empty cache for every run: the implicit prepare (tokenizer training, tokenizing) is timed each time.
        env = {**os.environ, "LMCTL_CACHE": str(work / f"cache-nano-{repeat}")}
        result = run_measured(lmctl("train", *NANOGPT_ARGS, "--train", str(SHAKESPEARE), "--out", str(out), "--quiet"), env=env)
        record = run_record(out)
        runs.append({**result, "val_loss": record["result"]["final_eval"]["loss"],
                     "tokens_per_s": record["result"]["tokens_per_s"]})  # fmt: skip
    seconds = statistics.median(r["seconds"] for r in runs)
    val = statistics.median(r["val_loss"] for r in runs)
    ms_per_iter = 12 * 64 / statistics.median(r["tokens_per_s"] for r in runs) * 1000
    if reference:
        ref_seconds = statistics.median(r["seconds"] for r in reference)
        ref_val = statistics.median(r["val_loss"] for r in reference)
        ref_row = f"| nanoGPT train.py, same machine, interleaved | {ref_seconds:.1f} | {ref_val:.4f} (20-batch estimate) |"
        ref_source = (f"nanoGPT's train.py run in `{args.nanogpt.name}/` with `python {' '.join(NANOGPT_COMMAND)}` "
                      "(how that checkout was made: see \"nanoGPT's wall time\" below)")  # fmt: skip
    else:
        ref_seconds, ref_val = NANOGPT_SECONDS, NANOGPT_VAL_LOSS
        ref_row = f"| nanoGPT train.py (reference figure, ../shared/bench/README.md) | {ref_seconds} | {ref_val} (20-batch estimate) |"
        ref_source = "the reference figure (no `--nanogpt DIR` given: not measured side by side)"
    command = "lmctl train --train ../shared/data/tinyshakespeare.txt --out runs/nano " + " ".join(NANOGPT_ARGS)
    nano_flag = " --nanogpt NANOGPT_DIR" if args.nanogpt else ""
    lines = [
        "## nanoGPT reference run (shakespeare-char)",
        "",
        f"Benchmark: `python benchmarks/bench_train.py --skip-throughput --skip-scaling --repeats {args.repeats}"
        f"{nano_flag}`.  lmctl's command (whole process timed: implicit prepare with a char tokenizer, 2000 steps, "
        f"final evaluation of the full validation split; medians of {args.repeats}).  "
        "`../shared/data/tinyshakespeare.txt` is char-rnn's tinyshakespeare (any copy works):",
        "",
        "<!-- docs-test: files ../shared/data/tinyshakespeare.txt -->",
        f"```bash\n{command}\n```",
        "",
        f"Compared with {ref_source}.",
        "",
        "| run | wall time (s) | validation loss |",
        "| --- | --- | --- |",
        ref_row,
        f"| lmctl train | {seconds:.1f} | {val:.4f} (whole split) |",
        "",
        f"* validation loss {val:.4f} (target <= 1.89: {'met' if val <= 1.89 else 'NOT met'}); "
        f"wall time {seconds / ref_seconds:.2f}x nanoGPT's (target <= 1.0x: {'met' if seconds <= ref_seconds else 'NOT met'}); "
        f"lmctl {ms_per_iter:.1f} ms per training step.",
        "* lmctl runs: " + ", ".join(f"{r['seconds']:.1f} s / {r['val_loss']:.4f}" for r in runs),
    ]
    if reference:
        lines.append("* nanoGPT runs: " + ", ".join(f"{r['seconds']:.1f} s / {r['val_loss']:.4f}" for r in reference))
    if args.nanogpt:
        lines += ["", *step_comparison(args.nanogpt)]
    return [*lines, "", *nano_model_section(out, record, env)]


def step_comparison(nanogpt_dir: Path) -> list[str]:
    """Per-step cost of nanoGPT's model vs the transformers GPT-2 lmctl trains (benchmarks/nano_step.py)."""
    result = run_measured([sys.executable, str(Path(__file__).resolve().parent / "nano_step.py"), str(nanogpt_dir)])
    ms = json.loads(result["stdout"].strip().splitlines()[-1])
    return [
        "Where the wall-time gap comes from (`python benchmarks/nano_step.py NANOGPT_DIR`: the two models in one "
        "process, interleaved, median ms; 12 x 64 characters):",
        "",
        "| | nanoGPT `GPT` (no biases, `nn.Linear`) | `transformers` GPT2LMHeadModel (lmctl) |",
        "| --- | --- | --- |",
        f"| training step (forward, backward, clip, AdamW) | {ms['nanogpt_step_ms']} | {ms['lmctl_gpt2_step_ms']} |",
        f"| forward only | {ms['nanogpt_forward_ms']} | {ms['lmctl_gpt2_forward_ms']} |",
        f"| forward + backward of 4 tokens (framework overhead) | {ms['nanogpt_4_tokens_fwd_bwd_ms']} | "
        f"{ms['lmctl_gpt2_4_tokens_fwd_bwd_ms']} |",
    ]


def nano_model_section(out: Path, record: dict, env: dict[str, str]) -> list[str]:
    """``lmctl eval`` and ``lmctl generate`` on the last nanoGPT-reference model."""
    data = record["resolved"]["data"]  # the prepared directory of its implicit prepare
    scores = json.loads(run_measured(lmctl("eval", "--model", str(out), "--data", data, "--block-size", "64", "--json"),
                                     env=env)["stdout"])  # fmt: skip
    scores = scores[0] if isinstance(scores, list) else scores
    sample = [run_measured(lmctl("generate", "--model", str(out), "ROMEO:", "--seed", "0", "--max-new-tokens", "50"),
                           env=env)["stdout"].strip() for _ in range(2)]  # fmt: skip
    same = "twice byte-identically" if sample[0] == sample[1] else "NOT identically on a second run"
    return [
        "## The nanoGPT-reference model: evaluation and samples",
        "",
        "The model of the last lmctl run above, evaluated on the last 10% of tinyshakespeare (the validation split "
        "its implicit `prepare` wrote, every character scored once in 64-token windows):",
        "",
        "```bash\nlmctl eval --model runs/nano --data PREPARED_DIR --block-size 64 --json\n```",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| loss (nats per character) | {scores['loss']:.4f} |",
        f"| perplexity | {scores['perplexity']:.4f} |",
        f"| bits per byte | {scores['bits_per_byte']:.4f} |",
        f"| tokens scored | {scores['tokens']:,} |",
        "",
        "The loss is the training run's final evaluation again (same code path, whole split).  nanoGPT's own "
        "figure is an estimate over 20 random batches of 12 x 64 characters.",
        "",
        f"`lmctl generate --model runs/nano \"ROMEO:\" --seed 0 --max-new-tokens 50` printed, {same}: "
        f"`{' '.join(sample[0].split())}`",
        "",
    ]


def scaling(args: argparse.Namespace, work: Path) -> list[str]:
    corpus = work / "corpus.txt"
    if not corpus.exists():
        build_corpus(corpus, 2.0)
    data = work / "prepared-scaling"
    run_measured(lmctl("prepare", "--train", str(corpus), "--tokenizer", "bytelevel-bpe", "--vocab-size", "4096",
                       "--out", str(data), "--force"))  # fmt: skip
    shapes = {"~1M": ("4", "4", "128"), "~10M": ("6", "6", "384"), "~50M": ("8", "8", "704")}
    lines = [
        "## Scaling (lmctl train, defaults)",
        "",
        f"Command: `python benchmarks/bench_train.py --scaling-steps {args.scaling_steps}` (gpt2 shapes, vocab 4096, "
        f"batch 8, {args.scaling_steps} steps; tokens/s after the first step).",
        "",
        "| model | parameters | block | precision | tokens/s | peak RSS (MiB) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, (layers, heads, width) in shapes.items():
        for block in (128, 512):
            out = work / f"scale-{name}-{block}"
            result = run_measured(lmctl(
                "train", "--model", "gpt2", "--from-scratch", "--model-config", f"n_layer={layers}",
                "--model-config", f"n_head={heads}", "--model-config", f"n_embd={width}", "--train", str(data),
                "--block-size", str(block), "--batch-size", "8", "--max-steps", str(args.scaling_steps),
                "--eval-every", "0", "--save-every", "0", "--quiet", "--out", str(out)))  # fmt: skip
            record = run_record(out)
            params = record["resolved"]["parameters"]
            lines.append(f"| {name} | {params / 1e6:.1f}M | {block} | {record['resolved']['precision']} | "
                         f"{record['result']['tokens_per_s']:,.0f} | {result['peak_rss_mib']:.0f} |")  # fmt: skip
    lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--scaling-steps", type=int, default=4)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-nanogpt", action="store_true")
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--nanogpt", type=Path, help="a nanoGPT checkout with data/shakespeare_char prepared: "
                        "run its train.py side by side (interleaved) instead of quoting the reference figure")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "train.md")
    args = parser.parse_args(argv)
    if not SEED.exists() or not SHAKESPEARE.exists():
        print(f"skipped: {SHARED} is not available", file=sys.stderr)
        return 0
    lines = [f"<!-- {datetime.date.today()} on {machine()}; {versions()} -->", ""]
    with tempfile.TemporaryDirectory(prefix="lmctl-bench-train-") as tmp:
        work = Path(tmp)
        if not args.skip_throughput:
            lines += throughput(args, work)
        if not args.skip_nanogpt:
            lines += nanogpt(args, work)
        if not args.skip_scaling:
            lines += scaling(args, work)
    write_section(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
