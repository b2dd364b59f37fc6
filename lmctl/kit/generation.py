"""Text generation and fill-mask on a loaded ``transformers`` model: the default behind
:meth:`lmctl.families.base.Family.generate`.

* :func:`generate_text` continues prompts (one ``model.generate`` call per batch of prompts: left
  padding, attention mask, KV cache on), so lmctl adds no per-token work beyond the optional
  streamer;
* :func:`fill_mask` predicts the tokens behind mask tokens.

No files, no CLI, no registry: :mod:`lmctl.workflows.generate` loads models and runs whole
``lmctl generate`` commands on top of this.  torch and transformers are imported inside the
functions.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from lmctl.errors import LmctlError, UsageError

DEFAULT_MAX_NEW_TOKENS = 50
DEFAULT_FILL_MASK_TOP_K = 5
DEFAULT_BATCH_SIZE = 16
# Literal mask spellings people type (BERT's and RoBERTa's); mapped to the model's own mask token.
MASK_LITERALS = ("[MASK]", "<mask>")
# Prompt tokens decoded together with the continuation so word-initial spaces come out right
# (SentencePiece drops the leading "▁" of a sequence decoded on its own).
_DECODE_CONTEXT_TOKENS = 8

Warn = Callable[[str], None]


def _library_warning(message: str) -> None:
    """Library callers get Python warnings; the CLI passes ``warn`` and prints its own lines."""
    warnings.warn(message, UserWarning, stacklevel=3)


# --- settings and results -------------------------------------------------------------------------


@dataclass
class GenerationSettings:
    """How to generate.  ``None`` means: the model's generation_config.json value, else lmctl's default.

    lmctl's defaults: sampling, temperature 1.0, top-k 50, top-p 1.0, 50 new tokens (at most half
    the model's context when the user did not ask for more), KV cache on.
    """

    max_new_tokens: int | None = None
    min_new_tokens: int | None = None
    temperature: float | None = None
    top_k: int | None = None
    """Sampling: keep the k most likely tokens (0 = no limit).  Fill-mask: candidates shown per mask."""
    top_p: float | None = None
    repetition_penalty: float | None = None
    num_return_sequences: int = 1
    greedy: bool = False
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    batch_size: int = DEFAULT_BATCH_SIZE
    truncate: bool = True
    """Prompts longer than the context: keep their end (with a warning) instead of refusing."""

    def validate(self) -> None:
        """Refuse impossible values with one line naming the flag."""
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise UsageError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if self.min_new_tokens is not None and self.min_new_tokens < 0:
            raise UsageError(f"--min-new-tokens must be 0 or more, got {self.min_new_tokens}")
        if self.temperature is not None and self.temperature < 0:
            raise UsageError(f"--temperature must be 0 or more (0 means greedy), got {self.temperature}")
        if self.top_k is not None and self.top_k < 0:
            raise UsageError(f"--top-k must be 0 or more, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise UsageError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty is not None and self.repetition_penalty <= 0:
            raise UsageError(f"--repetition-penalty must be above 0, got {self.repetition_penalty}")
        if self.num_return_sequences < 1:
            raise UsageError(f"--num-return-sequences must be at least 1, got {self.num_return_sequences}")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {self.batch_size}")
        if any(not s for s in self.stop):
            raise UsageError("--stop needs a non-empty string")
        if self.is_greedy and self.num_return_sequences > 1:
            raise UsageError(
                "--num-return-sequences above 1 needs sampling: greedy decoding gives one answer; drop --greedy"
            )

    @property
    def is_greedy(self) -> bool:
        return self.greedy or self.temperature == 0


@dataclass
class GenerationResult:
    """One generated continuation (``text`` excludes the prompt and any stop string)."""

    prompt: str
    text: str
    tokens: int
    """New tokens generated (the end-of-sequence token counts; padding after it does not)."""
    finish_reason: str
    """``"length"`` (max new tokens), ``"eos"`` (end-of-sequence token) or ``"stop"`` (a --stop string)."""
    tokens_per_s: float
    """This sequence's tokens over the wall time spent generating its batch."""
    model: str = ""
    prompt_tokens: int = 0
    index: int = 0
    """Which of the --num-return-sequences samples for this prompt (0-based)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MaskCandidate:
    token: str
    score: float
    token_id: int


@dataclass
class FillMaskResult:
    """The top candidates for each mask in one prompt, in the order the masks appear."""

    prompt: str
    masks: list[list[MaskCandidate]]
    model: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "prompt": self.prompt,
            "masks": [[asdict(c) for c in m] for m in self.masks],
        }


Result = GenerationResult | FillMaskResult


def context_length(model: Any) -> int | None:
    """Positions the model can read (None: no absolute limit, e.g. XLNet)."""
    from lmctl.kit.positions import max_positions

    return max_positions(model.config)


# --- text generation ------------------------------------------------------------------------------


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


def generation_kwargs(model: Any, tokenizer: Any, settings: GenerationSettings) -> dict[str, Any]:
    """Keyword arguments for ``model.generate``: explicit settings > generation_config.json > lmctl defaults."""
    config = model.generation_config

    def pick(name: str, value: Any, default: Any) -> Any:
        if value is not None:
            return value
        saved = getattr(config, name, None)
        return saved if saved is not None else default

    context = context_length(model)
    default_new = (
        DEFAULT_MAX_NEW_TOKENS if context is None else max(1, min(DEFAULT_MAX_NEW_TOKENS, context // 2))
    )
    kwargs: dict[str, Any] = {
        "max_new_tokens": pick("max_new_tokens", settings.max_new_tokens, default_new),
        "num_return_sequences": settings.num_return_sequences,
        "use_cache": True,
    }
    explicit_sampling = any(v is not None for v in (settings.top_k, settings.top_p)) or bool(
        settings.temperature
    )
    if settings.is_greedy:
        do_sample = False
    elif explicit_sampling or settings.num_return_sequences > 1:
        do_sample = True
    else:
        do_sample = bool(pick("do_sample", None, True))
    kwargs["do_sample"] = do_sample
    if do_sample:
        kwargs["temperature"] = pick("temperature", settings.temperature, 1.0)
        kwargs["top_k"] = pick("top_k", settings.top_k, 50)
        kwargs["top_p"] = pick("top_p", settings.top_p, 1.0)
    else:
        # Neutral values, so sampling settings saved in generation_config.json do not trigger
        # transformers' "set but unused" warnings under greedy decoding.
        kwargs.update(temperature=1.0, top_k=None, top_p=1.0)
    penalty = pick("repetition_penalty", settings.repetition_penalty, None)
    if penalty is not None:
        kwargs["repetition_penalty"] = penalty
    min_new = pick("min_new_tokens", settings.min_new_tokens, None)
    if min_new:
        kwargs["min_new_tokens"] = min_new
    eos = _as_list(config.eos_token_id) or _as_list(tokenizer.eos_token_id)
    if eos:
        kwargs["eos_token_id"] = eos if len(eos) > 1 else eos[0]
    pad = config.pad_token_id if config.pad_token_id is not None else tokenizer.pad_token_id
    if pad is None and eos:
        pad = eos[0]
    if pad is not None:
        kwargs["pad_token_id"] = pad
    if settings.stop:
        kwargs["stop_strings"] = list(settings.stop)
        kwargs["tokenizer"] = tokenizer  # StopStringCriteria needs it to map strings to tokens
    return kwargs


def split_added_specials(full: Sequence[int], content: Sequence[int]) -> tuple[list[int], list[int]]:
    """(tokens the tokenizer added before the text, tokens it added after), given both encodings."""
    full, content = list(full), list(content)
    for head in range(len(full) - len(content) + 1):
        if full[head : head + len(content)] == content:
            return full[:head], full[head + len(content) :]
    return [], []  # the text tokenised differently alone: treat nothing as added


def encode_prompt(tokenizer: Any, prompt: str, *, bos_id: int | None = None) -> list[int]:
    """Token ids for a continuation prompt.

    Of the special tokens the tokenizer adds around a text, only a leading BOS is kept (Llama's
    ``<s>``); EOS/SEP/CLS (BERT-style or XLNet's trailing ``<sep> <cls>``) would make the model
    continue after the end of a document.  Special tokens the user typed are kept.  An empty
    prompt becomes ``[BOS]`` (unconditional sampling).
    """
    content = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    full = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    return _continuation_ids(tokenizer, full, content, bos_id)


def _continuation_ids(
    tokenizer: Any, full: Sequence[int], content: Sequence[int], bos_id: int | None
) -> list[int]:
    head, _tail = split_added_specials(full, content)
    bos = bos_id if bos_id is not None else tokenizer.bos_token_id
    ids = [t for t in head if t == bos] + list(content)
    if not ids:
        start = bos if bos is not None else tokenizer.eos_token_id
        if start is None:
            raise UsageError("empty prompt: this model has no BOS or EOS token to start from; give some text")
        ids = [int(start)]
    return ids


def sliding_step(context: int, max_new_tokens: int) -> int:
    """New tokens per ``generate`` call when the text outgrows the context (half a window at most)."""
    return max(1, min(max_new_tokens, context // 2))


def warn_sliding_window(prompts: Sequence[Sequence[int]], *, context: int | None, max_new_tokens: int, warn: Warn) -> None:
    """Say once when the text (prompts as :func:`fit_prompt` left them) will outgrow the model's
    positions: it is then generated in a sliding window (see :func:`_generate_rows`), so later
    tokens no longer see the beginning."""
    if context is None or not prompts:
        return
    longest = max(len(ids) for ids in prompts)
    if longest + max_new_tokens <= context:
        return
    step = sliding_step(context, max_new_tokens)
    warn(
        f"--max-new-tokens {max_new_tokens} runs past the model's {context} positions: the text is generated in a "
        f"sliding window, {step} tokens at a time, each step reading only the latest {context - step} tokens "
        "(--no-truncate refuses instead)"
    )


def fit_prompt(
    ids: list[int], *, context: int | None, max_new_tokens: int, truncate: bool, number: int, warn: Warn
) -> list[int]:
    """Make the prompt fit the model's context, cutting its beginning when it must.

    When prompt and new tokens fit, nothing changes.  Otherwise (unless ``truncate`` is off,
    which refuses) the prompt keeps its last ``context - step`` tokens and generation proceeds
    in steps of ``step`` tokens, each step reading the latest tokens (see :func:`sliding_step`).
    """
    if context is None or len(ids) + max_new_tokens <= context:
        return ids
    if not truncate:
        raise UsageError(
            f"prompt {number} has {len(ids)} tokens and --max-new-tokens is {max_new_tokens}, more than the model's "
            f"{context}-token context; shorten the prompt, lower --max-new-tokens, or drop --no-truncate"
        )
    keep = context - sliding_step(context, max_new_tokens)
    if len(ids) <= keep:
        return ids
    warn(
        f"prompt {number} has {len(ids)} tokens, but the model reads at most {context} and --max-new-tokens is "
        f"{max_new_tokens}: only its last {keep} tokens are used (--no-truncate refuses instead)"
    )
    return ids[-keep:]


def _generate_rows(
    model: Any,
    input_ids: Any,
    attention_mask: Any,
    kwargs: dict[str, Any],
    *,
    context: int | None,
    streamer: TextDeltaStreamer | None,
) -> list[list[int]]:
    """New token ids per output row: one ``generate`` call, or a sliding window past the context.

    The window, like nanoGPT's ``sample.py``, keeps the latest tokens: each call reads the last
    ``context - step`` tokens (prompt and text so far) and adds ``step`` more, with the KV cache
    on within the call.  Position ids restart at the window's first token.
    """
    import torch

    device = next(model.parameters()).device
    width, total = input_ids.shape[1], kwargs["max_new_tokens"]
    if context is None or width + total <= context:
        with torch.inference_mode():
            output = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                streamer=streamer,
                **kwargs,
            )
        return output[:, width:].tolist()
    step_size = sliding_step(context, total)
    seq, mask = input_ids, attention_mask
    generated = 0
    min_new = kwargs.get("min_new_tokens") or 0
    while generated < total:
        step = min(step_size, total - generated)
        window = context - step
        call = dict(
            kwargs, max_new_tokens=step, min_new_tokens=min(step, max(0, min_new - generated)) or None
        )
        if generated:
            call["num_return_sequences"] = 1  # the rows were already expanded by the first call
        if streamer is not None:
            streamer.skip_prompt = True  # each call hands the streamer its input first
        inputs, inputs_mask = seq[:, -window:], mask[:, -window:]
        with torch.inference_mode():
            output = model.generate(
                input_ids=inputs.to(device), attention_mask=inputs_mask.to(device), streamer=streamer, **call
            ).cpu()
        produced = output[:, inputs.shape[1] :]
        if not generated and produced.shape[0] != seq.shape[0]:  # num_return_sequences > 1
            repeat = produced.shape[0] // seq.shape[0]
            seq, mask = seq.repeat_interleave(repeat, 0), mask.repeat_interleave(repeat, 0)
        seq = torch.cat([seq, produced], dim=1)
        mask = torch.cat([mask, torch.ones_like(produced)], dim=1)
        generated += produced.shape[1]
        if produced.shape[1] < step:  # generate() stopped early: every row hit EOS or a stop string
            break
    return seq[:, width:].tolist()


def text_decoder(tokenizer: Any) -> Callable[[Sequence[int]], str]:
    """``ids -> text`` without special tokens, as ``tokenizer.decode`` gives it, but quicker.

    For a plain fast tokenizer that needs no space clean-up this calls the Rust decoder directly:
    ``tokenizer.decode`` spends most of its time type-checking the ids, which matters when the
    streamer decodes after every token.
    """
    from transformers import PreTrainedTokenizerFast

    backend = getattr(tokenizer, "backend_tokenizer", None)
    plain = (
        type(tokenizer)._decode is PreTrainedTokenizerFast._decode if hasattr(tokenizer, "_decode") else False
    )
    if backend is not None and plain and not getattr(tokenizer, "clean_up_tokenization_spaces", False):
        return lambda ids: backend.decode(list(ids), skip_special_tokens=True)
    return lambda ids: tokenizer.decode(list(ids), skip_special_tokens=True)


def continuation_text(tokenizer: Any, prompt_ids: Sequence[int], new_ids: Sequence[int]) -> str:
    """Decode the new tokens as they continue the prompt (spaces and merges at the seam right)."""
    decode = text_decoder(tokenizer)
    context = list(prompt_ids[-_DECODE_CONTEXT_TOKENS:])
    prefix = decode(context)
    full = decode(context + list(new_ids))
    if full.startswith(prefix):
        return full[len(prefix) :]
    return decode(new_ids)


def find_stop(text: str, stops: Sequence[str]) -> int:
    """Index of the earliest stop string in ``text``, or -1."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else -1


def _stop_prefix_len(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of ``text`` that could be the start of a stop string."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:n]):
                best = n
                break
    return best


def finish_sequence(
    tokenizer: Any, prompt_ids: Sequence[int], new_ids: Sequence[int], eos_ids: set[int], stops: Sequence[str]
) -> tuple[str, int, str]:
    """(text, tokens generated, finish reason) for one generated row (trailing padding ignored)."""
    ids = list(new_ids)
    end = next((i for i, t in enumerate(ids) if t in eos_ids), None)
    body = ids if end is None else ids[:end]
    text = continuation_text(tokenizer, prompt_ids, body)
    cut = find_stop(text, stops) if stops else -1
    if cut >= 0:
        # The fewest tokens whose text holds the stop string (containment only grows with n).
        low, high = 1, len(body)
        while low < high:
            mid = (low + high) // 2
            if find_stop(continuation_text(tokenizer, prompt_ids, body[:mid]), stops) >= 0:
                high = mid
            else:
                low = mid + 1
        return text[:cut], low, "stop"
    if end is not None:
        return text, end + 1, "eos"
    return text, len(ids), "length"


class TextDeltaStreamer:
    """A ``generate`` streamer that hands each newly decoded piece of text to ``on_text``.

    It decodes as :func:`finish_sequence` does (with a few tokens of context before the new
    ones), holds back an incomplete UTF-8 character and anything that may be the start of a stop
    string, and stops at EOS or a stop string, so the streamed text is a prefix of the final
    ``text``; :meth:`flush` writes the rest.  To keep the cost per token constant, text older than
    ``SEGMENT`` tokens is settled and only the newer tokens (plus context) are decoded again.
    """

    SEGMENT = 16

    def __init__(
        self,
        tokenizer: Any,
        prompt_ids: Sequence[int],
        eos_ids: set[int],
        stops: Sequence[str],
        on_text: Callable[[str], None],
    ):
        self.tokenizer = tokenizer
        self.prompt_ids = list(prompt_ids)
        self.eos_ids = eos_ids
        self.stops = list(stops)
        self.on_text = on_text
        self.decode = text_decoder(tokenizer)
        self.ids: list[int] = []
        self.emitted = ""
        self.skip_prompt = True
        self.done = False
        self._settle(0, "")

    def _settle(self, upto: int, text: str) -> None:
        """Take the text of ``ids[:upto]`` as final; later tokens decode after its last tokens."""
        self.settled_ids, self.settled_text = upto, text
        self.context = (self.prompt_ids + self.ids[:upto])[-_DECODE_CONTEXT_TOKENS:]
        self.context_text = self.decode(self.context)

    def _text(self) -> str:
        pending = self.ids[self.settled_ids :]
        full = self.decode(self.context + pending)
        if full.startswith(self.context_text):
            return self.settled_text + full[len(self.context_text) :]
        return self.settled_text + self.decode(pending)

    def put(self, value: Any) -> None:
        if self.skip_prompt:  # generate() first passes the prompt itself
            self.skip_prompt = False
            return
        if self.done:
            return
        for token in value.reshape(-1).tolist():
            if token in self.eos_ids:
                self.done = True
                break
            self.ids.append(token)
        text = self._text()
        if len(self.ids) - self.settled_ids >= self.SEGMENT and not text.endswith("\ufffd"):
            self._settle(len(self.ids), text)
        cut = find_stop(text, self.stops) if self.stops else -1
        if cut >= 0:
            text, self.done = text[:cut], True
        else:
            text = text.rstrip("\ufffd")  # a multi-byte character still being generated
            if self.stops:
                text = text[: len(text) - _stop_prefix_len(text, self.stops)]
        self._emit(text)

    def end(self) -> None:
        pass

    def flush(self, final_text: str) -> None:
        """Write what is still held back of the final text."""
        if not final_text.startswith(self.emitted):
            # Decoding in pieces disagreed with decoding the whole (should not happen with the
            # usual decoders): write what differs rather than lose text.
            common = len(os.path.commonprefix([final_text, self.emitted]))
            self.on_text(final_text[common:])
            self.emitted = final_text
            return
        self._emit(final_text)

    def _emit(self, text: str) -> None:
        if text.startswith(self.emitted) and len(text) > len(self.emitted):
            self.on_text(text[len(self.emitted) :])
            self.emitted = text


def _batches(items: Sequence[Any], size: int) -> Iterator[tuple[int, Sequence[Any]]]:
    for start in range(0, len(items), size):
        yield start, items[start : start + size]


def plan_batches(lengths: Sequence[int], size: int, *, padding: bool) -> list[list[int]]:
    """Prompt indices per ``model.generate`` call: consecutive chunks, or equal-length groups.

    Without padding (models whose ``generate`` ignores the attention mask), only prompts with the
    same number of tokens share a batch, so no prompt ever sees padding.
    """
    order = list(range(len(lengths)))
    if padding:
        return [order[i : i + size] for i in range(0, len(order), size)]
    groups: dict[int, list[int]] = {}
    for index in order:
        groups.setdefault(lengths[index], []).append(index)
    return [group[i : i + size] for group in groups.values() for i in range(0, len(group), size)]


def encode_prompts(tokenizer: Any, prompts: Sequence[str], *, bos_id: int | None = None) -> list[list[int]]:
    """:func:`encode_prompt` for many prompts, with two batched tokenizer calls instead of two each."""
    if len(prompts) < 2:
        return [encode_prompt(tokenizer, p, bos_id=bos_id) for p in prompts]
    contents = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    fulls = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    return [
        _continuation_ids(tokenizer, full, content, bos_id)
        for full, content in zip(fulls, contents, strict=True)
    ]


def generate_text(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    settings: GenerationSettings | None = None,
    *,
    model_name: str = "",
    on_text: Callable[[str], None] | None = None,
    on_result: Callable[[GenerationResult], None] | None = None,
    padding: bool | None = None,
    warn: Warn = _library_warning,
) -> list[GenerationResult]:
    """Continue each prompt; ``settings.num_return_sequences`` results per prompt, prompt by prompt.

    Prompts go through ``model.generate`` ``settings.batch_size`` at a time, left-padded with an
    attention mask (``padding`` None asks the model's family whether its ``generate`` supports
    that; when not, only equal-length prompts are batched together).  With one prompt and one
    sequence, ``on_text`` receives the text as it is generated.  ``on_result`` gets each result,
    in prompt order, as soon as it and those before it are done.  With a seed, the same call
    gives the same results.
    """
    import torch

    settings = settings or GenerationSettings()
    settings.validate()
    if not prompts:
        return []
    kwargs = generation_kwargs(model, tokenizer, settings)
    eos_ids = set(_as_list(kwargs.get("eos_token_id")))
    pad_id = kwargs.get("pad_token_id", 0)
    context = context_length(model)
    bos_id = model.generation_config.bos_token_id
    bos_id = bos_id if isinstance(bos_id, int) else tokenizer.bos_token_id
    encoded = [
        fit_prompt(
            ids,
            context=context,
            max_new_tokens=kwargs["max_new_tokens"],
            truncate=settings.truncate,
            number=number,
            warn=warn,
        )
        for number, ids in enumerate(encode_prompts(tokenizer, prompts, bos_id=bos_id), start=1)
    ]
    warn_sliding_window(encoded, context=context, max_new_tokens=kwargs["max_new_tokens"], warn=warn)
    if padding is None:
        padding = True
    if settings.seed is not None:
        # Sampling draws from the global generator of the model's device.
        if next(model.parameters()).device.type == "cpu":
            torch.default_generator.manual_seed(
                settings.seed
            )  # torch.manual_seed also seeds CUDA lazily: slower
        else:
            torch.manual_seed(settings.seed)
    n = settings.num_return_sequences
    done: dict[int, list[GenerationResult]] = {}
    results: list[GenerationResult] = []
    for batch in plan_batches([len(ids) for ids in encoded], settings.batch_size, padding=padding):
        width = max(len(encoded[i]) for i in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, index in enumerate(batch):  # left padding: every prompt ends where generation starts
            ids = encoded[index]
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids) :] = 1
        streamer = None
        if on_text is not None and len(encoded) == 1 and n == 1:
            streamer = TextDeltaStreamer(tokenizer, encoded[0], eos_ids, settings.stop, on_text)
        began = time.perf_counter()
        rows = _generate_rows(model, input_ids, attention_mask, kwargs, context=context, streamer=streamer)
        elapsed = max(time.perf_counter() - began, 1e-9)
        for row, new_ids in enumerate(rows):
            index = batch[row // n]  # generate() returns the n samples of a prompt next to each other
            text, tokens, reason = finish_sequence(tokenizer, encoded[index], new_ids, eos_ids, settings.stop)
            if streamer is not None:
                streamer.flush(text)
            done.setdefault(index, []).append(
                GenerationResult(
                    prompt=prompts[index],
                    text=text,
                    tokens=tokens,
                    finish_reason=reason,
                    tokens_per_s=tokens / elapsed,
                    model=model_name,
                    prompt_tokens=len(encoded[index]),
                    index=row % n,
                )
            )
        while len(results) // n in done:  # hand out results in prompt order
            for result in done.pop(len(results) // n):
                results.append(result)
                if on_result is not None:
                    on_result(result)
    return results


# --- fill-mask ------------------------------------------------------------------------------------


def with_mask_token(prompt: str, mask_token: str) -> str:
    """Map the literal ``[MASK]``/``<mask>`` spellings to the model's own mask token."""
    for literal in MASK_LITERALS:
        if literal != mask_token:
            prompt = prompt.replace(literal, mask_token)
    return prompt


def _encode_masked(
    tokenizer: Any, prompt: str, *, number: int, context: int | None, truncate: bool, warn: Warn
) -> list[int]:
    mask_token, mask_id = tokenizer.mask_token, tokenizer.mask_token_id
    text = with_mask_token(prompt, mask_token)
    full = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    if mask_id not in full:
        raise UsageError(
            f"prompt {number} has no mask: write {mask_token} (or [MASK] / <mask>) where a token should be predicted"
        )
    if context is None or len(full) <= context:
        return full
    if not truncate:
        raise UsageError(
            f"prompt {number} has {len(full)} tokens, but the model reads at most {context}; shorten it or drop --no-truncate"
        )
    # Keep the special tokens around the text ([CLS] ... [SEP]) and cut the text from the left.
    content = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    head, tail = split_added_specials(full, content)
    keep = context - len(head) - len(tail)
    ids = head + content[-keep:] + tail
    if mask_id not in ids:
        raise UsageError(
            f"prompt {number} has {len(full)} tokens and the model reads at most {context}: the mask falls in the "
            "part cut from the left; move it nearer the end or shorten the prompt"
        )
    warn(
        f"prompt {number} has {len(full)} tokens, but the model reads at most {context}: only its end is used (--no-truncate refuses instead)"
    )
    return ids


def fill_mask(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    top_k: int = DEFAULT_FILL_MASK_TOP_K,
    *,
    model_name: str = "",
    batch_size: int = DEFAULT_BATCH_SIZE,
    truncate: bool = True,
    warn: Warn = _library_warning,
) -> list[FillMaskResult]:
    """The ``top_k`` most likely tokens, with probabilities, for every mask in every prompt."""
    import torch

    if tokenizer.mask_token_id is None:
        raise LmctlError(
            f"the tokenizer of {model_name or 'this model'} has no mask token, so it cannot fill masks"
        )
    if top_k < 1:
        raise UsageError(f"--top-k must be at least 1 for fill-mask, got {top_k}")
    context = context_length(model)
    encoded = [
        _encode_masked(tokenizer, p, number=i, context=context, truncate=truncate, warn=warn)
        for i, p in enumerate(prompts, start=1)
    ]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    k = min(top_k, model.config.vocab_size)
    results: list[FillMaskResult] = []
    for start, batch in _batches(encoded, batch_size):
        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        with torch.inference_mode():
            logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
        is_mask = input_ids.to(device) == tokenizer.mask_token_id
        probs = logits[is_mask].float().softmax(dim=-1)
        scores, ids = probs.topk(k, dim=-1)
        scores, ids = scores.tolist(), ids.tolist()
        counts = is_mask.sum(dim=1).tolist()
        offset = 0
        for row, count in enumerate(counts):
            masks = []
            for m in range(offset, offset + count):
                masks.append(
                    [
                        MaskCandidate(token=_token_text(tokenizer, t), score=s, token_id=t)
                        for t, s in zip(ids[m], scores[m], strict=True)
                    ]
                )
            offset += count
            results.append(FillMaskResult(prompt=prompts[start + row], masks=masks, model=model_name))
    return results


def _token_text(tokenizer: Any, token_id: int) -> str:
    """A candidate as text, the way the tokenizer decodes it alone (WordPiece keeps ``##`` on
    word continuations, which tells them apart from whole words)."""
    text = tokenizer.decode([token_id], skip_special_tokens=False).strip()
    return text or tokenizer.convert_ids_to_tokens(token_id)
