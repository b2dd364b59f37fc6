"""The fused output layer + cross-entropy (lmctl.kit.losses) against plain F.cross_entropy on logits."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from lmctl.kit.losses import FUSED_MODEL_TYPES, LinearCrossEntropy, causal_lm_loss, fused_output_layer  # noqa: E402


def reference(hidden, weight, targets, smoothing=0.0):
    return F.cross_entropy(hidden @ weight.t(), targets, ignore_index=-100, reduction="sum", label_smoothing=smoothing)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("rows", [7, 300, 1000])  # under one chunk, a few chunks, a ragged last chunk
def test_fused_loss_and_gradients_match_cross_entropy(rows, smoothing):
    gen = torch.Generator().manual_seed(rows)
    vocab, dim = 1500, 24
    hidden = torch.randn(rows, dim, generator=gen, dtype=torch.float64).float().requires_grad_()
    weight = (0.3 * torch.randn(vocab, dim, generator=gen)).requires_grad_()
    targets = torch.randint(vocab, (rows,), generator=gen)
    targets[::5] = -100  # ignored positions contribute neither loss nor gradient

    fused = LinearCrossEntropy.apply(hidden, weight, targets, smoothing)
    (3.0 * fused).backward()  # a non-unit upstream gradient must scale both gradients
    fused_grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    expected = reference(hidden, weight, targets, smoothing)
    (3.0 * expected).backward()

    assert fused.item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.allclose(fused_grads[0], hidden.grad, atol=1e-5, rtol=1e-4)
    assert torch.allclose(fused_grads[1], weight.grad, atol=1e-5, rtol=1e-4)


def test_fused_loss_under_bf16_autocast_is_close_to_fp32():
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(256, 32, generator=gen, requires_grad=True)
    weight = (0.2 * torch.randn(512, 32, generator=gen)).requires_grad_()
    targets = torch.randint(512, (256,), generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = LinearCrossEntropy.apply(hidden, weight, targets)
    fused.backward()
    assert hidden.grad.dtype == torch.float32 and weight.grad.dtype == torch.float32
    expected = reference(hidden.detach(), weight.detach(), targets)
    assert fused.item() == pytest.approx(expected.item(), rel=1e-2)


def tiny_model(model_type):
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        OpenAIGPTConfig,
        OpenAIGPTLMHeadModel,
    )

    torch.manual_seed(0)
    no_dropout = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}  # same masks in both passes
    if model_type == "gpt2":
        config = GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=32, vocab_size=96, **no_dropout)
        return GPT2LMHeadModel(config)
    if model_type == "llama":
        config = LlamaConfig(
            num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, hidden_size=32,
            intermediate_size=64, max_position_embeddings=32, vocab_size=96,
        )  # fmt: skip
        return LlamaForCausalLM(config)
    config = OpenAIGPTConfig(n_layer=2, n_head=2, n_embd=32, n_positions=32, vocab_size=96, **no_dropout)
    return OpenAIGPTLMHeadModel(config)


@pytest.mark.parametrize("model_type", ["gpt2", "llama", "openai-gpt"])
def test_causal_lm_loss_equals_the_models_own_labels_loss(model_type):
    """Whatever path causal_lm_loss takes, it gives the model's own (transformers) loss and gradients."""
    model = tiny_model(model_type)
    model.train()
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(96, (3, 17), generator=gen)  # one token more than the input: 16 targets per row
    ids[1, 10:] = 5
    mask = torch.ones(3, 16, dtype=torch.long)
    labels = ids.clone()
    labels[2, 12:] = -100

    inputs = {"input_ids": ids[:, :16], "attention_mask": mask}
    loss, tokens = causal_lm_loss(model, inputs, labels)
    loss.backward()
    ours = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    # Independent: the model's logits for all 16 positions, targets ids[:, 1:17].
    logits = model(**inputs).logits
    targets = labels[:, 1:]
    expected = F.cross_entropy(logits.reshape(-1, 96), targets.reshape(-1), ignore_index=-100)
    expected.backward()

    assert int(tokens) == int((targets != -100).sum())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    for name, param in model.named_parameters():
        assert torch.allclose(ours[name], param.grad, atol=1e-6, rtol=1e-4), name
    assert (fused_output_layer(model) is not None) == (model_type in FUSED_MODEL_TYPES)


def test_labels_as_long_as_the_input_leave_the_last_position_unscored():
    model = tiny_model("gpt2")
    ids = torch.randint(96, (2, 12), generator=torch.Generator().manual_seed(2))
    loss, tokens = causal_lm_loss(model, {"input_ids": ids}, ids)
    expected = model(input_ids=ids, labels=ids).loss  # transformers shifts its labels itself
    assert int(tokens) == 2 * 11
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_sharded_models_take_the_logits_path():
    """FSDP and DeepSpeed gather weights only inside the forward: the fused layer must not be used."""
    model = tiny_model("gpt2")
    assert fused_output_layer(model) is not None
    assert fused_output_layer(torch.compile(model)) is not None  # compiled: the same whole weights
    model.__class__ = type("FSDPGPT2LMHeadModel", (type(model),), {})  # how FSDP2 re-classes a module
    assert fused_output_layer(model) is None
    partitioned = tiny_model("gpt2")
    partitioned.lm_head.weight.ds_id = 3  # what DeepSpeed ZeRO-3 puts on its partitioned parameters
    assert fused_output_layer(partitioned) is None


# --- the compiled chunk kernel's arithmetic (used on CUDA) ----------------------------------------


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_softmax_cross_entropy_grad_matches_autograd(smoothing, dtype):
    """The function the GPU compiles: summed loss and d(loss)/d(logits) against F.cross_entropy's
    autograd in float64, ignored rows included."""
    from lmctl.kit.losses import IGNORE, softmax_cross_entropy_grad

    gen = torch.Generator().manual_seed(3)
    logits = (torch.randn(37, 301, generator=gen) * 3).to(getattr(torch, dtype))
    targets = torch.randint(0, 301, (37,), generator=gen)
    targets[::5] = IGNORE
    total, grad = softmax_cross_entropy_grad(logits, targets, smoothing)
    reference = logits.double().requires_grad_()
    expected = F.cross_entropy(
        reference, targets, ignore_index=IGNORE, reduction="sum", label_smoothing=smoothing
    )
    expected.backward()
    assert total.dtype == torch.float32 and grad.dtype == logits.dtype
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    tol = 1e-6 if dtype == "float32" else 1e-2
    assert torch.allclose(grad.double(), reference.grad, atol=tol * reference.grad.abs().max().item())
    assert grad[::5].abs().max() == 0  # ignored rows get no gradient


@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_fused_loss_through_the_chunk_kernel_matches_the_eager_loop(compiled, monkeypatch):
    """LinearCrossEntropy with the chunk kernel (what runs on CUDA; here on the CPU, eager or
    through torch.compile) gives the eager loop's loss and gradients across several chunks."""
    import lmctl.kit.losses as losses

    gen = torch.Generator().manual_seed(5)
    n, d, vocab = 300, 32, 4096
    hidden = torch.randn(n, d, generator=gen).requires_grad_()
    weight = (torch.randn(vocab, d, generator=gen) * 0.1).requires_grad_()
    targets = torch.randint(0, vocab, (n,), generator=gen)
    targets[::7] = losses.IGNORE

    def run():
        loss = losses.LinearCrossEntropy.apply(hidden, weight, targets, 0.1)
        loss.backward()
        grads = hidden.grad.clone(), weight.grad.clone()
        hidden.grad = weight.grad = None
        return loss.detach(), grads

    eager_loss, eager_grads = run()
    kernel = (
        torch.compile(losses.softmax_cross_entropy_grad, dynamic=False)
        if compiled
        else losses.softmax_cross_entropy_grad
    )
    calls = []

    def counting(*args):
        calls.append(args[0].shape[0])
        return kernel(*args)

    monkeypatch.setattr(losses, "chunk_kernel", lambda device: counting)
    monkeypatch.setattr(losses, "_chunk_rows", lambda n_rows, vocab, device, compiled=False: 128)
    kernel_loss, kernel_grads = run()
    assert calls == [128, 128, 44]
    assert kernel_loss.item() == pytest.approx(eager_loss.item(), rel=1e-5)
    for got, want in zip(kernel_grads, eager_grads, strict=True):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-6)
