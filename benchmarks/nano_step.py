#!/usr/bin/env python3
"""Where the nanoGPT-reference gap comes from: one training step of nanoGPT's own model against the
Hugging Face GPT-2 that lmctl trains, same shape, same process, interleaved.

    python benchmarks/nano_step.py NANOGPT_CHECKOUT [--rounds 5]

Prints one JSON object of median milliseconds: a full step (forward, backward, clip, AdamW) of each
model as its trainer runs it (nanoGPT: its GPT with bias=False, its configure_optimizers and loss;
lmctl: GPT2LMHeadModel from scratch as `lmctl train --from-scratch` builds it, lmctl's causal
loss, fused AdamW), the forward pass alone, and the same forward+backward on a 4-token input
(nearly pure Python overhead of the model code).  Used by bench_train.py.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("nanogpt", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(args.nanogpt.resolve()))
    sys.path.insert(0, str(REPO))
    import contextlib
    import io

    import torch
    from model import GPT, GPTConfig  # nanoGPT's model.py
    from transformers import GPT2Config, GPT2LMHeadModel

    from lmctl.families.base import padded_vocab_size
    from lmctl.kit.losses import causal_lm_loss

    torch.manual_seed(0)
    vocab, batch, block = 65, 12, 64  # shakespeare-char
    with contextlib.redirect_stdout(io.StringIO()):  # nanoGPT prints its parameter count
        nano = GPT(GPTConfig(block_size=block, vocab_size=vocab, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=False))
        nano_opt = nano.configure_optimizers(0.1, 1e-3, (0.9, 0.99), "cpu")
    config = GPT2Config(
        n_layer=4, n_head=4, n_embd=128, vocab_size=padded_vocab_size(vocab + 1), n_positions=block,
        activation_function="gelu_pytorch_tanh", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    hf = GPT2LMHeadModel._from_config(config, attn_implementation="sdpa")
    hf_opt = torch.optim.AdamW(hf.parameters(), lr=1e-3, fused=True)
    rows = torch.randint(vocab, (batch, block + 1))
    x, y = rows[:, :-1].contiguous(), rows[:, 1:].contiguous()
    tiny = rows[:1, :5]

    def nano_step():
        _, loss = nano(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(nano.parameters(), 1.0)
        nano_opt.step()
        nano_opt.zero_grad(set_to_none=True)
        loss.item()

    def hf_step():
        loss, _ = causal_lm_loss(hf, {"input_ids": x}, rows)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        hf_opt.step()
        hf_opt.zero_grad(set_to_none=True)

    def nano_forward():
        with torch.no_grad():
            nano(x, y)

    def hf_forward():
        with torch.no_grad():
            hf(input_ids=x, use_cache=False)

    def nano_tiny():
        nano(tiny[:, :-1].contiguous(), tiny[:, 1:].contiguous())[1].backward()
        nano.zero_grad(set_to_none=True)

    def hf_tiny():
        causal_lm_loss(hf, {"input_ids": tiny[:, :-1]}, tiny)[0].backward()
        hf.zero_grad(set_to_none=True)

    cases = {
        "nanogpt_step_ms": nano_step, "lmctl_gpt2_step_ms": hf_step,
        "nanogpt_forward_ms": nano_forward, "lmctl_gpt2_forward_ms": hf_forward,
        "nanogpt_4_tokens_fwd_bwd_ms": nano_tiny, "lmctl_gpt2_4_tokens_fwd_bwd_ms": hf_tiny,
    }  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, fn in cases.items():
            for _ in range(3):
                fn()
            start = time.perf_counter()
            for _ in range(30):
                fn()
            times[name].append((time.perf_counter() - start) / 30 * 1000)
    print(json.dumps({name: round(statistics.median(values), 2) for name, values in times.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
