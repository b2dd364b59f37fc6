"""Peak-memory estimate for training a transformers language model on one machine.

Pure stdlib: takes a transformers config as a dict (``config.to_dict()``), no torch import.

The formula (bytes; one formula for every architecture and shape, no per-shape constants)
=========================================================================================

Symbols: P = all parameters, T = trainable parameters, Tmax = the largest trainable tensor,
L = layers, h = hidden size, f = MLP inner size, a = attention heads, s = block size,
b = batch, N = b*s tokens, V = vocabulary, e = bytes of an activation element (4 for fp32,
2 for bf16/fp16 autocast), lin = parameters of the blocks' linear layers (what 4-bit quantises).

    total = baseline + weights + grads + optimizer + activations + loss

    weights     = 4*P                                   (fp32 master weights; Accelerate-style autocast)
                  + 2*lin                   if bf16/fp16  (autocast's cached low-precision copy of each
                                                          weight lives for the whole forward+backward)
                  4-bit: (P - lin)*4 + lin*(0.5 + 0.0625) (NF4 + one fp32 absmax per 64-block)
    grads       = 4*T
    optimizer   = AdamW: 8*T + 4*Tmax                   (exp_avg, exp_avg_sq; the step's temporary
                                                          denominator, one tensor at a time on CPU)
                  SGD: 0 ; SGD+momentum: 4*T
    activations = L * layer                             without activation checkpointing
                = L * N*h*e + layer                     with it (each layer's input is kept, one layer
                                                          is recomputed at a time in the backward)
       layer    = N*h*(e*(7 + k_act*f/h) + m) + S
                  9 h-sized tensors saved per block (LN1-in, qkv-in, q, k, v, attn-out, proj-in, LN2-in,
                  fc-in), after Korthikanti et al. (2022, "Reducing Activation Recomputation in Large
                  Transformer Models"); checked with saved_tensors_hooks on GPT-2: 121 B per N*h per
                  layer in fp32 with dropout (formula: 4*(9+20)+8 = 124);
                  k_act = f-sized tensors the activation keeps: 2 for a fused GELU/ReLU (its input and
                  output), 5 for the tanh-GELU transformers writes in Python ("gelu_new": input, tanh,
                  0.5*x, 1+tanh, product), 4 for SwiGLU (gate, up, silu(gate), product);
                  m = dropout-mask bytes per h element: 2*mb (attention-output and MLP-output dropout)
                  when dropout > 0, else 0; mb = 1 on CUDA (bool mask), e on a CPU (float noise);
       S        = a*s*s*b*(2e + mb) if attention scores are materialised and dropout > 0
                  (softmax output, its dropout mask, the dropped-out probabilities),
                = a*s*s*b*e        if materialised without dropout (softmax output only),
                = 0                for fused SDPA (flash / memory-efficient kernels).
                  Scores are materialised by eager attention, and by SDPA on a CPU when dropout > 0
                  (torch's CPU flash kernel has no dropout; it falls back to the math path).
       (CUDA, e=2, dropout on, eager, fused GELU: layer = N*h*(2*(9+8) + 2) + 5*a*s^2*b = N*h*36 + 5*a*s^2*b,
        Korthikanti's 34 + 5as/h plus the final-LN/embedding bookkeeping they omit.)
    loss        = N*V*(e + 8)          model's own loss: the [N, V] logits, log-softmax output (fp32)
                                        and its gradient coexist in the backward (~3 fp32 copies)
                = 2*V*h*4 + 2*N*h*4 + 2*c*V*4   fused chunked linear+CE (lmctl's LinearCrossEntropy):
                                        the fp32 weight gradient and hidden gradient it keeps for the
                                        backward plus the backward's scaled copies, and two chunks
                                        of c rows of logits; the [N, V] logits never exist
    baseline    = on a CUDA device 0 (the figure is GPU tensors, torch.cuda.max_memory_allocated: GPT-2
                  124M bf16 12x1024 measured 7.5 GiB, estimated 9.0 GiB on an H200); on a CPU:
                  RSS of a Python process after ``import torch, transformers`` (+ peft when LoRA),
                  measured by :func:`measure_baseline` (354 MB / 411 MB with peft on the reference
                  machine: torch 2.13 CPU, transformers 5.24, peft 0.21.2)
                  + runtime = allocator/thread-pool/oneDNN growth of the first training step
                  (a fixed 150 MB, measured once on the reference machine).

LoRA (rank r) on every linear layer of the blocks adds T = r*(in + out) per adapted layer; its
activations are counted like the full model's (LoRA's A matrices save the same linear inputs the
frozen weights would have saved for their own gradients). 4-bit (QLoRA) adds the dequantised
weight of the largest linear layer as a transient (counted in ``overhead``).

Validated against the measured peak RSS (VmHWM) of CPU fp32 training of GPT-2 124M: docs/scale.md
(``benchmarks/bench_memory.py``).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

MB = 1 << 20
GB = 1 << 30

#: Measured on the reference machine (docs/scale.md); :func:`measure_baseline` re-measures.
DEFAULT_BASELINE = 354 * MB
DEFAULT_BASELINE_PEFT = 411 * MB
DEFAULT_RUNTIME = 150 * MB

#: f-sized tensors an activation function keeps for its backward (see the module docstring).
ACT_TENSORS = {
    "gelu_new": 5, "gelu_pytorch_tanh": 2, "gelu": 2, "gelu_fast": 5, "relu": 2, "silu": 4,
    "swish": 4, "quick_gelu": 3,
}


@dataclasses.dataclass
class MemoryPlan:
    weights: int
    gradients: int
    optimizer: int
    activations: int
    loss: int
    overhead: int
    total_params: int
    trainable_params: int
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.loss + self.overhead

    def describe(self) -> list[str]:
        def fmt(n: int) -> str:
            return f"{n / GB:.2f} GB" if n >= GB else f"{n / MB:.0f} MB"

        pct = 100.0 * self.trainable_params / max(1, self.total_params)
        lines = [
            f"parameters: {self.total_params / 1e6:.1f} M, trainable {self.trainable_params / 1e6:.2f} M ({pct:.2f}%)",
            f"weights      {fmt(self.weights)}",
            f"gradients    {fmt(self.gradients)}",
            f"optimizer    {fmt(self.optimizer)}",
            f"activations  {fmt(self.activations)}",
            f"loss/logits  {fmt(self.loss)}",
            f"framework    {fmt(self.overhead)}",
            f"total        {fmt(self.total)}",
        ]
        return lines + [f"note: {n}" for n in self.notes]


# ---------------------------------------------------------------------------------------------
# Shapes and parameter counts from a config dict


#: Architectures whose parameters :func:`count_params` counts exactly (others: an approximation).
KNOWN_MODEL_TYPES = frozenset(
    {"gpt2", "llama", "mistral", "qwen2", "qwen3", "gemma", "phi3", "bert", "roberta", "electra", "distilbert"}
)


def _get(c: dict, *names, default=None):
    for n in names:
        if c.get(n) is not None:
            return c[n]
    return default


def shape(config: dict) -> dict:
    """The architecture numbers the formula uses, under their common config names."""
    c = config.get("text_config") or config
    h = _get(c, "hidden_size", "n_embd", "d_model", "dim", "embedding_size")
    L = _get(c, "num_hidden_layers", "n_layer", "num_layers", "n_layers")
    a = _get(c, "num_attention_heads", "n_head", "num_heads", "n_heads")
    if not (isinstance(h, int) and isinstance(L, int) and isinstance(a, int) and a > 0):
        raise ValueError("the config does not name its hidden size, layers and attention heads")
    kv = _get(c, "num_key_value_heads", default=a)
    f = _get(c, "intermediate_size", "n_inner", "d_inner", "ffn_dim", "hidden_dim") or 4 * h
    V = _get(c, "vocab_size") or 0
    d = _get(c, "head_dim") or h // a
    act = _get(c, "hidden_act", "activation_function", "ff_activation", default="gelu")
    drop = max(
        [v for k, v in c.items() if isinstance(v, float) and (k.endswith("pdrop") or k.endswith("dropout")
                                                             or k.endswith("dropout_prob"))] or [0.0]
    )
    return {"h": h, "L": L, "a": a, "kv": kv, "f": f, "V": V, "d": d, "act": act, "dropout": drop,
            "type": c.get("model_type", ""), "tied": c.get("tie_word_embeddings", True),
            "positions": _get(c, "n_positions", "max_position_embeddings", default=0)}


def count_params(config: dict) -> dict:
    """Parameter counts from the config: total, block linear weights (``lin``), largest tensor,
    and the in/out sizes of each block's linear layers (for LoRA)."""
    g = shape(config)
    c = config.get("text_config") or config
    h, L, a, kv, f, V, d = g["h"], g["L"], g["a"], g["kv"], g["f"], g["V"], g["d"]
    t = g["type"]
    if t == "gpt2":
        linears = [(h, 3 * h), (h, h), (h, f), (f, h)]
        per_layer = sum(i * o + o for i, o in linears) + 4 * h
        total = V * h + g["positions"] * h + L * per_layer + 2 * h + (0 if g["tied"] else V * h)
    elif t in ("llama", "mistral", "qwen2", "qwen3", "gemma", "phi3"):
        linears = [(h, a * d), (h, kv * d), (h, kv * d), (a * d, h), (h, f), (h, f), (f, h)]
        bias = (a * d + 2 * kv * d) if (t == "qwen2" or c.get("attention_bias")) else 0
        norms = 2 * h + (2 * d if t == "qwen3" else 0)
        per_layer = sum(i * o for i, o in linears) + bias + norms
        total = V * h + L * per_layer + h + (0 if g["tied"] else V * h)
    elif t in ("bert", "roberta", "electra", "distilbert"):
        e = c.get("embedding_size") or h  # electra may project embeddings
        linears = [(h, h), (h, h), (h, h), (h, h), (h, f), (f, h)]
        per_layer = sum(i * o + o for i, o in linears) + 4 * h
        emb = V * e + g["positions"] * e + c.get("type_vocab_size", 2) * e + 2 * e + (e * h + h if e != h else 0)
        head = e * h + e + 2 * e + V  # MLM transform dense + LN + decoder bias (decoder tied)
        total = emb + L * per_layer + head
    else:  # fallback: 12 L h^2 of blocks plus embeddings
        linears = [(h, 3 * h), (h, h), (h, f), (f, h)]
        per_layer = sum(i * o for i, o in linears)
        total = V * h + L * per_layer + (0 if g["tied"] else V * h)
    lin = L * sum(i * o for i, o in linears)
    largest = max(V * h, max(i * o for i, o in linears))
    return {"total": total, "lin": lin, "largest": largest, "linears": linears, "layers": L}


def lora_params(config: dict, r: int, targets: int | None = None) -> tuple[int, int]:
    """(trainable, largest tensor) of LoRA rank ``r`` on all block linear layers ("all-linear"),
    or on the first ``targets`` of each layer's linear layers."""
    p = count_params(config)
    linears = p["linears"][: targets or None]
    return p["layers"] * sum(r * (i + o) for i, o in linears), max(r * max(i, o) for i, o in linears)


# ---------------------------------------------------------------------------------------------


def estimate_memory(
    config: dict,
    *,
    batch_size: int,
    block_size: int,
    precision: str = "fp32",
    activation_checkpointing: bool = False,
    lora: dict | None = None,
    quantize: str | None = None,
    optimizer: str = "adamw",
    fused_loss: bool = False,
    attention: str = "sdpa",
    device: str = "cpu",
    trainable_params: int | None = None,
    total_params: int | None = None,
    baseline_bytes: int | None = None,
    loss_chunk_rows: int = 256,
) -> MemoryPlan:
    """Peak training memory (bytes) by the formula of the module docstring.

    ``lora``: None or {"r": 8, "targets": None (all linear layers) | int}; ``quantize``: None | "4bit";
    ``attention``: "sdpa" | "eager"; ``device``: "cpu" | "cuda" (only decides whether SDPA with
    dropout materialises the scores); counts may be given to override the config-derived ones.
    """
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be fp32, bf16 or fp16, not {precision!r}")
    g = shape(config)
    counts = count_params(config)
    P = total_params or counts["total"]
    notes: list[str] = []
    if lora:
        T, tmax = lora_params(config, int(lora.get("r", 8)), lora.get("targets"))
    else:
        T, tmax = P, counts["largest"]
    if trainable_params is not None:
        T = trainable_params
    if quantize and not lora:
        notes.append("4-bit weights are frozen: train adapters (LoRA) on them")
        T = 0
    e = 4 if precision == "fp32" else 2
    N = batch_size * block_size
    h, L, a, f, V = g["h"], g["L"], g["a"], g["f"], g["V"]

    lin = counts["lin"]
    if quantize == "4bit":
        weights = int((P - lin) * 4 + lin * (0.5 + 0.0625))
    else:
        weights = 4 * P + (2 * lin if e == 2 else 0)
    grads = 4 * T
    opt = {"adamw": 8 * T + 4 * tmax, "adam": 8 * T + 4 * tmax, "sgd": 0, "sgd_momentum": 4 * T}[optimizer]

    k_act = ACT_TENSORS.get(g["act"], 2)
    dropout = g["dropout"]
    # dropout keeps a mask: a bool (1 byte) on CUDA (native_dropout), a float noise tensor (e bytes)
    # on a CPU (at::dropout's non-fused path), measured with saved_tensors_hooks (saved_bytes.py)
    mb = e if device == "cpu" else 1
    mask = 2 * mb if dropout > 0 else 0
    scores = attention == "eager" or (dropout > 0 and device == "cpu")
    S = (a * block_size * block_size * batch_size * ((2 * e + mb) if dropout > 0 else e)) if scores else 0
    layer = int(N * h * (e * (9 + k_act * f / h) + mask)) + S
    if activation_checkpointing:
        acts = L * N * h * e + layer
    else:
        acts = L * layer
    acts += N * h * (2 * e + (1 if dropout > 0 else 0))  # embedding dropout, final LN in/out

    if fused_loss:
        rows = min(N, loss_chunk_rows)
        loss = 2 * V * h * 4 + 2 * N * h * 4 + 2 * rows * V * 4
    else:
        loss = N * V * (e + 8)

    base = baseline_bytes if baseline_bytes is not None else (DEFAULT_BASELINE_PEFT if lora else DEFAULT_BASELINE)
    overhead = base + DEFAULT_RUNTIME
    if device.startswith("cuda"):
        # GPU memory holds the tensors alone: the process's host baseline stays in host memory.
        # Measured against torch.cuda.max_memory_allocated (tests/test_gpu.py); the CUDA context
        # and the caching allocator's reserve come on top of that figure.
        overhead = 0
        notes.append(
            "GPU tensors only: the CUDA context and the allocator's cache add about 0.5-1 GB per process"
        )
    if quantize == "4bit":
        overhead += max(i * o for i, o in counts["linears"]) * 4  # one dequantised weight at a time
    if scores and attention != "eager":
        notes.append("SDPA with dropout on a CPU falls back to the math path (scores materialised); "
                     "dropout 0 uses the flash kernel")
    return MemoryPlan(weights, grads, opt, acts, loss, overhead, P, T, notes)


def measure_baseline(python: str = sys.executable, peft: bool = False) -> int:
    """RSS (bytes) of a fresh ``python`` after ``import torch, transformers`` (and peft)."""
    code = (
        "import torch, transformers\n"
        + ("import peft\n" if peft else "")
        + "print([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])"
    )
    out = subprocess.check_output([python, "-c", code], stderr=subprocess.DEVNULL, text=True)
    return int(out.strip().splitlines()[-1]) * 1024
