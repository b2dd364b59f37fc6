#!/usr/bin/env python3
"""lmctl eval's speed against a plain ``torch.no_grad()`` loop, and bf16 against fp32 (issue 5).

Same model, same windows, same batches on both sides:

* tinyshakespeare (the Python docs when it is absent) prepared by ``lmctl.workflows.prepare`` with a
  4096-token byte-level BPE and ``validation_split=0.1``: the validation split (the last 10%) is
  scored;
* a GPT-2 of the nanoGPT shakespeare shape (4 layers, 4 heads, 128 wide, 128 positions) trained
  for ``--train-steps`` steps so that its predictions are not uniform;
* block size 128, batch 16; stride 128 (non-overlapping windows) and stride 64 (sliding).

The plain loop is what one writes by hand: the whole split as one tensor in memory, windows cut
from it, ``model(x).logits`` over every position, ``cross_entropy`` on the scored positions.
lmctl's timings are :func:`lmctl.workflows.evaluate.evaluate_model` end to end (reading the memory-mapped
split, building windows and labels, the forward passes, the summing).  Both sides give the same
total NLL (checked).  Each figure is the median of ``--runs`` interleaved runs.

    python benchmarks/bench_eval.py [--runs 5] [--train-steps 200] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BLOCK, BATCH = 128, 16


def corpus_file(tmp: Path) -> Path:
    path = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
    if path.exists():
        return path
    import pydoc_data.topics as topics

    out = tmp / "pydoc.txt"
    out.write_text("\n\n".join(topics.topics[k] for k in sorted(topics.topics)), encoding="utf-8")
    return out


def plain_loop(model, ids, block: int, stride: int, batch: int) -> tuple[float, int]:
    """Sliding-window NLL by hand: windows of `block` inputs, the logits at each position predict
    the next token; the first window scores all its predictions, later ones the last `stride`."""
    import torch
    import torch.nn.functional as F

    n = len(ids)
    plan = []  # (input start, first scored position within the window)
    end = min(block, n - 1)  # targets 1..end are scored by the first window
    plan.append((0, 0, end))
    while end < n - 1:
        new_end = min(end + stride, n - 1)
        start = max(0, new_end - block)
        plan.append((start, end - start, new_end))
        end = new_end
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(plan), batch):
            group = plan[i : i + batch]
            width = max(e - s for s, _, e in group)
            x = torch.stack([ids[s : s + width] for s, _, e in group]) if all(e - s == width for s, _, e in group) else None
            if x is None:  # only when the split is shorter than one block
                for s, first, e in group:
                    logits = model(ids[s:e][None]).logits[0]
                    total += F.cross_entropy(logits[first:].float(), ids[s + 1 + first : e + 1], reduction="sum").item()
                    count += e - s - first
                continue
            logits = model(x).logits
            for row, (s, first, e) in enumerate(group):
                total += F.cross_entropy(logits[row, first:].float(), ids[s + 1 + first : e + 1], reduction="sum").item()
                count += e - s - first
    return total, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--markdown", type=Path, help="also write the results table here")
    args = parser.parse_args()

    import numpy as np
    import torch
    import transformers

    from lmctl.core.precision import autocast_context, resolve_precision
    from lmctl.core.prepared import PreparedData
    from lmctl.plugins.registry import get_family
    from lmctl.workflows.evaluate import evaluate_model
    from lmctl.workflows.prepare import PrepareConfig, prepare

    transformers.utils.logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    family = get_family("causal")
    with tempfile.TemporaryDirectory() as tmp:
        source = corpus_file(Path(tmp))
        prepare(
            PrepareConfig(
                train=[str(source)], validation_split=0.1, tokenizer="bytelevel-bpe", vocab_size=4096,
                family="causal", block_size=BLOCK, out=Path(tmp) / "prepared", progress="none",
            )
        )  # fmt: skip
        data = PreparedData(Path(tmp) / "prepared")
        tokenizer = data.load_tokenizer()
        train_split, split = data.split("train"), data.split("validation")
        train_ids = torch.from_numpy(np.asarray(train_split.tokens, dtype=np.int64))
        split_ids = torch.from_numpy(np.asarray(split.tokens, dtype=np.int64))

    torch.manual_seed(0)
    model = family.build_from_scratch(
        "gpt2", tokenizer=tokenizer, block_size=BLOCK, overrides={"n_layer": 4, "n_head": 4, "n_embd": 128}, dropout=0.0
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    began = time.perf_counter()
    for _ in range(args.train_steps):
        starts = torch.randint(len(train_ids) - BLOCK, (BATCH,), generator=generator)
        x = torch.stack([train_ids[s : s + BLOCK] for s in starts])
        model(input_ids=x, labels=x).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    train_seconds = time.perf_counter() - began
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    options = family.default_options()

    def lmctl(stride: int, precision: str = "fp32") -> tuple[float, dict]:
        began = time.perf_counter()
        result = evaluate_model(
            model, family, tokenizer, split, block_size=BLOCK, stride=stride, batch_size=BATCH, options=options,
            autocast=lambda: autocast_context(precision, torch.device("cpu")), device=torch.device("cpu"),
        )  # fmt: skip
        return time.perf_counter() - began, result

    def plain(stride: int) -> tuple[float, tuple[float, int]]:
        began = time.perf_counter()
        out = plain_loop(model, split_ids, BLOCK, stride, BATCH)
        return time.perf_counter() - began, out

    cases = {
        "plain_128": lambda: plain(BLOCK),
        "lmctl_128": lambda: lmctl(BLOCK),
        "plain_64": lambda: plain(BLOCK // 2),
        "lmctl_64": lambda: lmctl(BLOCK // 2),
        "lmctl_128_bf16": lambda: lmctl(BLOCK, "bf16"),
    }
    outputs = {name: fn()[1] for name, fn in cases.items()}  # warm-up, and the numbers compared
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.runs):  # interleaved, so load from other processes hits every case alike
        for name, fn in cases.items():
            times[name].append(fn()[0])
    median = {name: statistics.median(v) for name, v in times.items()}
    for stride in (BLOCK, BLOCK // 2):
        total, count = outputs[f"plain_{stride}"]
        result = outputs[f"lmctl_{stride}"]
        assert count == result["tokens"] == split.num_tokens - 1, (count, result["tokens"])
        assert abs(result["text_nll"] - total) / total < 1e-5, (result["text_nll"], total)
    tokens = split.num_tokens - 1
    fp32, bf16 = outputs["lmctl_128"], outputs["lmctl_128_bf16"]
    figures = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, {torch.get_num_threads()} threads",
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "corpus": source.name,
        "runs": args.runs,
        "train_steps": args.train_steps,
        "train_seconds": round(train_seconds, 1),
        "parameters": params,
        "validation_tokens": split.num_tokens,
        "median_seconds": {k: round(v, 4) for k, v in median.items()},
        "tokens_per_s": {k: round(tokens / v, 1) for k, v in median.items()},
        "ratio_stride_128": round(median["plain_128"] / median["lmctl_128"], 3),
        "ratio_stride_64": round(median["plain_64"] / median["lmctl_64"], 3),
        "loss_fp32": fp32["loss"],
        "perplexity_fp32": fp32["perplexity"],
        "perplexity_stride_64": outputs["lmctl_64"]["perplexity"],
        "perplexity_bf16": bf16["perplexity"],
        "bf16_relative_difference": abs(bf16["perplexity"] - fp32["perplexity"]) / fp32["perplexity"],
        "bf16_speedup": round(median["lmctl_128"] / median["lmctl_128_bf16"], 3),
        "auto_precision": resolve_precision("auto", torch.device("cpu"), params),
        "bits_per_byte": fp32["bits_per_byte"],
    }
    print(json.dumps(figures))
    if args.markdown:
        args.markdown.write_text(markdown(figures), encoding="utf-8")


def markdown(f: dict) -> str:
    t, s = f["tokens_per_s"], f["median_seconds"]
    rows = [
        ("stride 128 (non-overlapping), plain `torch.no_grad()` loop", "plain_128"),
        ("stride 128, lmctl `evaluate_model`", "lmctl_128"),
        ("stride 64 (sliding), plain loop (logits on every position)", "plain_64"),
        ("stride 64, lmctl (`logits_to_keep`: LM head on new positions only)", "lmctl_64"),
        ("stride 128, lmctl, bf16 autocast", "lmctl_128_bf16"),
    ]
    return "\n".join(
        [
            f"{f['validation_tokens']:,} validation tokens of {f['corpus']}; GPT-2 4x128 ({f['parameters']:,} parameters) "
            f"trained {f['train_steps']} steps; block 128, batch 16.",
            "",
            "| case | median s | tokens/s |",
            "| --- | ---: | ---: |",
            *(f"| {label} | {s[key]:.3f} | {t[key]:,.0f} |" for label, key in rows),
            "",
            f"- lmctl / plain loop: stride 128 **{f['ratio_stride_128']:.3f}x**, stride 64 **{f['ratio_stride_64']:.3f}x** "
            "(target >= 0.95x); the total NLL of both sides agrees to 1e-5",
            f"- perplexity fp32 {f['perplexity_fp32']:.4f}, bf16 {f['perplexity_bf16']:.4f}: relative difference "
            f"**{100 * f['bf16_relative_difference']:.2g}%** (target < 0.5%); bf16 speed {f['bf16_speedup']:.2f}x fp32; "
            f"`--precision auto` picks {f['auto_precision']} for this model",
            f"- stride 64 perplexity {f['perplexity_stride_64']:.4f} (every token sees at least 65 tokens of context); "
            f"bits per byte {f['bits_per_byte']:.4f}",
            "",
        ]
    )


if __name__ == "__main__":
    main()
