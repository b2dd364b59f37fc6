"""Sampling text from causal/permuted models and filling masks with masked/ELECTRA models.

The library behind ``lmctl generate``.  Three layers, each usable on its own:

* :func:`generate_text` and :func:`fill_mask` work on a loaded ``transformers`` model and
  tokenizer (no files, no CLI);
* :func:`load_model` turns ``--model DIR_OR_NAME`` into a :class:`LoadedModel` (family from
  config.json, device, precision);
* :func:`generate` runs a whole :class:`GenerateConfig` (several models, same prompts and
  settings) and is what the command line calls.

Text generation is one ``model.generate`` call per batch of prompts (left padding, attention
mask, KV cache on), so lmctl adds no per-token work beyond the optional streamer.

torch and transformers are imported inside the functions: ``lmctl --help`` must stay instant.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lmctl.core.device import pick_device, pick_dtype
from lmctl.core.quiet import quiet_libraries
from lmctl.errors import LmctlError, UsageError
from lmctl.kit.generation import (
    DEFAULT_BATCH_SIZE as DEFAULT_BATCH_SIZE,
)
from lmctl.kit.generation import (
    DEFAULT_FILL_MASK_TOP_K as DEFAULT_FILL_MASK_TOP_K,
)

# The text and fill-mask code moved to lmctl.kit.generation (0.2; families call it); its names stay importable here.
from lmctl.kit.generation import (
    DEFAULT_MAX_NEW_TOKENS as DEFAULT_MAX_NEW_TOKENS,
)
from lmctl.kit.generation import (
    MASK_LITERALS as MASK_LITERALS,
)
from lmctl.kit.generation import (
    FillMaskResult as FillMaskResult,
)
from lmctl.kit.generation import (
    GenerationResult as GenerationResult,
)
from lmctl.kit.generation import (
    GenerationSettings as GenerationSettings,
)
from lmctl.kit.generation import (
    MaskCandidate as MaskCandidate,
)
from lmctl.kit.generation import (
    Result as Result,
)
from lmctl.kit.generation import (
    TextDeltaStreamer as TextDeltaStreamer,
)
from lmctl.kit.generation import (
    Warn as Warn,
)
from lmctl.kit.generation import (
    _library_warning as _library_warning,
)
from lmctl.kit.generation import (
    context_length as context_length,
)
from lmctl.kit.generation import (
    continuation_text as continuation_text,
)
from lmctl.kit.generation import (
    encode_prompt as encode_prompt,
)
from lmctl.kit.generation import (
    encode_prompts as encode_prompts,
)
from lmctl.kit.generation import (
    fill_mask as fill_mask,
)
from lmctl.kit.generation import (
    find_stop as find_stop,
)
from lmctl.kit.generation import (
    finish_sequence as finish_sequence,
)
from lmctl.kit.generation import (
    fit_prompt as fit_prompt,
)
from lmctl.kit.generation import generate_text as _generate_text
from lmctl.kit.generation import (
    generation_kwargs as generation_kwargs,
)
from lmctl.kit.generation import (
    plan_batches as plan_batches,
)
from lmctl.kit.generation import (
    sliding_step as sliding_step,
)
from lmctl.kit.generation import (
    split_added_specials as split_added_specials,
)
from lmctl.kit.generation import (
    text_decoder as text_decoder,
)
from lmctl.kit.generation import (
    warn_sliding_window as warn_sliding_window,
)
from lmctl.kit.generation import (
    with_mask_token as with_mask_token,
)

# --- loading --------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    """A model ready for :func:`run_prompts`: what ``--model`` named, resolved and loaded once."""

    name: str
    family: Any
    model: Any
    tokenizer: Any
    kind: str  # "text" or "fill-mask"
    device: str


def load_model(
    name: str,
    *,
    family: str | None = None,
    trust_remote_code: bool = False,
    precision: str = "auto",
    device: str = "auto",
) -> LoadedModel:
    """Load ``--model`` for generation: the family from config.json, the family's inference model.

    ELECTRA directories load their generator (the part with the MLM head) for fill-mask.
    """
    from lmctl.core.hub import check_tokenizer_matches, load_tokenizer
    from lmctl.plugins.registry import resolve_family

    quiet_libraries()
    fam = resolve_family(name, family=family, trust_remote_code=trust_remote_code)
    if fam.generate_kind not in ("text", "fill-mask"):
        raise UsageError(
            f"family '{fam.name}' does not support generate (its generate kind is {fam.generate_kind!r})"
        )
    target = pick_device(device)
    dtype = pick_dtype(precision, target)
    model = fam.load_for_inference(name, trust_remote_code=trust_remote_code)
    tokenizer = load_tokenizer(name, trust_remote_code=trust_remote_code)
    check_tokenizer_matches(tokenizer, model)
    model.to(device=target, dtype=dtype)
    model.eval()
    return LoadedModel(
        name=name, family=fam, model=model, tokenizer=tokenizer, kind=fam.generate_kind, device=target
    )


def family_pads_batches(model: Any) -> bool:
    """Whether the family of ``model`` allows left-padded generation batches (True if unknown)."""
    from lmctl.plugins.registry import FAMILY_CONFIG_KEY, family_for_config

    config = model.config
    # Only the keys family_for_config reads: config.to_dict() costs more than the lookup.
    keys = {
        "architectures": getattr(config, "architectures", None),
        "model_type": getattr(config, "model_type", None),
        FAMILY_CONFIG_KEY: getattr(config, FAMILY_CONFIG_KEY, None),
    }
    try:
        return bool(family_for_config(keys).generate_with_padding)
    except LmctlError:
        return True


def generate_text(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    settings: GenerationSettings | None = None,
    *,
    padding: bool | None = None,
    **kwargs: Any,
) -> list[GenerationResult]:
    """:func:`lmctl.kit.generation.generate_text`, with ``padding`` None asking the model's family
    (from its config) whether its ``generate`` honours the attention mask."""
    if padding is None:
        padding = family_pads_batches(model)
    return _generate_text(model, tokenizer, prompts, settings, padding=padding, **kwargs)


# --- whole runs -----------------------------------------------------------------------------------


@dataclass
class GenerateConfig:
    """Everything ``lmctl generate`` was asked for."""

    models: list[str]
    prompts: list[str] = field(default_factory=list)
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    family: str | None = None
    trust_remote_code: bool = False
    precision: str = "auto"
    device: str = "auto"
    offline: bool = False


TEXT_ONLY_SETTINGS = ("max_new_tokens", "min_new_tokens", "temperature", "top_p", "repetition_penalty")


def run_prompts(
    loaded: LoadedModel,
    prompts: Sequence[str],
    settings: GenerationSettings,
    *,
    on_text: Callable[[str], None] | None = None,
    on_result: Callable[[Result], None] | None = None,
    warn: Warn = _library_warning,
) -> list[Result]:
    """Generate or fill masks for ``prompts`` with one loaded model: its family decides how
    (:meth:`lmctl.families.base.Family.generate`)."""
    return list(
        loaded.family.generate(
            loaded.model,
            loaded.tokenizer,
            prompts,
            settings,
            model_name=loaded.name,
            on_text=on_text,
            on_result=on_result,
            warn=warn,
        )
    )


def ignored_settings(settings: GenerationSettings, kind: str) -> list[str]:
    """Flags that were set but mean nothing for ``kind`` (to warn about, not to fail on)."""
    if kind != "fill-mask":
        return []
    flags = [
        f"--{name.replace('_', '-')}" for name in TEXT_ONLY_SETTINGS if getattr(settings, name) is not None
    ]
    if settings.greedy:
        flags.append("--greedy")
    if settings.stop:
        flags.append("--stop")
    if settings.num_return_sequences != 1:
        flags.append("--num-return-sequences")
    return flags


def load_models(config: GenerateConfig) -> Iterable[LoadedModel]:
    """Load each ``--model`` in turn (one at a time, so comparing large models needs one in memory).

    Every model's family is resolved first (config.json only), so a run that mixes text and
    fill-mask models, or names a directory that is not a model, fails before any work is done.
    """
    from lmctl.core.hub import apply_offline
    from lmctl.plugins.registry import resolve_family

    if not config.models:
        raise UsageError("pass --model DIR_OR_NAME (a directory written by lmctl train, or a Hub id)")
    apply_offline(config.offline)
    quiet_libraries()  # before the first Hub request: its retry warnings are noise next to the error line
    kinds: dict[str, str] = {}
    for name in config.models:
        kind = resolve_family(
            name, family=config.family, trust_remote_code=config.trust_remote_code
        ).generate_kind
        if kinds and kind not in kinds.values():
            first, first_kind = next(iter(kinds.items()))
            raise UsageError(
                f"--model {name} is a {kind} model but --model {first} is a {first_kind} model; "
                "compare models of one kind at a time"
            )
        kinds[name] = kind
    for name in config.models:
        yield load_model(
            name,
            family=config.family,
            trust_remote_code=config.trust_remote_code,
            precision=config.precision,
            device=config.device,
        )


@dataclass
class ModelRun:
    """What :func:`generate` reports after each model: its results and timings."""

    name: str
    kind: str
    results: list[Result]
    seconds: float
    load_seconds: float


def generate(
    config: GenerateConfig,
    *,
    on_text: Callable[[str], None] | None = None,
    on_result: Callable[[Result], None] | None = None,
    on_model_done: Callable[[ModelRun], None] | None = None,
    warn: Warn = _library_warning,
) -> list[Result]:
    """Run every model on the same prompts with the same settings; results model by model.

    Models load one at a time (each freed before the next).  Each model starts from the same
    seed, so a model's results do not depend on the others.  Models of different kinds (text and
    fill-mask) cannot be mixed in one run.  ``on_text`` streams the text when there is one model,
    one prompt and one sequence.
    """
    config.settings.validate()
    if not config.prompts:
        raise UsageError(
            "no prompt given: pass PROMPT, --prompts-file FILE, or - to read the prompt from stdin"
        )
    single = (
        len(config.models) == 1 and len(config.prompts) == 1 and config.settings.num_return_sequences == 1
    )
    results: list[Result] = []
    kind = None
    began = time.perf_counter()
    for loaded in load_models(config):
        load_seconds = time.perf_counter() - began
        if kind is None:  # load_models() already refused a mix of kinds
            for flag in ignored_settings(config.settings, loaded.kind):
                warn(f"{flag} does not apply to fill-mask models; ignored")
        kind = loaded.kind
        started = time.perf_counter()
        model_results = run_prompts(
            loaded,
            config.prompts,
            config.settings,
            on_text=on_text if single else None,
            on_result=on_result,
            warn=warn,
        )
        seconds = time.perf_counter() - started
        results.extend(model_results)
        if on_model_done is not None:
            on_model_done(ModelRun(loaded.name, loaded.kind, model_results, seconds, load_seconds))
        del loaded  # free this model before loading the next
        began = time.perf_counter()
    return results
