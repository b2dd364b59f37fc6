"""Next-token cross-entropy for causal language models, with a fused output layer.

A causal LM's last two steps, the output projection (hidden states [N, d] times the embedding
matrix [V, d]) and the cross-entropy over V classes, are the biggest single cost of a small model's
training step: on the 4-layer, 128-wide GPT-2 of the benchmarks with a 4096-token vocabulary, the
[N, V] logits are 32 MB in fp32, written by the matmul, read by log-softmax, written again by its
backward.  :class:`LinearCrossEntropy` computes loss and gradients chunk by chunk instead (the
technique of Liger-Kernel's fused linear cross-entropy): for a few hundred rows at a time it forms
the logits, their softmax, the gradient ``softmax - one_hot``, and immediately the gradients of the
hidden states and of the weight, so the logits never exist whole and stay in cache.  The result is
the same loss and the same gradients (to float rounding; tested against ``F.cross_entropy``), about
10% faster per step on that shape on a 2-core CPU, and on a GPU it saves the [N, V] logits' memory.

:func:`causal_lm_loss` picks the fused path for architectures whose output layer is a plain,
bias-free linear map of the final hidden state, and otherwise takes the model's logits.

Targets are "labels" in the Hugging Face sense: the token sequence itself, position ``t`` predicting
``labels[t + 1]``.  Packed training blocks carry one token more than the model's input (see
``Family.block_lookahead``), so every input position has a target.
"""

from __future__ import annotations

import warnings
from typing import Any

IGNORE = -100

# Architectures whose logits are exactly ``lm_head(hidden_states[-1])`` with a bias-free linear
# ``lm_head`` and no scaling or soft-capping (tests/test_losses.py checks each against the logits).
FUSED_MODEL_TYPES = frozenset({"gpt2", "llama", "mistral", "qwen2", "qwen3"})


def next_token_targets(labels: Any, length: int) -> Any:
    """The target of each of ``length`` input positions: ``labels[:, 1:]``, padded with -100 when the
    labels are no longer than the input (the last position then has nothing to predict)."""
    import torch

    targets = labels[:, 1:]
    if targets.shape[1] < length:
        targets = torch.nn.functional.pad(targets, (0, length - targets.shape[1]), value=IGNORE)
    return targets[:, :length]


def _chunk_rows(n_rows: int, vocab: int, device: Any, compiled: bool = False) -> int:
    """Rows per chunk: ~2 MB of fp32 logits on a CPU (fits in cache), ~256 MB on an accelerator;
    with the compiled chunk kernel (CUDA), 128 M logits (256 MB in bf16): its fp32 math stays in
    registers, so a chunk costs its logits and their gradient, and fewer chunks mean fewer fp32
    additions into the weight gradient."""
    budget = (1 << 19) if device.type == "cpu" else ((1 << 27) if compiled else (1 << 26))
    return max(16, min(n_rows, budget // max(1, vocab)))


def softmax_cross_entropy_grad(logits: Any, targets: Any, smoothing: float) -> tuple[Any, Any]:
    """One chunk's summed cross-entropy (fp32) and its gradient with respect to the logits (in the
    logits' dtype): ``softmax - (1 - eps) * one_hot - eps / V`` on rows whose target is not -100.

    Written for ``torch.compile`` (see :func:`_compiled_chunk_kernel`): the math is fp32 inside
    the kernels, the logits are read by one reduction and one elementwise pass, and only the
    gradient is written.  Eagerly it materialises fp32 temporaries; the eager loop below does the
    same arithmetic in place instead."""
    import torch

    vocab = logits.shape[1]
    valid = (targets != IGNORE).float()[:, None]
    x = logits.float()
    top = x.amax(dim=1, keepdim=True)
    exp = (x - top).exp()
    sums = exp.sum(dim=1, keepdim=True)
    lse = top + sums.log()
    nll = lse - x.gather(1, targets.clamp(min=0)[:, None])
    if smoothing:  # + eps * (-mean_j log p_j) = eps * (lse - mean_j logit_j)
        nll = (1.0 - smoothing) * nll + smoothing * (lse - x.mean(dim=1, keepdim=True))
    one_hot = torch.arange(vocab, device=logits.device)[None, :] == targets[:, None]
    grad = (exp / sums - (1.0 - smoothing) * one_hot - smoothing / vocab) * valid
    return (nll * valid).sum(), grad.to(logits.dtype)


# The compiled chunk kernel, built on first use on a CUDA device; None once building or running
# it failed (no Triton, no C compiler): the eager loop then does the work.
_CHUNK_KERNEL: dict[str, Any] = {}


def chunk_kernel(device: Any) -> Any | None:
    """The compiled chunk kernel on a CUDA device, else None (the eager loop).  On a CPU the eager
    loop's chunks fit in cache and it is as fast; keeping it there keeps CPU results unchanged."""
    return _compiled_chunk_kernel() if device.type == "cuda" else None


def _compiled_chunk_kernel() -> Any | None:
    """On a GPU the eager chunk loop is bound by memory traffic: six fp32 passes over each chunk's
    logits (cast, max, exp, sum, scale, cast back) cost GPT-2 124M about 10 ms of a 43 ms step on an
    H200 (docs/benchmarks.md, GPU).  Compiled, the passes fuse into two kernels."""
    if "kernel" not in _CHUNK_KERNEL:
        try:
            import torch

            _CHUNK_KERNEL["kernel"] = torch.compile(softmax_cross_entropy_grad, dynamic=False)
        except Exception:  # noqa: BLE001 - any failure to build means: use the eager loop
            _CHUNK_KERNEL["kernel"] = None
    return _CHUNK_KERNEL["kernel"]


class LinearCrossEntropy:
    """``cross_entropy(hidden @ weight.T, targets, reduction="sum")`` without the whole logits.

    A ``torch.autograd.Function`` built lazily (torch is imported only when training).  The forward
    pass computes the gradients too (they need the same softmax) and keeps them for backward, which
    scales them by the incoming gradient.  Returns the summed loss in fp32.
    """

    _function: Any = None

    @classmethod
    def apply(cls, hidden: Any, weight: Any, targets: Any, label_smoothing: float = 0.0) -> Any:
        if cls._function is None:
            cls._function = _build_function()
        return cls._function.apply(hidden, weight, targets, float(label_smoothing))


def _build_function() -> Any:
    import torch

    class _LinearCrossEntropy(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, hidden: Any, weight: Any, targets: Any, smoothing: float) -> Any:
            device = hidden.device
            # Under autocast the output layer would run in the autocast dtype: do the same.
            dtype = hidden.dtype
            if torch.is_autocast_enabled(device.type):
                dtype = torch.get_autocast_dtype(device.type)
            with torch.autocast(device.type, enabled=False):
                h = hidden.to(dtype)
                w = weight.to(dtype)
                n, vocab = h.shape[0], w.shape[0]
                grad_h = torch.empty_like(h)
                grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=device)
                total = torch.zeros((), dtype=torch.float32, device=device)
                kernel = chunk_kernel(device)
                step = _chunk_rows(n, vocab, device, compiled=kernel is not None)
                # Label smoothing adds eps * (-mean_j log p_j) = eps * (lse - mean_j logit_j), and
                # mean_j (h . w_j) = h . mean_j w_j: no second pass over the logits.
                mean_w = w.float().mean(dim=0) if smoothing else None
                def eager_chunk(hi: Any, ti: Any) -> tuple[Any, Any]:
                    """softmax_cross_entropy_grad's arithmetic, in place (the path on a CPU)."""
                    valid = ti != IGNORE
                    index = ti.clamp(min=0)[:, None]
                    logits = (hi @ w.t()).float()
                    picked = logits.gather(1, index).squeeze(1)
                    top = logits.amax(dim=1, keepdim=True)
                    probs = logits.sub_(top).exp_()  # in place: the logits are not needed again
                    sums = probs.sum(dim=1)
                    lse = top.squeeze(1) + sums.log()
                    nll = lse - picked
                    if smoothing:
                        nll = (1.0 - smoothing) * nll + smoothing * (lse - hi.float() @ mean_w)
                    # d(loss)/d(logits) = softmax - (1 - eps) * one_hot - eps / V, zero on ignored rows.
                    scale = valid.float() / sums
                    grad = probs.mul_(scale[:, None])
                    grad.scatter_add_(1, index, -(1.0 - smoothing) * valid.float()[:, None])
                    if smoothing:
                        grad.sub_((smoothing / vocab) * valid.float()[:, None])
                    return (nll * valid).sum(), grad.to(dtype)

                for start in range(0, n, step):
                    hi, ti = h[start : start + step], targets[start : start + step]
                    chunk = None
                    if kernel is not None:
                        try:
                            chunk = kernel(hi @ w.t(), ti, smoothing)
                        except Exception as exc:  # noqa: BLE001 - fall back to the eager loop for good
                            _CHUNK_KERNEL["kernel"] = kernel = None
                            warnings.warn(f"the compiled cross-entropy kernel failed ({type(exc).__name__}); "
                                          "using the eager loop", RuntimeWarning, stacklevel=2)  # fmt: skip
                    chunk_total, grad = chunk if chunk is not None else eager_chunk(hi, ti)
                    total += chunk_total
                    torch.mm(grad, w, out=grad_h[start : start + step])
                    if dtype == torch.float32:
                        grad_w.addmm_(grad.t(), hi)
                    else:  # accumulate the weight gradient in fp32 across chunks
                        grad_w += (grad.t() @ hi).float()
            ctx.save_for_backward(grad_h, grad_w.to(weight.dtype))
            ctx.hidden_dtype = hidden.dtype
            return total

        @staticmethod
        def backward(ctx: Any, grad_output: Any) -> Any:
            grad_h, grad_w = ctx.saved_tensors
            return (grad_h * grad_output).to(ctx.hidden_dtype), grad_w * grad_output, None, None

    return _LinearCrossEntropy


def fused_output_layer(model: Any) -> Any | None:
    """The bias-free linear output layer of a supported causal LM, or None (use its logits).

    Only for a model whose weights are whole tensors outside its forward pass: bare, under
    DistributedDataParallel or torch.compile.  FSDP and DeepSpeed ZeRO shard the weights and
    gather them only inside the forward, so those take the logits path.
    """
    import torch

    inner = model
    while True:
        kind = type(inner).__name__
        if kind == "DistributedDataParallel":
            inner = inner.module
        elif kind == "OptimizedModule":  # torch.compile
            inner = inner._orig_mod
        else:
            break
    if any("FSDP" in cls.__name__ or "FullyShard" in cls.__name__ or "DeepSpeed" in cls.__name__
           for cls in type(inner).__mro__):  # fmt: skip
        return None
    config = getattr(inner, "config", None)
    if getattr(config, "model_type", None) not in FUSED_MODEL_TYPES:
        return None
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        return None
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if not isinstance(head, torch.nn.Linear) or head.bias is not None:
        return None
    weight = head.weight
    if type(weight) is not torch.nn.Parameter or hasattr(weight, "ds_id") or weight.shape != (config.vocab_size, weight.shape[1]):
        return None  # a DTensor (FSDP2), a ZeRO-3 partition or a resized view: not a whole matrix
    return head


def causal_lm_loss(model: Any, inputs: dict, labels: Any, label_smoothing: float = 0.0) -> tuple[Any, Any]:
    """Mean next-token loss over the predicted tokens, and their count (a tensor: no host sync).

    ``inputs`` go to the model as they are (through any DDP wrapper, so gradient sync works);
    ``labels`` follow the Hugging Face convention (see the module docstring).
    """
    import torch.nn.functional as F

    length = inputs["input_ids"].shape[1]
    targets = next_token_targets(labels, length).reshape(-1)
    tokens = (targets != IGNORE).sum()
    head = fused_output_layer(model)
    if head is not None:
        # logits_to_keep=1: the model computes logits for the last position only (cheap, unused);
        # the loss takes the final hidden states through the fused output layer instead.
        out = model(**inputs, use_cache=False, logits_to_keep=1, output_hidden_states=True)
        hidden = out.hidden_states[-1]
        total = LinearCrossEntropy.apply(hidden.reshape(-1, hidden.shape[-1]), head.weight, targets, label_smoothing)
    else:
        logits = model(**inputs, use_cache=False).logits
        total = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(),
            targets,
            ignore_index=IGNORE,
            reduction="sum",
            label_smoothing=label_smoothing,
        )
    return total / tokens.clamp(min=1), tokens


def masked_cross_entropy(logits: Any, labels: Any, label_smoothing: float = 0.0) -> tuple[Any, Any]:
    """Mean cross-entropy over the positions whose label is not -100 (no host sync)."""
    import torch.nn.functional as F

    total = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        labels.reshape(-1),
        ignore_index=-100,
        reduction="sum",
        label_smoothing=label_smoothing,
    )
    tokens = (labels != -100).sum()
    return total / tokens.clamp(min=1), tokens
