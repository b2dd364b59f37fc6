#!/usr/bin/env python3
"""lmctl generate's speed against calling ``model.generate`` directly (issue 6).

Same model, same prompts, same settings on both sides:

* a GPT-2 built from scratch (4 layers, 4 heads, 128 wide, block 256, random weights) and a 4096-token
  byte-level BPE trained on the corpus, saved and loaded by lmctl like any trained model;
* 16 prompts taken from the corpus (different lengths, so the batch is left-padded);
* sampling with temperature 0.8 and top-k 50, exactly ``--max-new-tokens`` new tokens each
  (``min_new_tokens`` = ``max_new_tokens`` keeps EOS out, so both sides do the same work).

Measured, each as the median of ``--runs`` interleaved runs:

1. one prompt: ``model.generate`` vs ``lmctl.workflows.generate.generate_text`` (plain, as ``--json`` runs it)
   and with the streamer the terminal uses (every piece of text written to a sink);
2. 16 prompts in one batch: ``model.generate`` on the padded batch vs ``generate_text``;
3. the 16 prompts one after another with ``generate_text`` (batch size 1) vs one batch of 16.

lmctl's timings include everything it does around ``model.generate`` (tokenising, padding,
decoding, stop/EOS bookkeeping); the direct call is timed around ``generate`` alone.

    python benchmarks/bench_generate.py [--runs 7] [--max-new-tokens 128] [--markdown FILE]
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


def corpus_text() -> str:
    path = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
    if path.exists():
        return path.read_text(encoding="utf-8")
    import pydoc_data.topics as topics  # always available: the Python docs

    return "\n\n".join(topics.topics[k] for k in sorted(topics.topics))


def build_model(out: Path, text: str) -> None:
    import torch

    from lmctl.data.tokenizer_trainers import TRAINERS, as_transformers_tokenizer
    from lmctl.plugins.registry import get_family

    family = get_family("causal")
    special = family.special_tokens()
    tok = as_transformers_tokenizer(
        TRAINERS["bytelevel-bpe"]([text], vocab_size=4096, special_tokens=special), special
    )
    torch.manual_seed(0)
    model = family.build_from_scratch(
        "gpt2", tokenizer=tok, block_size=256, overrides={"n_layer": 4, "n_head": 4, "n_embd": 128}
    )
    family.save(model, tok, out)


def pick_prompts(text: str, count: int = 16) -> list[str]:
    lines = [line.strip() for line in text.splitlines() if len(line.strip()) > 20]
    step = max(1, len(lines) // count)
    # Two lines each, cut at different lengths: a realistic spread of prompt lengths.
    return [" ".join(lines[i * step : i * step + 2])[: 40 + 13 * i] for i in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--markdown", type=Path, help="also write the results table here")
    args = parser.parse_args()

    import torch

    from lmctl.workflows.generate import GenerationSettings, generate_text, load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    text = corpus_text()
    prompts = pick_prompts(text)
    new = args.max_new_tokens
    with tempfile.TemporaryDirectory() as tmp:
        build_model(Path(tmp) / "model", text)
        loaded = load_model(str(Path(tmp) / "model"), device="cpu", precision="fp32")
    model, tok = loaded.model, loaded.tokenizer
    settings = GenerationSettings(
        max_new_tokens=new, min_new_tokens=new, temperature=0.8, top_k=50, seed=0, batch_size=16
    )
    one_by_one = GenerationSettings(**{**settings.__dict__, "batch_size": 1})
    gen_kwargs = dict(
        do_sample=True, temperature=0.8, top_k=50, top_p=1.0, max_new_tokens=new, min_new_tokens=new,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, use_cache=True,
    )  # fmt: skip
    tok.padding_side = "left"

    inside = [0.0]  # seconds spent inside model.generate, to isolate lmctl's own overhead
    real_generate = model.generate

    def timed_generate(*a, **kw):
        began = time.perf_counter()
        try:
            return real_generate(*a, **kw)
        finally:
            inside[0] += time.perf_counter() - began

    model.generate = timed_generate

    def direct(batch: list[str]) -> tuple[float, float]:
        enc = tok(batch, return_tensors="pt", padding=True, add_special_tokens=False)
        torch.manual_seed(0)
        began = time.perf_counter()
        with torch.inference_mode():
            out = real_generate(**enc, **gen_kwargs)
        seconds = time.perf_counter() - began
        assert out.shape[1] - enc["input_ids"].shape[1] == new
        return seconds, 0.0

    def lmctl(
        batch: list[str], s: GenerationSettings = settings, stream: bool = False
    ) -> tuple[float, float]:
        sink: list[str] = []
        inside[0] = 0.0
        began = time.perf_counter()
        results = generate_text(model, tok, batch, s, on_text=sink.append if stream else None)
        seconds = time.perf_counter() - began
        assert all(r.tokens == new for r in results) and len(results) == len(batch)
        if stream:
            assert "".join(sink) == results[0].text
        return seconds, seconds - inside[0]

    cases = {
        "direct_1": lambda: direct(prompts[:1]),
        "lmctl_1": lambda: lmctl(prompts[:1]),
        "lmctl_1_stream": lambda: lmctl(prompts[:1], stream=True),
        "direct_16": lambda: direct(prompts),
        "lmctl_16": lambda: lmctl(prompts),
        "lmctl_16_sequential": lambda: lmctl(prompts, one_by_one),
    }
    for fn in cases.values():  # warm-up: allocator, kernels, stop/EOS tables
        fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    overhead: dict[str, list[float]] = {name: [] for name in cases}
    for run in range(args.runs):
        # Interleaved, in alternating order, so load from other processes hits every case alike.
        for name in list(cases) if run % 2 == 0 else list(reversed(cases)):
            seconds, extra = cases[name]()
            times[name].append(seconds)
            overhead[name].append(extra)
    median = {name: statistics.median(v) for name, v in times.items()}
    tokens = {name: new * (16 if "16" in name else 1) for name in cases}
    tps = {name: tokens[name] / median[name] for name in cases}

    def paired(a: str, b: str) -> float:
        """Median over runs of (b's time / a's time) measured in the same round: robust to drifting load."""
        return statistics.median(tb / ta for ta, tb in zip(times[a], times[b], strict=True))

    figures = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "runs": args.runs,
        "max_new_tokens": new,
        "prompt_tokens": [len(tok(p)["input_ids"]) for p in prompts],
        "median_seconds": {k: round(v, 4) for k, v in median.items()},
        "min_seconds": {k: round(min(v), 4) for k, v in times.items()},
        "all_seconds": {k: [round(x, 4) for x in v] for k, v in times.items()},
        "tokens_per_s": {k: round(v, 1) for k, v in tps.items()},
        "lmctl_overhead_ms": {
            k: round(statistics.median(v) * 1000, 2) for k, v in overhead.items() if k.startswith("lmctl")
        },
        "ratio_1_prompt": round(tps["lmctl_1"] / tps["direct_1"], 3),
        "ratio_1_prompt_streamed": round(tps["lmctl_1_stream"] / tps["direct_1"], 3),
        "ratio_16_prompts": round(tps["lmctl_16"] / tps["direct_16"], 3),
        "paired_ratio_1_prompt": round(paired("lmctl_1", "direct_1"), 3),
        "paired_ratio_1_prompt_streamed": round(paired("lmctl_1_stream", "direct_1"), 3),
        "paired_ratio_16_prompts": round(paired("lmctl_16", "direct_16"), 3),
        "batch_speedup_16": round(median["lmctl_16_sequential"] / median["lmctl_16"], 2),
        "paired_batch_speedup_16": round(paired("lmctl_16", "lmctl_16_sequential"), 2),
    }
    print(json.dumps(figures))
    if args.markdown:
        args.markdown.write_text(markdown(figures), encoding="utf-8")


def markdown(f: dict) -> str:
    t, s, o, m = f["tokens_per_s"], f["median_seconds"], f["lmctl_overhead_ms"], f["min_seconds"]
    rows = [
        ("1 prompt, `model.generate`", "direct_1"),
        ("1 prompt, lmctl (`--json` path)", "lmctl_1"),
        ("1 prompt, lmctl streaming to the terminal", "lmctl_1_stream"),
        ("16 prompts in one batch, `model.generate`", "direct_16"),
        ("16 prompts in one batch, lmctl", "lmctl_16"),
        ("16 prompts one after another, lmctl", "lmctl_16_sequential"),
    ]
    lines = [
        "| case | median s | min s | tokens/s (median) | lmctl's own time outside `model.generate` (median ms) |",
        "| --- | ---: | ---: | ---: | ---: |",
        *(
            f"| {label} | {s[key]:.3f} | {m[key]:.3f} | {t[key]:,.0f} | {f'{o[key]:.1f}' if key in o else '-'} |"
            for label, key in rows
        ),
    ]
    return "\n".join(
        [
            *lines,
            "",
            f"- lmctl / direct tokens/s, 1 prompt: **{f['ratio_1_prompt']:.3f}x** (paired per round: "
            f"{f['paired_ratio_1_prompt']:.3f}x; streamed: {f['ratio_1_prompt_streamed']:.3f}x, paired "
            f"{f['paired_ratio_1_prompt_streamed']:.3f}x); 16 prompts: **{f['ratio_16_prompts']:.3f}x** "
            f"(paired {f['paired_ratio_16_prompts']:.3f}x). Target >= 0.95x.",
            f"- 16-prompt batch vs the same 16 prompts one by one: **{f['batch_speedup_16']:.2f}x faster** "
            f"(paired per round: {f['paired_batch_speedup_16']:.2f}x; target >= 4x)",
            "",
        ]
    )


if __name__ == "__main__":
    main()
