"""The `prefixlm` family: a causal model trained and sampled as a prefix LM (Raffel et al. 2020).

The first `prefix_fraction` of each block attends bidirectionally and is not predicted; every
later token attends to the whole prefix and to the tokens before it, and is predicted.  The
model is a standard causal one (GPT-2, Llama): the prefix is expressed as a 4D attention mask.
"""

from dataclasses import dataclass

from lmctl.errors import UsageError
from lmctl.families.base import Family, option, row_generators, row_seeded
from lmctl.families.causal import CausalFamily, next_token_batch


def prefix_mask(length, prefix, key_mask=None):
    """(B, 1, T, T) boolean attention: causal, plus every prefix position sees the whole prefix."""
    import torch

    positions = torch.arange(length)
    allowed = positions[None, :] <= positions[:, None]  # query row, key column
    prefix = torch.as_tensor(prefix).reshape(-1, 1, 1)
    in_prefix = (positions[None, :, None] < prefix) & (positions[None, None, :] < prefix)
    mask = (allowed[None] | in_prefix)[:, None]
    if key_mask is not None:
        mask = mask & key_mask.bool()[:, None, None, :]
    return mask


class PrefixLMFamily(CausalFamily):
    name = "prefixlm"
    aliases = ()
    description = "Prefix LM: a causal model that reads the first part of each block (and the prompt) bidirectionally."
    model_types = ()  # saved models are found through the lmctl_family key in config.json
    architectures = ()
    architecture_suffixes = ()

    @dataclass
    class Options(CausalFamily.Options):
        prefix_fraction: float = option(0.25, "share of each block read bidirectionally (not predicted)")

    def check_options(self, options):
        if not 0.0 <= options.prefix_fraction < 1.0:
            raise UsageError(f"prefix_fraction must be in [0, 1), got {options.prefix_fraction}")

    def make_collator(self, tokenizer, options):
        fraction = options.prefix_fraction

        @row_seeded  # draws nothing: evaluation collates whole batches per call
        def collate(input_ids, attention_mask, generator):
            row_generators(generator, len(input_ids))  # (unused: the prefix length is fixed)
            batch = next_token_batch(input_ids, attention_mask)
            length = batch["input_ids"].shape[1]
            if attention_mask is None:
                real = [length] * len(input_ids)
            else:
                real = attention_mask.sum(dim=1).tolist()
            prefix = [int(fraction * n) for n in real]
            labels = batch["labels"].clone()
            for row, p in enumerate(prefix):
                labels[row, :p] = -100  # the prefix is context, never a target
            batch["labels"] = labels
            batch["attention_mask"] = prefix_mask(length, prefix, attention_mask)
            return batch

        return collate

    def evaluate(self, model, tokenizer, split, settings):
        # The loss-based default (the causal family's sliding windows know nothing of prefixes).
        return Family.evaluate(self, model, tokenizer, split, settings)

    def generate(self, model, tokenizer, prompts, settings, *, model_name="", on_text=None, on_result=None, warn=None):
        """Sample continuations with the prompt as the bidirectional prefix (no KV cache: the
        prefix's attention is not causal, so each step reads the whole sequence again)."""
        import time

        import torch

        from lmctl.kit.generation import DEFAULT_MAX_NEW_TOKENS, GenerationResult, encode_prompt

        if self.generate_kind != "text":
            return super().generate(model, tokenizer, prompts, settings, model_name=model_name, on_result=on_result, warn=warn)
        device = next(model.parameters()).device
        new_tokens = settings.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
        eos = tokenizer.eos_token_id
        generator = torch.Generator(device=device)
        generator.manual_seed(settings.seed if settings.seed is not None else torch.seed())
        results = []
        for prompt in prompts:
            prompt_ids = encode_prompt(tokenizer, prompt, bos_id=tokenizer.bos_token_id)
            for index in range(settings.num_return_sequences):
                ids = list(prompt_ids)
                began = time.perf_counter()
                reason = "length"
                for _ in range(new_tokens):
                    inputs = torch.tensor([ids], device=device)
                    mask = prefix_mask(len(ids), [len(prompt_ids)]).to(device)
                    with torch.inference_mode():
                        logits = model(input_ids=inputs, attention_mask=mask, use_cache=False).logits[0, -1].float()
                    if settings.greedy:
                        token = int(logits.argmax())
                    else:
                        logits = logits / (settings.temperature or 1.0)
                        if settings.top_k:
                            cutoff = logits.topk(min(settings.top_k, logits.numel())).values[-1]
                            logits = logits.masked_fill(logits < cutoff, float("-inf"))
                        token = int(torch.multinomial(logits.softmax(-1), 1, generator=generator))
                    if token == eos:
                        reason = "eos"
                        break
                    ids.append(token)
                new = ids[len(prompt_ids):]
                elapsed = max(time.perf_counter() - began, 1e-9)
                result = GenerationResult(
                    prompt=prompt, text=tokenizer.decode(new), tokens=len(new), finish_reason=reason,
                    tokens_per_s=len(new) / elapsed, model=model_name, prompt_tokens=len(prompt_ids), index=index,
                )
                results.append(result)
                if on_result is not None:
                    on_result(result)
        return results
