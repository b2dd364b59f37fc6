"""The :class:`Family` base class: what an architecture family tells lmctl.

A family bundles everything that differs between ways of training a language model: which
``transformers`` models it claims, how to load or build one, how to turn token blocks into a
batch (the collator), the training loss, evaluation, what ``generate`` means and how it saves.
Subclass it in a plugin and register an instance with the ``register_families`` hook.

This module must stay light: torch and transformers are imported inside the methods.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from lmctl.core.hub import read_config_json as read_config_json  # documented here for plugins
from lmctl.errors import UsageError
from lmctl.kit.masking import mask_tokens as mask_tokens  # documented here for plugins
from lmctl.kit.positions import POSITION_KEYS, ROBERTA_LIKE
from lmctl.kit.positions import max_positions as max_positions

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from lmctl.core.prepared import PreparedSplit
    from lmctl.kit.generation import GenerationSettings
    from lmctl.kit.scoring import EvalSettings


def option(default: Any = None, help: str = "", *, evaluation: bool = False, default_factory: Any = None) -> Any:
    """Declare one field of a family's :class:`Options`: its default, one line of help, and whether
    it is an evaluation setting (``evaluation=True``: read by ``evaluate`` only, so changing it does
    not change training and it stays out of the resume fingerprint)."""
    metadata = {"help": help, "evaluation": evaluation}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class Options:
    """A family's settings (objective and evaluation).  Each family declares its own subclass::

        class PrefixFamily(CausalFamily):
            @dataclass
            class Options(CausalFamily.Options):
                prefix_fraction: float = option(0.5, "share of each block the model sees bidirectionally")

    ``lmctl train/eval --family-option KEY=VALUE`` (and a ``[family_options]`` table in config
    files) set them; unknown keys are refused with a line listing the family's options.  Training
    settings enter the resume fingerprint and run.json; see :func:`parse_options`.
    """

    @classmethod
    def describe(cls) -> list[dict[str, Any]]:
        """Each option: name, type, default, help and whether it is an evaluation setting."""
        out = []
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            out.append(
                {
                    "name": f.name,
                    "type": _type_name(f.type),
                    "default": default,
                    "help": f.metadata.get("help", ""),
                    "evaluation": bool(f.metadata.get("evaluation", False)),
                }
            )
        return out

    def training_values(self) -> dict[str, Any]:
        """The settings that shape training (for the resume fingerprint and run.json)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.metadata.get("evaluation")}

    def values(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


FamilyOptions = Options
"""The name this base class had before lmctl 0.2 (then one fixed list of shared settings)."""


def _type_name(annotation: Any) -> str:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    return text.replace("typing.", "")


_TRUE = ("1", "true", "yes", "on", "y", "t")
_FALSE = ("0", "false", "no", "off", "n", "f")


def _coerce(family_name: str, key: str, type_name: str, value: Any) -> Any:
    """A command-line string (or a config-file value) as the option's type; one clear error if not."""
    base = type_name.split("|")[0].strip()
    if not isinstance(value, str):
        if base == "float" and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value
    raw = value.strip()
    try:
        if base == "bool":
            if raw.lower() in _TRUE:
                return True
            if raw.lower() in _FALSE:
                return False
            raise ValueError
        if base == "int":
            return int(raw)
        if base == "float":
            return float(raw)
        if base.startswith("dict"):
            if raw.startswith("{"):
                parsed = json.loads(raw)
                if not isinstance(parsed, dict):
                    raise ValueError
                return parsed
            return dict(parse_override(item) for item in raw.split(",") if item.strip())
    except (ValueError, UsageError, json.JSONDecodeError):
        raise UsageError(
            f"--family-option {key}={value}: the '{family_name}' family expects {base} for '{key}'"
        ) from None
    return raw


def option_items(items: list[str] | tuple[str, ...], flag: str = "--family-option") -> dict[str, str]:
    """``["KEY=VALUE", ...]`` from the command line as a dict (values stay strings until
    :func:`parse_options` reads them as the option's type)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{flag} expects KEY=VALUE, got {item!r}")
        out[key.strip()] = value
    return out


def parse_options(family: Family, values: dict[str, Any] | None = None) -> Options:
    """The family's :class:`Options` with ``values`` (strings from the command line, or typed values
    from a config file) applied; an unknown key is refused with one line listing the options."""
    defaults = family.default_options()
    fields = {f.name: f for f in dataclasses.fields(defaults)}
    kwargs: dict[str, Any] = {}
    for key, value in (values or {}).items():
        name = key.strip().replace("-", "_")
        if name not in fields:
            known = ", ".join(fields) or "none"
            raise UsageError(f"the '{family.name}' family has no option '{key}' (its options: {known})")
        kwargs[name] = _coerce(family.name, name, _type_name(fields[name].type), value)
    options = dataclasses.replace(defaults, **kwargs)
    family.check_options(options)
    return options


@dataclass
class LossOutput:
    """What :meth:`Family.compute_loss` returns.

    ``loss`` is the scalar to back-propagate (mean over ``tokens`` predicted tokens);
    ``metrics`` holds extra detached scalars to log (e.g. ELECTRA's generator loss), summed
    over a logging interval as ``value * tokens`` and divided back, so they are token-weighted.
    """

    loss: torch.Tensor
    tokens: torch.Tensor | int
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


Collator = Callable[..., dict]
"""``collate(input_ids: LongTensor[B, W], attention_mask: LongTensor[B, W] | None,
generator: torch.Generator) -> dict`` of model inputs, labels included (int64 ids; a mask of
int64 0/1).  Packed training rows come without a mask and ``W = block_size +``
:attr:`Family.block_lookahead`; line-by-line rows and evaluation blocks come with a mask and
``W = block_size``.  Take every random draw from ``generator``.  A collator marked with
:func:`row_seeded` also accepts a list of generators, one per row."""


def row_seeded(collate: Collator) -> Collator:
    """Mark a collator whose row ``i`` draws only from ``generator[i]`` when ``generator`` is a list
    (or that draws nothing), so evaluation collates a whole batch of blocks per call instead of
    one block per call, with the same results: each evaluation block has its own seeded
    generator whatever the batch size.  In training ``generator`` is one ``torch.Generator`` for
    the batch; :func:`row_generators` gives the per-row view of either::

        @row_seeded
        def collate(input_ids, attention_mask, generator):
            generators = row_generators(generator, len(input_ids))
            ...
    """
    from lmctl.kit.scoring import ROW_SEEDED

    setattr(collate, ROW_SEEDED, True)
    return collate


def row_generators(generator: Any, rows: int) -> list[Any]:
    """One generator per row: the list a :func:`row_seeded` collator got in evaluation, or the
    batch's single generator repeated (training)."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != rows:
            raise ValueError(f"{len(generator)} generators for {rows} rows")
        return list(generator)
    return [generator] * rows


def parse_override(item: str) -> tuple[str, Any]:
    """Parse one ``KEY=VALUE`` model-config override; VALUE is read as JSON when it can be."""
    if "=" not in item:
        raise UsageError(f"--model-config expects KEY=VALUE, got {item!r}")
    key, raw = item.split("=", 1)
    key = key.strip()
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        lowered = raw.strip().lower()
        value = {"true": True, "false": False, "none": None, "null": None}.get(lowered, raw)
    return key, value


def dropout_settings(config: Any, dropout: float) -> dict[str, float]:
    """Every dropout probability a transformers config exposes (names differ per model), set to ``dropout``."""
    return {
        key: dropout
        for key, value in config.to_dict().items()
        if isinstance(value, float) and (key.endswith("dropout") or key.endswith("pdrop") or key.endswith("dropout_prob"))
    }


class Family(ABC):
    """Base class for architecture families.  Subclass it and override what differs.

    Class attributes declare the family; methods do the work.  A family instance is stateless:
    objective settings arrive as an instance of its :attr:`Options`.
    """

    Options: ClassVar[type[Options]] = Options
    """The family's settings: a dataclass subclassing :class:`Options` (see there)."""
    lora: ClassVar[bool] = True
    """Whether ``--lora`` may wrap this family's model with peft adapters."""

    name: ClassVar[str] = ""
    """Unique name used by ``--family`` and shown by ``lmctl plugins list``."""
    aliases: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    model_types: ClassVar[tuple[str, ...]] = ()
    """``config.json`` ``model_type`` values this family claims (``--model some/dir`` picks it)."""
    architectures: ClassVar[tuple[str, ...]] = ()
    """``config.json`` ``architectures`` class names claimed; checked before ``model_types``."""
    architecture_suffixes: ClassVar[tuple[str, ...]] = ()
    """Fallback: claim any architecture class whose name ends with one of these."""
    scratch_architectures: ClassVar[tuple[str, ...]] = ()
    """``model_type`` names buildable with ``--from-scratch`` (the first is the default)."""
    auto_class: ClassVar[str] = "AutoModelForCausalLM"
    """The ``transformers`` Auto class that loads this family's saved model."""
    generate_kind: ClassVar[str] = "text"
    """``"text"`` (sample continuations) or ``"fill-mask"`` (predict masked tokens)."""
    generate_with_padding: ClassVar[bool] = True
    """Whether ``generate`` may left-pad prompts of different lengths into one batch (the model's
    ``generate`` honours the attention mask).  When False, only equal-length prompts share a batch."""
    pipeline_tag: ClassVar[str] = "text-generation"
    requires_even_block_size: ClassVar[bool] = False
    block_lookahead: ClassVar[int] = 0
    """Tokens a packed training row carries past ``--block-size``.  The collator receives rows of
    ``block_size + block_lookahead`` tokens (consecutive rows overlap by that much) and returns
    model inputs of ``block_size``.  ``causal`` sets 1: T inputs and the token after them give T
    next-token targets per block, as nanoGPT and LitGPT train, instead of T - 1."""
    tokenizer_kind: ClassVar[str] = "bytelevel-bpe"
    """Default tokenizer trainer for ``--from-scratch`` runs of this family."""
    loss_is_nll: ClassVar[bool] = True
    """Whether the training loss is a per-token NLL, so exp(loss) is a perplexity worth showing."""
    metric_names: ClassVar[tuple[str, ...]] = ()
    """Extra training metrics (beyond loss) that :meth:`compute_loss` reports."""
    tiny_config: ClassVar[dict[str, Any]] = {}
    """Config overrides for a tiny model of the first scratch architecture (2 layers, hidden 32),
    used by ``lmctl plugins check`` when :mod:`lmctl.core.presets` has no ``tiny`` preset for it."""

    # --- tokens ----------------------------------------------------------------------------------

    def special_tokens(self) -> dict[str, str]:
        """Special tokens a tokenizer trained for this family must have (``{"eos_token": ...}``)."""
        return {"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}

    def document_separator(self, tokenizer: Any) -> list[int]:
        """Token ids put before every document in packed data (BOS/EOS or SEP)."""
        for attr in ("eos_token_id", "sep_token_id", "bos_token_id"):
            token_id = getattr(tokenizer, attr, None)
            if token_id is not None:
                return [int(token_id)]
        return []

    # --- models ----------------------------------------------------------------------------------

    def auto_model_class(self) -> Any:
        import transformers

        return getattr(transformers, self.auto_class)

    def load_pretrained(self, name_or_path: str, *, trust_remote_code: bool = False, **kwargs: Any) -> Any:
        """Load pretrained weights (a local directory, or a hub id when online)."""
        from lmctl.core.hub import hub_call

        cls = self.auto_model_class()
        return hub_call(
            name_or_path,
            lambda: cls.from_pretrained(
                name_or_path, trust_remote_code=trust_remote_code, use_safetensors=None, **kwargs
            ),
        )

    def load_pretrained_empty(self, name_or_path: str, *, trust_remote_code: bool = False) -> Any | None:
        """The pretrained model's architecture on the meta device, without reading its weights (FSDP:
        only rank 0 reads them, the others receive their shards).  None when this family loads
        something :meth:`load_pretrained` does not describe; the weights are then read on every rank."""
        if type(self).load_pretrained is not Family.load_pretrained:
            return None
        import torch
        from transformers import AutoConfig

        from lmctl.core.hub import hub_call

        config = hub_call(name_or_path, lambda: AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code))
        with torch.device("meta"):
            return self.auto_model_class().from_config(config, trust_remote_code=trust_remote_code, dtype=torch.float32)

    def build_config(
        self,
        architecture: str,
        *,
        tokenizer: Any,
        block_size: int,
        overrides: dict[str, Any] | None = None,
        dropout: float | None = None,
    ) -> Any:
        """A ``transformers`` config for ``architecture`` from its class defaults plus overrides."""
        from transformers import AutoConfig

        if architecture not in self.scratch_architectures:
            choices = ", ".join(self.scratch_architectures)
            raise UsageError(
                f"family '{self.name}' cannot build '{architecture}' from scratch; choose one of: {choices}"
            )
        defaults = AutoConfig.for_model(architecture)
        # Collect every setting first and build the config once: transformers 5 configs validate
        # and derive fields (e.g. XLNet's d_head) at construction time.
        kwargs: dict[str, Any] = {"vocab_size": padded_vocab_size(len(tokenizer))}
        for key in POSITION_KEYS:
            current = getattr(defaults, key, None)
            if isinstance(current, int) and current > 0:  # XLNet reports -1: no position limit
                # RoBERTa-style position ids start after padding_idx, so they need pad_id + 1 more.
                extra = 0
                if architecture in ROBERTA_LIKE:
                    extra = (getattr(tokenizer, "pad_token_id", None) or 1) + 1
                kwargs[key] = block_size + extra
                break
        for attr in ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id"):
            value = getattr(tokenizer, attr, None)
            if value is not None and hasattr(defaults, attr):
                kwargs[attr] = int(value)
        if dropout is not None:
            kwargs.update(dropout_settings(defaults, dropout))
        for key, value in (overrides or {}).items():
            if not hasattr(defaults, key):
                raise UsageError(f"--model-config {key}=...: '{architecture}' configs have no field '{key}'")
            kwargs[key] = value
        try:
            config = AutoConfig.for_model(architecture, **kwargs)
        except (ValueError, TypeError) as exc:
            message = " ".join(str(exc).split())
            raise UsageError(f"invalid model config for '{architecture}': {message}") from None
        return config

    def model_from_config(self, config: Any) -> Any:
        cls = self.auto_model_class()
        return cls.from_config(config, attn_implementation=preferred_attention(config))

    def build_from_scratch(
        self,
        architecture: str,
        *,
        tokenizer: Any,
        block_size: int,
        overrides: dict[str, Any] | None = None,
        dropout: float | None = None,
        options: Options | None = None,
    ) -> Any:
        """A freshly initialised model of ``architecture`` sized for ``tokenizer``."""
        config = self.build_config(
            architecture, tokenizer=tokenizer, block_size=block_size, overrides=overrides, dropout=dropout
        )
        return self.model_from_config(config)

    def max_positions(self, model: Any) -> int | None:
        return max_positions(model.config)

    def check_block_size(self, block_size: int, model: Any | None = None) -> None:
        """Refuse block sizes the model cannot take (one clear line)."""
        if block_size < 2:
            raise UsageError(f"--block-size must be at least 2, got {block_size}")
        if self.requires_even_block_size and block_size % 2:
            raise UsageError(f"family '{self.name}' needs an even --block-size, got {block_size}")
        if model is not None:
            limit = self.max_positions(model)
            if limit is not None and block_size > limit:
                raise UsageError(
                    f"--block-size {block_size} is larger than the model allows ({limit} positions); "
                    f"use --block-size {limit} or less"
                )

    def check_options(self, options: Options) -> None:
        """Refuse option values the family cannot use (one clear line); the default accepts all."""
        return None

    def default_options(self) -> Options:
        return self.Options()

    # --- batches and loss ------------------------------------------------------------------------

    @abstractmethod
    def make_collator(self, tokenizer: Any, options: Options) -> Collator:
        """The function that turns token blocks into a model batch (labels included)."""

    @abstractmethod
    def compute_loss(self, model: Any, batch: dict, options: Options) -> LossOutput:
        """Forward pass and training loss for one batch from :meth:`make_collator`."""

    # --- evaluation ------------------------------------------------------------------------------

    def evaluate(self, model: Any, tokenizer: Any, split: PreparedSplit, settings: EvalSettings) -> dict[str, Any]:
        """Score ``model`` on a prepared split for ``lmctl eval`` and training evaluations.

        Called by :func:`lmctl.workflows.evaluate.evaluate_model` under ``torch.no_grad()`` with the model in
        eval mode.  Return at least ``loss`` (mean NLL per predicted token, in nats, summed over all
        batches and divided once) and ``tokens`` (predicted tokens counted); optionally
        ``text_nll`` (total NLL when every token of the text is scored exactly once: gives bits per
        byte and word perplexity), ``complete`` (False when ``settings.max_batches`` stopped early)
        and other float metrics.  Take every random choice from ``settings.seed`` so the same
        command gives the same number.  The default averages :meth:`compute_loss` over blocks,
        token-weighted, with the collator seeded per block: one call per batch for a collator
        marked :func:`row_seeded`, one call per block otherwise (the same results either way).
        """
        from lmctl.kit.scoring import evaluate_with_loss

        return evaluate_with_loss(self, model, tokenizer, split, settings)

    # --- generation ------------------------------------------------------------------------------

    def generate(
        self,
        model: Any,
        tokenizer: Any,
        prompts: Sequence[str],
        settings: GenerationSettings,
        *,
        model_name: str = "",
        on_text: Callable[[str], None] | None = None,
        on_result: Callable[[Any], None] | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> list[Any]:
        """What ``lmctl generate`` does with this family's model (loaded by :meth:`load_for_inference`,
        on its device, in eval mode): one result per prompt and sequence, in prompt order.

        Return :class:`lmctl.kit.generation.GenerationResult` objects when :attr:`generate_kind` is
        ``"text"`` and :class:`lmctl.kit.generation.FillMaskResult` objects for ``"fill-mask"``; call
        ``on_result(result)`` for each as soon as it is ready (in order), ``on_text(delta)`` with
        text as it is produced (only passed for one prompt and one sequence; optional to honour) and
        ``warn(line)`` for one-line warnings.  ``settings`` is a
        :class:`lmctl.kit.generation.GenerationSettings` (``None`` fields: the model's
        ``generation_config.json`` value, else lmctl's default); with ``settings.seed`` the same call
        must give the same results.  The default samples continuations with ``model.generate``
        (:func:`lmctl.kit.generation.generate_text`, left-padded batches when
        :attr:`generate_with_padding`) or fills masks (:func:`lmctl.kit.generation.fill_mask`).
        Override it when the objective changes what a prompt means, e.g. a prefix LM that reads the
        prompt bidirectionally.
        """
        from lmctl.kit.generation import DEFAULT_FILL_MASK_TOP_K, _library_warning, fill_mask, generate_text

        warn = warn or _library_warning
        if self.generate_kind == "fill-mask":
            results = fill_mask(
                model,
                tokenizer,
                prompts,
                settings.top_k or DEFAULT_FILL_MASK_TOP_K,
                model_name=model_name,
                batch_size=settings.batch_size,
                truncate=settings.truncate,
                warn=warn,
            )
            for result in results:
                if on_result is not None:
                    on_result(result)
            return list(results)
        return generate_text(
            model,
            tokenizer,
            prompts,
            settings,
            model_name=model_name,
            on_text=on_text,
            on_result=on_result,
            padding=self.generate_with_padding,
            warn=warn,
        )

    # --- saving ----------------------------------------------------------------------------------

    def save(self, model: Any, tokenizer: Any, out_dir: str | os.PathLike, *, safe_serialization: bool = True) -> None:
        """Write a plain Hugging Face model directory (config, safetensors weights, tokenizer).

        config.json records ``lmctl_family`` (transformers keeps unknown keys), so ``--model DIR``
        finds this family again even when several families share an architecture (plugins).
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if getattr(model, "config", None) is not None:
            model.config.lmctl_family = self.name
        model.save_pretrained(out, safe_serialization=safe_serialization)
        if tokenizer is not None:
            tokenizer.save_pretrained(out)

    def load_weights(self, model: Any, path: str | os.PathLike) -> None:
        """Load the weights of a directory written by :meth:`save` into ``model`` (resume)."""
        from lmctl.core.checkpoint import load_model_weights

        load_model_weights(model, Path(path))

    def check_evaluation_model(self, name_or_path: str) -> None:
        """Refuse, before loading, a saved model that ``lmctl eval`` cannot score (one clear line)."""
        return None

    def load_for_inference(self, path: str, *, trust_remote_code: bool = False) -> Any:
        """Load a saved model for ``eval``/``generate`` (the main model only); a LoRA adapter
        directory loads its base model with the adapter merged into the weights."""
        from lmctl.kit.adapters import adapter_base_model, is_adapter_dir, load_merged

        if is_adapter_dir(path):
            base = self.load_pretrained(adapter_base_model(path), trust_remote_code=trust_remote_code)
            return load_merged(base, path)
        return self.load_pretrained(path, trust_remote_code=trust_remote_code)

    # --- reporting -------------------------------------------------------------------------------

    def describe_options(self) -> list[dict[str, Any]]:
        """The family's options (name, type, default, help, evaluation) with this instance's defaults."""
        defaults = self.default_options().values()
        return [dict(entry, default=defaults[entry["name"]]) for entry in self.Options.describe()]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "aliases": list(self.aliases),
            "description": self.description,
            "auto_class": self.auto_class,
            "generate": self.generate_kind,
            "scratch_architectures": list(self.scratch_architectures),
            "options": self.describe_options(),
        }


def padded_vocab_size(n: int, multiple: int = 64) -> int:
    """Round a vocabulary size up to a multiple of 64 so the output matmul is fast."""
    return int(math.ceil(n / multiple) * multiple)


def preferred_attention(config: Any) -> str:
    """SDPA where transformers supports it for this model, else eager."""
    model_type = getattr(config, "model_type", "")
    # XLNet has its own attention; openai-gpt has no SDPA path.
    if model_type in {"xlnet", "openai-gpt"}:
        return "eager"
    return "sdpa"
