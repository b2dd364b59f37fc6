#!/usr/bin/env python3
"""lmctl on a GPU: the `gpu` tests, then GPT-2 124M training side by side with its peers, eval and generate.

One prepared command, sized for about 4 minutes on one H100 (so a re-check fits the same budget):

    python benchmarks/gpu.py --out $OUT --nanogpt .gpu/nanoGPT            # everything
    python benchmarks/gpu.py --out $OUT --quick                           # re-check: tests + lmctl rows
    python benchmarks/gpu.py --out /tmp/gpu --tiny [--quick]              # CPU, tiny shapes (tests/CI)

What it does, in order (each phase's wall time is recorded, a failing phase is recorded and the
next one still runs):

1. **Install.**  When lmctl's dependencies import from this tree (``PYTHONPATH`` = the checkout),
   nothing is installed.  Otherwise the wheels carried in ``.gpu/wheels`` (an ignored folder that
   travels with the working tree: the GPU machine has no network, no ``datasets``, and torch 2.11)
   are installed: ``pip install --no-index --find-links .gpu/wheels --no-build-isolation -e .``.
   ``--tiny`` never installs.
2. **Tests.**  ``python -m pytest -m gpu tests/test_gpu.py`` (they skip without CUDA); counts of
   passed / failed / skipped from its JUnit XML.
3. **Training, side by side.**  GPT-2 124M (12 layers, 12 heads, 768 wide, block 1024, vocabulary
   padded to 50,304 for every pipeline) in bf16, ``--steps`` optimizer steps of ``--batch-size``
   sequences on the same tokens (one ``lmctl prepare`` of the corpus; its token file is also written
   in nanoGPT's ``train.bin``/``val.bin`` format and read by the Trainer twin), same learning-rate
   schedule (6e-4 -> 6e-5 cosine, warm-up), AdamW (0.9, 0.95), weight decay 0.1, clip 1.0, no dropout:

   * ``lmctl train`` (defaults, and ``--compile``), a subprocess; tokens/s from metrics.jsonl's
     ``tokens_per_s`` events (one per window), peak memory and final loss from run.json;
   * the Hugging Face Trainer with ``bf16=True``, SDPA, ``torch_compile`` off and on
     (``benchmarks/hf_trainer_gpt2.py``, the twin of ``../shared/bench/seed_pipeline.py train``);
   * nanoGPT's unmodified ``train.py`` with ``--compile=False`` and ``True`` (``--nanogpt DIR``;
     skipped without it), its per-iteration ``time Xms`` lines, its peak CUDA memory read at exit.

   For each: tokens/s (median of the windows after the first ``--warmup-windows``), MFU with
   nanoGPT's ``estimate_mfu`` count of FLOPs per token, ``6N + 12 L H Q T`` (N: nanoGPT's parameter
   count without position embeddings), over the datasheet bf16 peak of the card (a table by device
   name, or ``--peak-tflops``) and over the bf16 matmul rate measured on the card in this run;
   peak memory; the mean training loss of the last window.
4. **Eval and generate** (not with ``--quick``): lmctl's evaluation (``evaluate_model``, what
   ``lmctl eval`` runs) against a ``no_grad`` forward pass with ``F.cross_entropy`` over the same
   blocks, and lmctl's ``generate_text`` against ``model.generate`` with the same dtype, batch,
   KV cache and sampling settings, on the model the lmctl run saved.  Ratios of medians.
5. **Profile** (``--profile``, or by itself when a training target is missed): a torch profiler
   summary of one lmctl training step.

Results: ``OUT/results.json``, ``OUT/results.md`` (the tables) and ``OUT/gpu.md`` (the section of
docs/benchmarks.md: copy it to benchmarks/results/gpu.md and run ``benchmarks/run.py --assemble``;
``--update-docs`` does both where the working tree is kept), ``OUT/gpu-tests.xml``, ``OUT/log.txt``
and ``OUT/profile.txt``: at most 6 files (the device tool brings back 8); the work files (prepared
data, runs) go to ``--work`` (a temporary folder by default).

Preparing a GPU run (here, before the call; ``.gpu/`` is ignored by git and named in ``carry``)::

    mkdir -p .gpu && cp -r ../shared/third_party/nanoGPT .gpu/nanoGPT
    mkdir -p .gpu/data && cp ../shared/data/tinyshakespeare.txt ../shared/data/wikitext-2/valid.txt .gpu/data/
    # only if a dependency is missing there (lmctl needs none that the image lacks; datasets is
    # only imported for hub datasets):  pip download --no-deps --only-binary=:all: \
    #   --python-version 3.12 --platform manylinux2014_x86_64 -d .gpu/wheels NAME==VERSION
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import pickle
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))  # the in-process phases (eval, generate, profile) import lmctl from this tree
SHARED = REPO.parent / "shared"

# Dense bf16 tensor-core peaks from the vendors' datasheets (TFLOP/s, without sparsity), matched
# against torch.cuda.get_device_name() in order: the first pattern found in the name wins.
PEAK_BF16_TFLOPS = [
    ("H100 NVL", 835.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),  # SXM5 ("NVIDIA H100 80GB HBM3")
    ("H200", 989.0),
    ("H800", 989.0),
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("RTX 4090", 165.0),
    ("RTX 3090", 71.0),
    ("V100", 125.0),  # fp16 tensor cores (no bf16)
]


PHASES = (
    "lmctl",
    "lmctl-compile",
    "hf",
    "hf-compile",
    "nanogpt",
    "nanogpt-compile",
    "eval",
    "tests",
    "profile",
    "variants",
)


@dataclass(frozen=True)
class Shape:
    layers: int
    heads: int
    dim: int
    block: int
    vocab: int  # the model's (padded) vocabulary, the same for every pipeline
    tokenizer_vocab: int  # the BPE trained by lmctl prepare
    batch: int
    steps: int
    window: int
    warmup_windows: int


FULL = Shape(layers=12, heads=12, dim=768, block=1024, vocab=50304, tokenizer_vocab=8192, batch=12, steps=60, window=10, warmup_windows=2)
TINY = Shape(layers=2, heads=2, dim=64, block=64, vocab=1024, tokenizer_vocab=512, batch=4, steps=10, window=2, warmup_windows=2)


# --- the arithmetic ------------------------------------------------------------------------------


def nanogpt_parameters(s: Shape) -> int:
    """nanoGPT's ``get_num_params()`` for this shape (bias=False, tied embeddings, without wpe)."""
    per_layer = 12 * s.dim * s.dim + 2 * s.dim  # attention 4 d^2, MLP 8 d^2, two LayerNorm weights
    return s.vocab * s.dim + s.layers * per_layer + s.dim


def flops_per_token(s: Shape) -> float:
    """nanoGPT's ``estimate_mfu``: 6N + 12 L H Q T (PaLM, appendix B)."""
    q = s.dim // s.heads
    return 6 * nanogpt_parameters(s) + 12 * s.layers * s.heads * q * s.block


def datasheet_peak(name: str) -> float | None:
    """Dense bf16 peak (FLOP/s) of a device by its name, or None when the table does not know it."""
    for pattern, tflops in PEAK_BF16_TFLOPS:
        if pattern.lower() in name.lower():
            return tflops * 1e12
    return None


def median_after_warmup(values: list[float], warmup: int) -> tuple[float | None, list[float]]:
    timed = values[warmup:]
    return (statistics.median(timed) if timed else None), timed


# --- the steps -----------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.shape = TINY if args.tiny else FULL
        if args.steps:
            self.shape = Shape(**{**self.shape.__dict__, "steps": args.steps})
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="lmctl-gpu-bench-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        self.env.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.env.setdefault("HF_HUB_OFFLINE", "1")
        self.env["PYTHONUNBUFFERED"] = "1"
        self.results: dict[str, Any] = {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]) if sys.argv else "",
            "mode": ("tiny" if args.tiny else "full") + (" quick" if args.quick else ""),
            "shape": self.shape.__dict__,
            "phases": {},
            "errors": {},
            "skipped": {},
        }
        self.began = time.perf_counter()
        self.log = (self.out / "log.txt").open("w", encoding="utf-8")

    # -------------------------------------------------------------- helpers
    def say(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)
        self.log.write(text + "\n")
        self.log.flush()

    def phase(self, name: str, fn, optional: bool = False) -> Any:
        spent = time.perf_counter() - self.began
        if optional and self.args.budget and spent > self.args.budget:
            self.results["skipped"][name] = (
                f"over the --budget of {self.args.budget:.0f} s ({spent:.0f} s spent)"
            )
            self.say(f"== {name}: skipped, {self.results['skipped'][name]}")
            return None
        self.say(f"== {name}")
        began = time.perf_counter()
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - one failing phase must not lose the others' figures
            self.results["errors"][name] = f"{type(exc).__name__}: {exc}"
            self.say(traceback.format_exc())
            return None
        finally:
            self.results["phases"][name] = round(time.perf_counter() - began, 1)
            self.save()  # a run stopped at the device's time limit still brings back what it measured

    def save(self) -> None:
        (self.out / "results.json").write_text(json.dumps(self.results, indent=1), encoding="utf-8")
        section = markdown(self.results)
        (self.out / "results.md").write_text(section, encoding="utf-8")
        (self.out / "gpu.md").write_text(section, encoding="utf-8")

    def run(self, cmd: list[str], cwd: Path | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
        self.say("$ " + " ".join(str(c) for c in cmd))
        done = subprocess.run(
            [str(c) for c in cmd], cwd=cwd, env=self.env, capture_output=True, text=True,
            timeout=timeout or self.args.timeout,
        )  # fmt: skip
        self.log.write(done.stdout[-4000:] + done.stderr[-4000:] + "\n")
        if done.returncode != 0:
            raise RuntimeError(f"exit {done.returncode}: {' '.join(map(str, cmd[:4]))} ...\n{done.stderr[-1500:]}")
        return done

    # -------------------------------------------------------------- 0. the machine
    def describe(self) -> None:
        import torch

        cuda = torch.cuda.is_available() and not self.args.tiny
        self.device = "cuda" if cuda else "cpu"
        self.precision = "bf16" if cuda else "fp32"
        name = torch.cuda.get_device_name() if cuda else (platform.processor() or platform.machine())
        peak = self.args.peak_tflops * 1e12 if self.args.peak_tflops else (datasheet_peak(name) if cuda else None)
        self.peak = peak
        import transformers

        self.results["machine"] = {
            "device": name,
            "device_kind": self.device,
            "precision": self.precision,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "cuda": torch.version.cuda,
            "datasheet_bf16_tflops": round(peak / 1e12, 1) if peak else None,
            "peak_source": "--peak-tflops" if self.args.peak_tflops else ("datasheet table" if peak else None),
        }

    # -------------------------------------------------------------- 1. install
    def install(self) -> dict:
        probe = [sys.executable, "-c", "import lmctl.cli.app, transformers, accelerate, tokenizers, safetensors, typer, rich, pluggy, yaml"]
        if self.args.tiny:
            return {"skipped": "--tiny never installs"}
        importable = subprocess.run(probe, env=self.env, capture_output=True, text=True).returncode == 0
        info = {"importable_from_tree": importable, "installed": False}
        if importable:
            return info
        wheels = REPO / ".gpu" / "wheels"
        if not wheels.is_dir():
            raise RuntimeError(f"lmctl's dependencies do not import and {wheels} is missing: carry the wheels (see the docstring)")
        self.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links", wheels, "--no-build-isolation", "-e", REPO])
        info["installed"] = True
        return info

    # -------------------------------------------------------------- 2. tests
    def tests(self) -> dict:
        xml = self.out / "gpu-tests.xml"
        cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "tests/test_gpu.py", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}"]
        if self.args.tests_k:
            cmd += ["-k", self.args.tests_k]
        # Each test is mostly a CLI subprocess's start-up and a compile, not GPU work: with
        # pytest-xdist (on the GPU image) four at a time share the card; the tests that start
        # process groups stay in one worker (xdist_group "process-group").
        probe = [sys.executable, "-c", "import xdist, pytest_timeout"]
        have = subprocess.run(probe, env=self.env, capture_output=True).returncode == 0
        if have and self.device == "cuda" and self.args.test_workers > 1:
            cmd += ["-n", str(self.args.test_workers), "--dist", "loadgroup", "--timeout", "200"]
        self.say("$ " + " ".join(cmd))
        done = subprocess.run(cmd, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=self.args.tests_timeout)
        self.log.write(done.stdout[-8000:] + done.stderr[-2000:] + "\n")
        counts = {"passed": 0, "failed": 0, "skipped": 0, "exit_code": done.returncode, "failures": []}
        if xml.is_file():
            for case in ET.parse(xml).getroot().iter("testcase"):
                name = case.get("name", "?")
                if case.find("failure") is not None or case.find("error") is not None:
                    counts["failed"] += 1
                    counts["failures"].append(name)
                elif case.find("skipped") is not None:
                    counts["skipped"] += 1
                else:
                    counts["passed"] += 1
        return counts

    # -------------------------------------------------------------- 3. data
    def corpus(self) -> list[Path]:
        if self.args.text:
            return [Path(t) for t in self.args.text]
        carried = sorted((REPO / ".gpu" / "data").glob("*.txt"))
        if carried:
            return carried
        shared = [SHARED / "data" / "tinyshakespeare.txt", SHARED / "data" / "wikitext-2" / "valid.txt"]
        if all(p.is_file() for p in shared):
            return shared
        import pydoc_data.topics as topics  # every Python has it: about 460 KB of English

        path = self.work / "pydoc.txt"
        path.write_text("\n\n".join(topics.topics[k] for k in sorted(topics.topics)), encoding="utf-8")
        return [path]

    def prepare(self) -> dict:
        import numpy as np

        s = self.shape
        files = self.corpus()
        if self.args.tiny:  # a few hundred KB is plenty for a few tiny steps, and quick to tokenise
            text = "\n\n".join(p.read_text(encoding="utf-8", errors="replace") for p in files)[:300_000]
            files = [self.work / "corpus.txt"]
            files[0].write_text(text, encoding="utf-8")
        self.prepared = self.work / "prepared"
        if self.prepared.exists():
            shutil.rmtree(self.prepared)
        self.run([sys.executable, "-m", "lmctl", "prepare", *[a for f in files for a in ("--train", f)],
                  "--tokenizer", "bytelevel-bpe", "--vocab-size", s.tokenizer_vocab, "--block-size", s.block,
                  "--validation-split", "0.05", "--out", self.prepared])  # fmt: skip
        manifest = json.loads((self.prepared / "manifest.json").read_text())
        self.token_dtype = manifest.get("dtype", "uint16")
        splits = manifest["splits"]
        train = np.memmap(self.prepared / splits["train"]["file"], dtype=self.token_dtype, mode="r")
        val = np.memmap(self.prepared / splits["validation"]["file"], dtype=self.token_dtype, mode="r")
        if int(train.max()) >= 65536 or manifest["vocab_size"] > s.vocab:
            raise RuntimeError(f"vocabulary {manifest['vocab_size']} does not fit nanoGPT's uint16 or the padded {s.vocab}")
        # nanoGPT's format: data/<dataset>/{train,val}.bin as uint16, meta.pkl with the vocabulary.
        self.nano_data = self.work / "nanogpt-data" / "lmctlbench"
        self.nano_data.mkdir(parents=True, exist_ok=True)
        train.astype(np.uint16).tofile(self.nano_data / "train.bin")
        val.astype(np.uint16).tofile(self.nano_data / "val.bin")
        with open(self.nano_data / "meta.pkl", "wb") as handle:
            pickle.dump({"vocab_size": s.vocab}, handle)
        self.train_tokens = self.prepared / splits["train"]["file"]
        return {"corpus": [str(p) for p in files], "train_tokens": int(len(train)), "validation_tokens": int(len(val)),
                "tokenizer_vocab": manifest["vocab_size"], "model_vocab": s.vocab}  # fmt: skip

    # -------------------------------------------------------------- 3. matmul rate
    def matmul_rate(self) -> dict:
        import torch

        cuda = self.device == "cuda"
        n = 8192 if cuda else 256
        dtype = torch.bfloat16 if cuda else torch.float32
        a = torch.randn(n, n, device=self.device, dtype=dtype)
        b = torch.randn(n, n, device=self.device, dtype=dtype)
        rates = []
        for trial in range(13 if cuda else 6):
            if cuda:
                torch.cuda.synchronize()
            began = time.perf_counter()
            for _ in range(10):
                torch.matmul(a, b)
            if cuda:
                torch.cuda.synchronize()
            if trial >= 3:  # three warm-ups
                rates.append(2 * n**3 * 10 / (time.perf_counter() - began))
        self.measured_rate = statistics.median(rates)
        del a, b
        if cuda:
            torch.cuda.empty_cache()
        return {"n": n, "dtype": str(dtype).replace("torch.", ""), "tflops": round(self.measured_rate / 1e12, 2)}

    # -------------------------------------------------------------- 3. the training rows
    def common_train(self) -> dict:
        s = self.shape
        return {"lr": 6e-4, "min_lr": 6e-5, "warmup": max(1, s.steps // 10)}

    def row(self, name: str, command: str, windows_tps: list[float], peak: int | None, loss: float | None, wall: float, **extra: Any) -> dict:
        s = self.shape
        tps, timed = median_after_warmup(windows_tps, s.warmup_windows)
        fpt = flops_per_token(s)
        row = {
            "pipeline": name, "command": command, "tokens_per_s": round(tps, 1) if tps else None,
            "timed_windows": len(timed), "window_tokens_per_s": [round(x, 1) for x in windows_tps],
            "mfu_datasheet": round(tps * fpt / self.peak, 4) if tps and self.peak else None,
            "mfu_measured": round(tps * fpt / self.measured_rate, 4) if tps and getattr(self, "measured_rate", None) else None,
            "peak_memory_bytes": peak, "final_loss": round(loss, 4) if loss is not None else None, "wall_s": round(wall, 1),
            **extra,
        }  # fmt: skip
        self.results.setdefault("training", []).append(row)
        self.say(f"   {name}: {row['tokens_per_s']} tokens/s, loss {row['final_loss']}, peak {peak}")
        return row

    def lmctl_row(self, compile_: bool) -> dict:
        s, c = self.shape, self.common_train()
        out = self.work / ("lmctl-compile" if compile_ else "lmctl")
        if out.exists():
            shutil.rmtree(out)
        args = ["train", "--train", self.prepared, "--from-scratch", "--model", "gpt2",
                "--model-config", f"n_layer={s.layers}", "--model-config", f"n_head={s.heads}",
                "--model-config", f"n_embd={s.dim}", "--model-config", f"vocab_size={s.vocab}",
                "--block-size", s.block, "--batch-size", s.batch, "--max-steps", s.steps,
                "--lr", c["lr"], "--min-lr", c["min_lr"], "--warmup-steps", c["warmup"], "--weight-decay", "0.1",
                "--beta2", "0.95", "--grad-clip", "1.0", "--dropout", "0", "--precision", self.precision,
                "--eval-every", "0", "--save-every", "0", "--log-every", s.window, "--quiet", "--out", out,
                "--seed", "0"]  # fmt: skip
        if compile_:
            args.append("--compile")
        began = time.perf_counter()
        self.run([sys.executable, "-m", "lmctl", *args])
        wall = time.perf_counter() - began
        events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
        train_events = [e for e in events if "tokens_per_s" in e]
        run = json.loads((out / "run.json").read_text())
        if not compile_:
            self.lmctl_model = out
        command = "lmctl " + " ".join(str(a) for a in args).replace(str(self.work) + "/", "")
        return self.row(
            "lmctl train --compile" if compile_ else "lmctl train", command,
            [e["tokens_per_s"] for e in train_events], run["result"].get("peak_memory_bytes"),
            train_events[-1]["train/loss"] if train_events else None, wall,
            precision=run["resolved"]["precision"],
        )  # fmt: skip

    def hf_row(self, compile_: bool) -> dict:
        s, c = self.shape, self.common_train()
        args = [HERE / "hf_trainer_gpt2.py", "--tokens", self.train_tokens, "--dtype", self.token_dtype,
                "--steps", s.steps, "--window", s.window, "--layers", s.layers, "--heads", s.heads, "--dim", s.dim,
                "--block-size", s.block, "--vocab-size", s.vocab, "--batch-size", s.batch, "--lr", c["lr"],
                "--min-lr", c["min_lr"], "--warmup-steps", c["warmup"], "--precision", self.precision,
                "--device", self.device]  # fmt: skip
        if compile_:
            args.append("--compile")
        began = time.perf_counter()
        done = self.run([sys.executable, *args])
        wall = time.perf_counter() - began
        report = json.loads(done.stdout.strip().splitlines()[-1])
        tokens = report["tokens_per_step"] * s.window
        return self.row(
            "HF Trainer, torch_compile" if compile_ else "HF Trainer", "python benchmarks/hf_trainer_gpt2.py ...",
            [tokens / w for w in report["window_seconds"]], report["peak_memory_bytes"],
            report["window_losses"][-1] if report["window_losses"] else None, wall,
        )  # fmt: skip

    def nanogpt_row(self, compile_: bool) -> dict:
        s, c = self.shape, self.common_train()
        source = Path(self.args.nanogpt)
        run_dir = self.work / ("nanogpt-compile" if compile_ else "nanogpt")
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        # train.py reads configurator.py and data/<dataset>/ from its working directory: run an
        # unmodified copy of it there, beside the prepared tokens.
        for name in ("train.py", "model.py", "configurator.py"):
            shutil.copy(source / name, run_dir / name)
        (run_dir / "data").mkdir()
        os.symlink(self.nano_data, run_dir / "data" / "lmctlbench")
        options = ["--dataset=lmctlbench", f"--out_dir={run_dir / 'out'}", f"--batch_size={s.batch}",
                   f"--block_size={s.block}", f"--n_layer={s.layers}", f"--n_head={s.heads}", f"--n_embd={s.dim}",
                   "--dropout=0.0", "--bias=False", f"--max_iters={s.steps - 1}", f"--lr_decay_iters={s.steps - 1}",
                   f"--learning_rate={c['lr']}", f"--min_lr={c['min_lr']}", f"--warmup_iters={c['warmup']}",
                   "--weight_decay=0.1", "--beta1=0.9", "--beta2=0.95", "--grad_clip=1.0",
                   "--gradient_accumulation_steps=1", "--log_interval=1", "--eval_iters=1", "--eval_interval=1000000",
                   "--always_save_checkpoint=False", "--wandb_log=False", f"--device={self.device}",
                   f"--dtype={'bfloat16' if self.precision == 'bf16' else 'float32'}", f"--compile={compile_}"]  # fmt: skip
        # Run train.py as __main__ and report the process's peak CUDA memory (or RSS) at exit.
        wrapper = (
            "import atexit, json, resource, runpy, sys, torch\n"
            "def report():\n"
            "    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024\n"
            "    print('LMCTL_BENCH_PEAK ' + json.dumps(int(peak)), flush=True)\n"
            "atexit.register(report)\n"
            "sys.path.insert(0, '.')\n"
            "sys.argv = ['train.py'] + sys.argv[1:]\n"
            "runpy.run_path('train.py', run_name='__main__')\n"
        )  # fmt: skip
        began = time.perf_counter()
        done = self.run([sys.executable, "-c", wrapper, *options], cwd=run_dir)
        wall = time.perf_counter() - began
        iters = [(float(m.group(1)), float(m.group(2))) for m in re.finditer(r"^iter \d+: loss ([\d.]+), time ([\d.]+)ms", done.stdout, re.M)]
        peak = re.search(r"^LMCTL_BENCH_PEAK (\d+)", done.stdout, re.M)
        # Windows of the same length as the other rows' (iterations 0.. grouped by --window).
        windows, losses = [], []
        for start in range(0, len(iters) - s.window + 1, s.window):
            chunk = iters[start : start + s.window]
            windows.append(s.batch * s.block * s.window / (sum(ms for _, ms in chunk) / 1000))
            losses.append(statistics.fmean(loss for loss, _ in chunk))
        return self.row(
            "nanoGPT train.py, compile" if compile_ else "nanoGPT train.py", "python train.py " + " ".join(options).replace(str(self.work) + "/", ""),
            windows, int(peak.group(1)) if peak else None, losses[-1] if losses else None, wall,
        )  # fmt: skip

    # -------------------------------------------------------------- 4. eval and generate
    def eval_and_generate(self) -> dict:
        import torch
        import torch.nn.functional as F

        from lmctl.core.precision import autocast_context
        from lmctl.core.prepared import PreparedData
        from lmctl.plugins.registry import resolve_family
        from lmctl.workflows.evaluate import evaluate_model
        from lmctl.workflows.generate import GenerationSettings, generate_text, load_model

        s = self.shape
        device = torch.device(self.device)
        model_dir = str(self.lmctl_model)
        runs = 5 if not self.args.tiny else 3
        # --- eval: what `lmctl eval` runs (fp32 weights, autocast) against the plain loop.
        family = resolve_family(model_dir)
        model = family.load_for_inference(model_dir).to(device)
        model.eval()
        data = PreparedData(self.prepared)
        # The first blocks of the training split: enough work per run to time (the validation split
        # of a small corpus is a handful of batches on a GPU); both sides score the same blocks.
        split = data.split("train")
        tokenizer = data.load_tokenizer()
        batch = s.batch
        max_batches = 40 if not self.args.tiny else 10
        n_blocks = min((split.num_tokens - 1) // s.block, max_batches * batch)
        max_batches = math.ceil(n_blocks / batch)
        tokens = torch.from_numpy(split.tokens[: n_blocks * s.block + 1].astype("int64"))

        def sync() -> None:
            if device.type == "cuda":
                torch.cuda.synchronize()

        def lmctl_eval() -> float:
            sync()
            began = time.perf_counter()
            result = evaluate_model(model, family, tokenizer, split, block_size=s.block, batch_size=batch,
                                    max_batches=max_batches, autocast=lambda: autocast_context(self.precision, device),
                                    device=device)  # fmt: skip
            assert result["tokens"] >= n_blocks * (s.block - 1), result["tokens"]
            sync()
            self._eval_loss = result["loss"]
            return time.perf_counter() - began

        def direct_eval(weights_dtype: Any = None) -> float:
            m = model if weights_dtype is None else self._bf16_model
            sync()
            began = time.perf_counter()
            total, count = torch.zeros((), dtype=torch.float64, device=device), 0
            n = n_blocks
            with torch.no_grad(), (autocast_context(self.precision, device) if weights_dtype is None else _null()):
                for start in range(0, n, batch):
                    rows = torch.stack([tokens[i * s.block : (i + 1) * s.block + 1] for i in range(start, min(n, start + batch))])
                    rows = rows.to(device, non_blocking=True)
                    logits = m(input_ids=rows[:, :-1]).logits
                    total += F.cross_entropy(logits.flatten(0, 1).float(), rows[:, 1:].flatten(), reduction="sum").double()
                    count += rows[:, 1:].numel()
            self._direct_loss = float(total) / count
            sync()
            return time.perf_counter() - began

        self._bf16_model = None
        if device.type == "cuda":
            import copy

            self._bf16_model = copy.deepcopy(model).to(torch.bfloat16)
        cases = {"lmctl": lmctl_eval, "direct": direct_eval}
        if self._bf16_model is not None:
            cases["direct_bf16_weights"] = lambda: direct_eval(torch.bfloat16)
        eval_times = self._interleaved(cases, runs)
        eval_info = {
            "blocks": n_blocks, "block": s.block, "batch": batch,
            "median_s": {k: round(statistics.median(v), 4) for k, v in eval_times.items()},
            "ratio": round(statistics.median(eval_times["direct"]) / statistics.median(eval_times["lmctl"]), 3),
            "loss_lmctl": round(float(self._eval_loss), 5), "loss_direct": round(self._direct_loss, 5),
        }  # fmt: skip
        if "direct_bf16_weights" in eval_times:
            eval_info["ratio_vs_bf16_weights"] = round(
                statistics.median(eval_times["direct_bf16_weights"]) / statistics.median(eval_times["lmctl"]), 3
            )
        model = self._bf16_model = None  # free the GPU memory for generation
        # --- generate: lmctl's generate_text against model.generate, same weights and settings.
        loaded = load_model(model_dir, device=self.device, precision="auto")
        gmodel, gtok = loaded.model, loaded.tokenizer
        new = 128 if not self.args.tiny else 16
        text = self.corpus()[0].read_text(encoding="utf-8", errors="replace")
        lines = [line.strip() for line in text.splitlines() if len(line.strip()) > 20][:8]
        settings = GenerationSettings(max_new_tokens=new, min_new_tokens=new, temperature=0.8, top_k=50, top_p=1.0, seed=0, batch_size=8)
        gtok.padding_side = "left"
        gen_kwargs = dict(do_sample=True, temperature=0.8, top_k=50, top_p=1.0, max_new_tokens=new, min_new_tokens=new,
                          pad_token_id=gtok.pad_token_id, eos_token_id=gtok.eos_token_id, use_cache=True)  # fmt: skip

        def lmctl_generate() -> float:
            sync()
            began = time.perf_counter()
            results = generate_text(gmodel, gtok, lines, settings)
            sync()
            assert all(r.tokens == new for r in results)
            return time.perf_counter() - began

        def direct_generate() -> float:
            enc = gtok(lines, return_tensors="pt", padding=True, add_special_tokens=False).to(loaded.device)
            torch.manual_seed(0)
            sync()
            began = time.perf_counter()
            with torch.inference_mode():
                out = gmodel.generate(**enc, **gen_kwargs)
            sync()
            assert out.shape[1] - enc["input_ids"].shape[1] == new
            return time.perf_counter() - began

        gen_times = self._interleaved({"lmctl": lmctl_generate, "direct": direct_generate}, runs)
        gen_info = {
            "prompts": len(lines), "new_tokens": new, "dtype": str(next(gmodel.parameters()).dtype).replace("torch.", ""),
            "median_s": {k: round(statistics.median(v), 4) for k, v in gen_times.items()},
            "ratio": round(statistics.median(gen_times["direct"]) / statistics.median(gen_times["lmctl"]), 3),
        }  # fmt: skip
        self.results["eval"], self.results["generate"] = eval_info, gen_info
        return {"eval": eval_info, "generate": gen_info}

    @staticmethod
    def _interleaved(cases: dict, runs: int) -> dict[str, list[float]]:
        for fn in cases.values():  # warm-up
            fn()
        times: dict[str, list[float]] = {k: [] for k in cases}
        for run in range(runs):
            for name in list(cases) if run % 2 == 0 else list(reversed(cases)):
                times[name].append(cases[name]())
        return times

    # -------------------------------------------------------------- 5. profile
    def profile(self) -> str:
        """A torch profiler summary of one lmctl training step (after three warm-up steps)."""
        import torch
        from torch.profiler import ProfilerActivity, profile

        from lmctl.workflows.train.config import TrainConfig
        from lmctl.workflows.train.trainer import Trainer

        s, c = self.shape, self.common_train()
        config = TrainConfig(
            model="gpt2", from_scratch=True, train=[str(self.prepared)], out=str(self.work / "profile"),
            model_config=[f"n_layer={s.layers}", f"n_head={s.heads}", f"n_embd={s.dim}", f"vocab_size={s.vocab}"],
            block_size=s.block, batch_size=s.batch, max_steps=10, lr=c["lr"], precision=self.precision,
            eval_every=0, save_every=0, dropout=0.0,
        )  # fmt: skip
        trainer = Trainer(config, quiet=True)
        trainer.setup()

        def step(i: int) -> None:
            loss, grad_norm, _ = trainer._train_step(i)
            bool(torch.isfinite(loss + grad_norm))
            trainer.optimizer.step()
            trainer.optimizer.zero_grad(set_to_none=True)

        for i in range(3):
            step(i)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device == "cuda" else [])
        with profile(activities=activities) as prof:
            step(3)
            if self.device == "cuda":
                torch.cuda.synchronize()
        key = "cuda_time_total" if self.device == "cuda" else "cpu_time_total"
        table = prof.key_averages().table(sort_by=key, row_limit=20)
        (self.out / "profile.txt").write_text(table, encoding="utf-8")
        self.results["profile"] = "profile.txt"
        self.results["profile_top"] = table.splitlines()[:14]  # the header and the 10 costliest ops
        return table

    # -------------------------------------------------------------- 6. variants of lmctl's step
    def variants(self) -> list[dict]:
        """lmctl's training step timed in this process, to choose defaults from measurements:
        eager or ``torch.compile``; the fused output layer + cross-entropy or the model's logits and
        ``F.cross_entropy``; with the loop's one per-step host sync (the finite check) or without.
        Each: median milliseconds per step over the steps after a warm-up, tokens/s, MFU."""
        import gc

        import torch

        import lmctl.kit.losses as losses
        from lmctl.workflows.train.config import TrainConfig
        from lmctl.workflows.train.trainer import Trainer

        s, c = self.shape, self.common_train()
        cuda = self.device == "cuda"
        warm, timed = (8, 20) if not self.args.tiny else (2, 3)
        cases = [("eager", False, True, True), ("eager, logits loss", False, False, True),
                 ("eager, no per-step sync", False, True, False), ("compiled", True, True, True),
                 ("compiled, logits loss", True, False, True), ("compiled, no per-step sync", True, True, False),
                 ("compiled, no cuDNN attention", True, True, True)]  # fmt: skip
        if self.args.variant:
            cases = [case for case in cases if case[0] in self.args.variant]
        fused_output_layer = losses.fused_output_layer
        rows: list[dict] = []
        self.results["variants"] = rows
        for name, compile_, fused, sync in cases:
            spent = time.perf_counter() - self.began
            if self.args.budget and spent > self.args.budget + 60:
                rows.append({"variant": name, "skipped": f"over budget ({spent:.0f} s)"})
                continue
            began = time.perf_counter()
            try:
                losses.fused_output_layer = fused_output_layer if fused else (lambda model: None)
                if cuda:
                    torch.backends.cuda.enable_cudnn_sdp("cuDNN" not in name)
                config = TrainConfig(
                    model="gpt2", from_scratch=True, train=[str(self.prepared)], out=str(self.work / "variant"),
                    model_config=[f"n_layer={s.layers}", f"n_head={s.heads}", f"n_embd={s.dim}", f"vocab_size={s.vocab}"],
                    block_size=s.block, batch_size=s.batch, max_steps=warm + timed, lr=c["lr"], precision=self.precision,
                    eval_every=0, save_every=0, dropout=0.0, compile=compile_, overwrite=True,
                )  # fmt: skip
                trainer = Trainer(config, quiet=True)
                trainer.setup()
                times = []
                for i in range(warm + timed):
                    if cuda:
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    loss, grad_norm, _ = trainer._train_step(i)
                    if sync:
                        bool(torch.isfinite(loss + grad_norm))
                    trainer.optimizer.step()
                    trainer.optimizer.zero_grad(set_to_none=True)
                    if not sync and i < warm + timed - 1:
                        times.append(None)  # timed as a run of steps below
                        continue
                    if cuda:
                        torch.cuda.synchronize()
                    times.append(time.perf_counter() - t0)
                if not sync:  # steps without a sync can only be timed together: time the run again
                    if cuda:
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    for i in range(timed):
                        loss, grad_norm, _ = trainer._train_step(i)
                        trainer.optimizer.step()
                        trainer.optimizer.zero_grad(set_to_none=True)
                    if cuda:
                        torch.cuda.synchronize()
                    step_s = (time.perf_counter() - t0) / timed
                else:
                    step_s = statistics.median(times[warm:])
                if self.args.profile and cuda:
                    from torch.profiler import ProfilerActivity, profile

                    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                        trainer._train_step(0)
                        trainer.optimizer.step()
                        trainer.optimizer.zero_grad(set_to_none=True)
                        torch.cuda.synchronize()
                    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=25)
                    with (self.out / "profile-variants.txt").open("a", encoding="utf-8") as handle:
                        handle.write(f"\n\n===== {name}\n{table}\n")
                tps = s.batch * s.block / step_s
                row = {"variant": name, "compile": compile_, "fused_loss": fused, "per_step_sync": sync,
                       "ms_per_step": round(step_s * 1000, 2), "tokens_per_s": round(tps, 1),
                       "mfu_datasheet": round(tps * flops_per_token(s) / self.peak, 4) if self.peak else None,
                       "mfu_measured": round(tps * flops_per_token(s) / self.measured_rate, 4) if getattr(self, "measured_rate", None) else None,
                       "loss": round(float(loss), 4), "wall_s": round(time.perf_counter() - began, 1)}  # fmt: skip
                if cuda:
                    row["peak_memory_bytes"] = int(torch.cuda.max_memory_allocated())
                    torch.cuda.reset_peak_memory_stats()
            except Exception as exc:  # noqa: BLE001 - one variant failing must not lose the others
                row = {"variant": name, "error": f"{type(exc).__name__}: {exc}"[:500]}
                self.say(traceback.format_exc())
            finally:
                losses.fused_output_layer = fused_output_layer
                if cuda:
                    torch.backends.cuda.enable_cudnn_sdp(True)
                trainer = None
                gc.collect()
                if cuda:
                    torch.cuda.empty_cache()
                torch._dynamo.reset()
            rows.append(row)
            self.say(f"   {name}: {row}")
            self.save()
        return rows

    # -------------------------------------------------------------- the whole run
    def wanted(self, phase: str) -> bool:
        if self.args.only:
            return phase in self.args.only.split(",")
        a = self.args
        return {
            "lmctl": True, "lmctl-compile": not a.tiny, "hf": not a.quick, "hf-compile": not (a.quick or a.tiny),
            "nanogpt": bool(a.nanogpt) and not a.quick, "nanogpt-compile": bool(a.nanogpt) and not (a.quick or a.tiny),
            "eval": not a.quick, "tests": not a.skip_tests, "profile": a.profile, "variants": a.variants,
        }[phase]  # fmt: skip

    def main(self) -> int:
        args = self.args
        want = self.wanted
        self.phase("machine", self.describe)
        self.results["install"] = self.phase("install", self.install)
        self.results["data"] = self.phase("prepare", self.prepare)
        self.results["matmul"] = self.phase("matmul rate", self.matmul_rate)
        if self.results["data"] is not None:
            for key, name, fn in [
                ("lmctl", "lmctl train", lambda: self.lmctl_row(False)),
                ("lmctl-compile", "lmctl train --compile", lambda: self.lmctl_row(True)),
                ("hf", "HF Trainer", lambda: self.hf_row(False)),
                ("hf-compile", "HF Trainer, torch_compile", lambda: self.hf_row(True)),
                ("nanogpt", "nanoGPT", lambda: self.nanogpt_row(False)),
                ("nanogpt-compile", "nanoGPT, compile", lambda: self.nanogpt_row(True)),
            ]:
                if want(key):
                    self.phase(name, fn)
            if not args.nanogpt and not args.quick:
                self.results["nanogpt"] = "skipped: no --nanogpt DIR"
            if want("eval") and getattr(self, "lmctl_model", None):
                self.phase("eval and generate", self.eval_and_generate)
        # The tests after the figures: a test that hangs until its timeout cannot cost the table.
        if want("tests"):
            self.results["tests"] = self.phase("tests", self.tests)
        self.results["checks"] = checks(self.results)
        missed = any(check["met"] is False for check in self.results["checks"] if check["area"] == "training")
        if getattr(self, "prepared", None) and (want("profile") or (missed and not args.tiny and not args.quick)):
            self.phase("profile", self.profile, optional=True)
        if getattr(self, "prepared", None) and want("variants"):
            self.phase("variants", self.variants, optional=True)
        self.save()
        section = markdown(self.results)
        if args.update_docs:
            (HERE / "results").mkdir(exist_ok=True)
            (HERE / "results" / "gpu.md").write_text(section, encoding="utf-8")
            subprocess.run([sys.executable, str(HERE / "run.py"), "--assemble"], cwd=REPO, check=False)
        self.log.close()
        print(section)
        if not args.keep_work and not args.work:
            shutil.rmtree(self.work, ignore_errors=True)
        return 1 if self.results["errors"] else 0


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


# --- acceptance checks and the page --------------------------------------------------------------


def _rows(results: dict) -> dict[str, dict]:
    return {row["pipeline"]: row for row in results.get("training", [])}


def checks(results: dict) -> list[dict]:
    """The issue's targets, each with the measured figure (None when a side is missing)."""
    rows = _rows(results)
    out: list[dict] = []

    def add(area: str, what: str, value: float | None, target: str, met: bool | None) -> None:
        out.append({"area": area, "check": what, "measured": value, "target": target, "met": met})

    nano = rows.get("nanoGPT train.py, compile")
    hf = rows.get("HF Trainer, torch_compile")
    for name in ("lmctl train", "lmctl train --compile"):
        row = rows.get(name)
        if not row or not row["tokens_per_s"]:
            continue
        if nano and nano["tokens_per_s"]:
            ratio = row["tokens_per_s"] / nano["tokens_per_s"]  # same FLOPs per token: MFU ratio = throughput ratio
            add("training", f"{name} MFU / nanoGPT compiled MFU", round(ratio, 3), ">= 0.97", ratio >= 0.97)
            if row["final_loss"] and nano["final_loss"]:
                gap = abs(row["final_loss"] - nano["final_loss"]) / nano["final_loss"]
                add("training", f"{name} final loss vs nanoGPT compiled", round(gap, 4), "within 2%", gap <= 0.02)
        if hf and hf["tokens_per_s"]:
            ratio = row["tokens_per_s"] / hf["tokens_per_s"]
            add("training", f"{name} tokens/s / HF Trainer compiled", round(ratio, 3), ">= 1.3", ratio >= 1.3)
            if row["final_loss"] and hf["final_loss"]:
                gap = abs(row["final_loss"] - hf["final_loss"]) / hf["final_loss"]
                add("training", f"{name} final loss vs HF Trainer compiled", round(gap, 4), "within 2%", gap <= 0.02)
        if row["mfu_measured"] is not None and results.get("machine", {}).get("device_kind") == "cuda":
            add("training", f"{name} MFU of the measured matmul rate", row["mfu_measured"], ">= 0.40", row["mfu_measured"] >= 0.40)
    if results.get("eval"):
        ratio = results["eval"]["ratio"]
        add("eval", "lmctl eval speed / direct no_grad loop", ratio, ">= 0.95", ratio >= 0.95)
    if results.get("generate"):
        ratio = results["generate"]["ratio"]
        add("generate", "lmctl generate speed / model.generate", ratio, ">= 0.95", ratio >= 0.95)
    tests = results.get("tests")
    if tests:
        ok = tests["failed"] == 0 and tests["passed"] > 0
        add("tests", "gpu-marked tests", f"{tests['passed']} passed, {tests['failed']} failed, {tests['skipped']} skipped",
            "all pass", ok if tests["passed"] or tests["failed"] else None)  # fmt: skip
    return out


def _fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "-"
    return format(value, spec) if spec else str(value)


def markdown(results: dict) -> str:
    m = results.get("machine", {})
    s = results["shape"]
    lines = [
        "# GPU",
        "",
        f"Command: `{results['command']}` ({results['date']}; mode: {results['mode']}).",
        f"Device: {m.get('device', '?')} ({m.get('device_kind', '?')}), {m.get('cpus', '?')} CPUs; "
        f"torch {m.get('torch', '?')}, transformers {m.get('transformers', '?')}, CUDA {m.get('cuda') or '-'}.",
        f"Model: GPT-2, {s['layers']} layers, {s['heads']} heads, {s['dim']} wide, block {s['block']}, vocabulary "
        f"{s['vocab']:,}; batch {s['batch']}, {s['steps']} steps, windows of {s['window']} steps, the first "
        f"{s['warmup_windows']} not timed; precision {m.get('precision', '?')}.",
        f"MFU: nanoGPT's FLOPs per token, 6N + 12·L·H·Q·T = {flops_per_token(Shape(**s)) / 1e6:,.1f} MFLOP, over the "
        f"datasheet bf16 peak ({_fmt(m.get('datasheet_bf16_tflops'))} TFLOP/s) and over the matmul rate measured in this run "
        f"({_fmt((results.get('matmul') or {}).get('tflops'))} TFLOP/s).",
        "",
        "| pipeline | tokens/s | MFU (datasheet) | MFU (measured matmul) | peak memory (MiB) | final loss | whole run (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in results.get("training", []):
        mem = row["peak_memory_bytes"]
        lines.append(
            f"| {row['pipeline']} | {_fmt(row['tokens_per_s'], ',.0f')} | {_fmt(row['mfu_datasheet'], '.1%')} | "
            f"{_fmt(row['mfu_measured'], '.1%')} | {_fmt(mem / 2**20 if mem else None, ',.0f')} | "
            f"{_fmt(row['final_loss'], '.4f')} | {row['wall_s']} |"
        )
    if isinstance(results.get("nanogpt"), str):
        lines += ["", f"nanoGPT: {results['nanogpt']}."]
    if results.get("eval"):
        e = results["eval"]
        lines += ["", f"Eval ({e['blocks']} blocks of {e['block']}, batch {e['batch']}): median seconds {e['median_s']}; "
                  f"lmctl / direct speed **{e['ratio']}x** (losses {e['loss_lmctl']} and {e['loss_direct']})."
                  + (f" Against a bf16-weights loop: {e['ratio_vs_bf16_weights']}x." if "ratio_vs_bf16_weights" in e else "")]  # fmt: skip
    if results.get("generate"):
        g = results["generate"]
        lines += ["", f"Generate ({g['prompts']} prompts x {g['new_tokens']} new tokens, {g['dtype']}, KV cache, "
                  f"temperature 0.8, top-k 50): median seconds {g['median_s']}; lmctl / direct speed **{g['ratio']}x**."]  # fmt: skip
    if results.get("checks"):
        lines += ["", "| check | measured | target | met |", "| --- | --- | --- | --- |"]
        for c in results["checks"]:
            met = {True: "yes", False: "**no**", None: "-"}[c["met"]]
            lines.append(f"| {c['check']} | {c['measured']} | {c['target']} | {met} |")
    if results.get("variants"):
        lines += ["", "lmctl's step in one process (`--variants`): median ms per step after a warm-up.", "",
                  "| variant | ms/step | tokens/s | MFU (datasheet) | MFU (measured matmul) | loss |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
        for v in results["variants"]:
            if "ms_per_step" in v:
                lines.append(f"| {v['variant']} | {v['ms_per_step']} | {_fmt(v['tokens_per_s'], ',.0f')} | "
                             f"{_fmt(v['mfu_datasheet'], '.1%')} | {_fmt(v['mfu_measured'], '.1%')} | {v['loss']} |")  # fmt: skip
            else:
                lines.append(f"| {v['variant']} | {v.get('error') or v.get('skipped')} | - | - | - | - |")
    if results.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(f"{k}: {v}" for k, v in results["skipped"].items())]
    if results.get("profile_top"):
        lines += ["", "Where one lmctl training step's time goes (torch profiler, `profile.txt` in the output folder):",
                  "", "```text", *results["profile_top"], "```"]  # fmt: skip
    if results.get("errors"):
        lines += ["", "Errors: " + "; ".join(f"{k}: {v.splitlines()[0]}" for k, v in results["errors"].items())]
    lines += ["", "Phase wall times (s): " + ", ".join(f"{k} {v}" for k, v in results["phases"].items()), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(REPO / ".gpu" / "results"), help="results folder (results.json, results.md, gpu.md, log.txt, ...)")
    p.add_argument("--work", help="folder for prepared data and runs (default: a temporary folder, removed at the end)")
    p.add_argument("--keep-work", action="store_true", help="keep the temporary work folder")
    p.add_argument("--quick", action="store_true", help="only the tests and the lmctl rows (a re-check)")
    p.add_argument("--tiny", action="store_true", help="tiny shapes and a few steps, on the CPU (tests, CI)")
    p.add_argument("--nanogpt", help="a nanoGPT checkout (e.g. .gpu/nanoGPT, copied from ../shared/third_party/nanoGPT)")
    p.add_argument("--peak-tflops", type=float, help="the card's dense bf16 peak, instead of the datasheet table")
    p.add_argument("--steps", type=int, help="optimizer steps per training row (default 60; tiny 10)")
    p.add_argument("--text", action="append", help="corpus file(s) (default: .gpu/data/*.txt, ../shared/data, or pydoc text)")
    p.add_argument("--skip-tests", action="store_true", help="do not run the gpu-marked tests")
    p.add_argument("--tests-k", help="pytest -k expression selecting some of the gpu tests")
    p.add_argument("--variant", action="append", help="with --variants: only this one (repeatable)")
    p.add_argument("--only", help="comma-separated phases to run (of: " + ", ".join(PHASES) + ")")
    p.add_argument("--profile", action="store_true", help="always write a profiler summary of one lmctl step")
    p.add_argument("--update-docs", action="store_true", help="write benchmarks/results/gpu.md and reassemble docs/benchmarks.md")
    p.add_argument("--timeout", type=float, default=300, help="seconds allowed to each training subprocess")
    p.add_argument("--tests-timeout", type=float, default=240, help="seconds allowed to the gpu tests")
    p.add_argument(
        "--test-workers",
        type=int,
        default=4,
        help="gpu tests run at once (with pytest-xdist; 1: one at a time)",
    )
    p.add_argument(
        "--budget", type=float, help="seconds after which the optional phases (profile, variants) are skipped"
    )
    p.add_argument(
        "--variants",
        action="store_true",
        help="time lmctl's step in-process: eager/compiled x fused/logits loss x per-step sync",
    )
    args = p.parse_args(argv)
    if args.tiny:
        # --tiny runs on the CPU, also on a GPU machine; tiny models run fastest on one thread, and
        # do not fight other jobs for cores (the test suite runs it).
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)
    return Bench(args).main()


if __name__ == "__main__":
    sys.exit(main())
