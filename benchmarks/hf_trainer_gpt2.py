#!/usr/bin/env python3
"""The Hugging Face Trainer recipe of ``../shared/bench/seed_pipeline.py train``, for the GPU benchmark.

A twin of the seed pipeline's ``train`` step (the classic recipe: ``GPT2LMHeadModel`` from a
config, ``transformers.Trainer``, ``default_data_collator``, labels = input ids), with what a GPU
user of that recipe turns on: ``bf16=True``, SDPA attention and, optionally, ``torch_compile``.
It differs from the seed in one place only: the token blocks come from a prepared split's token
file (the same tokens every pipeline of ``benchmarks/gpu.py`` trains on) instead of ``datasets``'
text loader, because the GPU machine has no ``datasets`` and the benchmark times training, not
tokenising.  Same model shape, batch, block, vocabulary and optimiser settings as the other rows.

    python benchmarks/hf_trainer_gpt2.py --tokens train.bin --dtype uint16 --steps 50 --window 10 \
        --layers 12 --heads 12 --dim 768 --block-size 1024 --vocab-size 50304 --batch-size 12 \
        --precision bf16 [--compile]

Prints one JSON line: the wall time of every window of ``--window`` optimizer steps (the GPU is
synchronised at each window's end only), the mean training loss of each window, the peak memory
and the parameter count.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", required=True, help="a flat token file (a prepared split's train.bin)")
    p.add_argument("--dtype", default="uint16", help="numpy dtype of --tokens")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--window", type=int, default=10, help="optimizer steps per timed window")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--block-size", type=int, default=1024)
    p.add_argument("--vocab-size", type=int, default=50304)
    p.add_argument("--batch-size", type=int, default=12)
    p.add_argument("--lr", type=float, default=6e-4)
    p.add_argument("--min-lr", type=float, default=6e-5)
    p.add_argument("--warmup-steps", type=int, default=10)
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--compile", action="store_true", help="TrainingArguments(torch_compile=True)")
    p.add_argument("--device", default="auto", help="auto, cuda or cpu")
    args = p.parse_args(argv)

    import numpy as np
    import torch
    from transformers import (
        AutoModelForCausalLM,
        GPT2Config,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        default_data_collator,
    )

    use_cpu = args.device == "cpu" or (args.device == "auto" and not torch.cuda.is_available())
    tokens = np.memmap(args.tokens, dtype=np.dtype(args.dtype), mode="r")
    n_blocks = len(tokens) // args.block_size
    if n_blocks < 1:
        raise SystemExit(f"{args.tokens}: fewer than {args.block_size} tokens")

    class Blocks(torch.utils.data.Dataset):
        """group_texts' blocks of the token stream; labels = input_ids (the model shifts them)."""

        def __len__(self) -> int:
            return n_blocks

        def __getitem__(self, i: int) -> dict:
            ids = torch.from_numpy(tokens[i * args.block_size : (i + 1) * args.block_size].astype(np.int64))
            return {"input_ids": ids, "labels": ids}

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=args.vocab_size,
        n_layer=args.layers,
        n_head=args.heads,
        n_embd=args.dim,
        n_positions=args.block_size,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")

    windows: list[float] = []
    losses: list[float] = []

    class WindowTimer(TrainerCallback):
        """Wall time per window of optimizer steps, the device synchronised at window ends only."""

        def __init__(self) -> None:
            self.last = None

        def _sync(self) -> None:
            if torch.cuda.is_available() and not use_cpu:
                torch.cuda.synchronize()

        def on_train_begin(self, targs, state, control, **kw):
            self._sync()
            self.last = time.perf_counter()

        def on_step_end(self, targs, state, control, **kw):
            if state.global_step % args.window == 0:
                self._sync()
                now = time.perf_counter()
                windows.append(now - self.last)
                self.last = now

        def on_log(self, targs, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(
            os.path.join(tmp, "out"),
            per_device_train_batch_size=args.batch_size,
            max_steps=args.steps,
            learning_rate=args.lr,
            lr_scheduler_type="cosine_with_min_lr",
            lr_scheduler_kwargs={"min_lr": args.min_lr},
            warmup_steps=args.warmup_steps,
            weight_decay=0.1,
            adam_beta1=0.9,
            adam_beta2=0.95,
            max_grad_norm=1.0,
            bf16=args.precision == "bf16",
            torch_compile=args.compile,
            use_cpu=use_cpu,
            logging_steps=args.window,
            save_strategy="no",
            report_to=[],
            disable_tqdm=True,
            seed=0,
            dataloader_drop_last=True,
        )
        trainer = Trainer(
            model=model, args=targs, train_dataset=Blocks(), data_collator=default_data_collator,
            callbacks=[WindowTimer()],
        )  # fmt: skip
        if torch.cuda.is_available() and not use_cpu:
            torch.cuda.reset_peak_memory_stats()
        began = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - began
    if torch.cuda.is_available() and not use_cpu:
        peak = int(torch.cuda.max_memory_allocated())
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        json.dumps(
            {
                "pipeline": "hf-trainer",
                "compile": args.compile,
                "steps": args.steps,
                "window": args.window,
                "tokens_per_step": args.batch_size * args.block_size,
                "window_seconds": [round(w, 5) for w in windows],
                "window_losses": [round(x, 5) for x in losses],
                "seconds": round(seconds, 3),
                "peak_memory_bytes": peak,
                "parameters": sum(p.numel() for p in model.parameters()),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
