"""``lmctl plugins check``: validate installed plugins before a user relies on them.

For each checked plugin:

* loading: import errors, hook signatures that do not match :mod:`lmctl.hookspecs`, names that
  are taken, commands that would replace built-ins (everything the registry reported);
* functions named like a hook but not marked ``@hookimpl`` (pluggy never calls them);
* start-up cost: importing the plugin must not import torch, transformers, datasets or accelerate;
* each family: train its default tokenizer on a little text, build a tiny model from scratch
  (the ``tiny`` preset of :mod:`lmctl.core.presets`, else the family's ``tiny_config``), collate a
  batch, compute the loss and its gradient, save, check that ``config.json`` resolves back to the
  family, and reload the model for inference;
* each tokenizer trainer: train on a little text and round-trip a sentence;
* each data reader and callback: the documented call signatures; a reader claiming an extension
  that another reader keeps is reported (by the registry, at load).

Problems are one line each, naming the plugin.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lmctl import hookspecs
from lmctl.core.quiet import quiet_libraries
from lmctl.errors import UsageError
from lmctl.plugins.registry import HOOK_NAMES, PluginInfo, Registry, get_registry, normalize_name

HEAVY_MODULES = ("torch", "transformers", "datasets", "accelerate")
CALLBACK_METHODS = ("on_train_begin", "on_log", "on_save", "on_train_end")
CHECK_BLOCK_SIZE = 32  # even, so permutation-LM families accept it
SAMPLE_TEXT = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity.\n"
    "Numbers 0123456789, punctuation (!?;:), and a little non-ASCII: café, naïve, 東京, 😀.\n"
)


@dataclass
class CheckResult:
    """Outcome of checking plugins: ``problems`` and ``passed`` are one line each."""

    checked: list[str] = field(default_factory=list)  # plugin names
    passed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _sample_texts() -> list[str]:
    """A few KB of English prose that ships with Python (pydoc topics), plus the sample above."""
    try:
        import pydoc_data.topics as topics

        prose = "\n\n".join(topics.topics[k].strip() for k in sorted(topics.topics))[:20_000]
    except ImportError:  # pragma: no cover - some distributions strip pydoc_data
        prose = SAMPLE_TEXT * 40
    return [SAMPLE_TEXT, *prose.split("\n\n")]


def _heavy_imports(entry_point: str) -> list[str]:
    """Heavy libraries that importing the plugin's module pulls in (checked in a fresh process)."""
    module = entry_point.split(":", 1)[0].strip()
    code = (
        "import importlib, sys\n"
        f"importlib.import_module({module!r})\n"
        f"print(','.join(m for m in {HEAVY_MODULES!r} if m in sys.modules))\n"
    )
    # The same import path as this process, which is where the plugin was found.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, errors="replace", env=env)
    if result.returncode != 0:
        return []  # an import failure is reported by the loader already
    return [m for m in result.stdout.strip().split(",") if m]


def _unmarked_hooks(plugin: Any) -> list[str]:
    marker = f"{hookspecs.PROJECT_NAME}_impl"
    return [
        name
        for name in HOOK_NAMES
        if callable(getattr(plugin, name, None)) and not hasattr(getattr(plugin, name), marker)
    ]


def _signature_problem(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    try:
        inspect.signature(fn).bind(*args, **kwargs)
    except TypeError as exc:
        return str(exc)
    except ValueError:
        return None  # builtins without a signature: cannot tell
    return None


def check_family(family: Any, registry: Registry) -> list[str]:
    """Smoke-test one family end to end on a tiny model; returns problem descriptions."""
    import torch

    from lmctl.core.hub import read_config_json
    from lmctl.core.presets import PRESETS
    from lmctl.data.tokenizer_trainers import as_transformers_tokenizer
    from lmctl.families.base import Family, LossOutput
    from lmctl.plugins.registry import family_for_config

    problems: list[str] = []
    if not isinstance(family, Family):
        return [f"{family!r} is not a Family"]
    if family.generate_kind not in ("text", "fill-mask"):
        problems.append(f"generate_kind is {family.generate_kind!r}; lmctl generate knows 'text' and 'fill-mask'")
    if not family.scratch_architectures:
        problems.append("declares no scratch_architectures, so it cannot be built with --from-scratch or checked")
        return problems
    architecture = family.scratch_architectures[0]
    trainer = registry.tokenizer_trainers.get(family.tokenizer_kind)
    if trainer is None:
        return [*problems, f"its tokenizer_kind '{family.tokenizer_kind}' is not an installed tokenizer trainer"]
    step = "training its tokenizer"
    try:
        special = family.special_tokens()
        tokenizer = as_transformers_tokenizer(
            trainer(iter(_sample_texts()), vocab_size=320, special_tokens=special), special
        )
        overrides = PRESETS.get(architecture, {}).get("tiny") or dict(family.tiny_config)
        options = family.default_options()
        step = f"building a tiny '{architecture}' model"
        torch.manual_seed(0)
        model = family.build_from_scratch(
            architecture, tokenizer=tokenizer, block_size=CHECK_BLOCK_SIZE, overrides=overrides, options=options
        )
        family.check_block_size(CHECK_BLOCK_SIZE, model)
        step = "collating a batch"
        separator = family.document_separator(tokenizer)
        ids: list[int] = []
        for text in _sample_texts()[:20]:
            ids += separator + tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) < 2 * CHECK_BLOCK_SIZE + family.block_lookahead:
            return [*problems, f"its tokenizer produced only {len(ids)} tokens for {len(SAMPLE_TEXT)} characters"]
        width = CHECK_BLOCK_SIZE + family.block_lookahead  # packed rows, as training reads them
        input_ids = torch.tensor([ids[:width], ids[CHECK_BLOCK_SIZE : CHECK_BLOCK_SIZE + width]])
        collate = family.make_collator(tokenizer, options)
        batch = collate(input_ids, None, torch.Generator().manual_seed(0))
        if not isinstance(batch, dict) or not batch:
            return [*problems, f"its collator returned {type(batch).__name__}, not a dict of model inputs"]
        step = "computing the loss"
        model.train()
        out = family.compute_loss(model, batch, options)
        if not isinstance(out, LossOutput):
            return [*problems, f"compute_loss returned {type(out).__name__}, not a LossOutput"]
        if out.loss.dim() != 0 or not torch.isfinite(out.loss):
            return [*problems, f"compute_loss gave a loss of {out.loss.detach().tolist()!r}, not a finite scalar"]
        if int(out.tokens) <= 0:
            problems.append("compute_loss counted no predicted tokens")
        step = "back-propagating the loss"
        out.loss.backward()
        if not any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters()):
            problems.append("the loss has no gradient with respect to the model's parameters")
        step = "saving the model"
        with tempfile.TemporaryDirectory(prefix="lmctl-check-") as tmp:
            family.save(model, tokenizer, tmp)
            step = "finding the family of the saved model"
            resolved = family_for_config(read_config_json(tmp))
            if resolved is not family:
                problems.append(
                    f"a saved model resolves to the family '{resolved.name}', not '{family.name}': claim its "
                    f"architectures/model_types, or record config.lmctl_family in save()"
                )
            step = "reloading the saved model"
            family.load_for_inference(tmp)
    except Exception as exc:  # noqa: BLE001 - any failure is a problem to report, not a crash
        text = " ".join(str(exc).split())
        problems.append(f"failed while {step}: {type(exc).__name__}: {text}")
    return problems


def check_tokenizer_trainer(train_fn: Callable[..., Any]) -> list[str]:
    problem = _signature_problem(train_fn, ([],), {"vocab_size": 320, "special_tokens": {}})
    if problem:
        return [f"its train function does not accept (texts, *, vocab_size, special_tokens): {problem}"]
    try:
        from tokenizers import Tokenizer

        special = {"eos_token": "<|endoftext|>", "unk_token": "<unk>", "pad_token": "<pad>"}
        tokenizer = train_fn(iter(_sample_texts()), vocab_size=320, special_tokens=special)
        if not isinstance(tokenizer, Tokenizer):
            return [f"its train function returned {type(tokenizer).__name__}, not a tokenizers.Tokenizer"]
        ids = tokenizer.encode("It was the best of times.").ids
        if not ids:
            return ["the trained tokenizer encodes a sentence to no tokens"]
        missing = [t for t in dict.fromkeys(special.values()) if tokenizer.token_to_id(t) is None]
        if missing:
            return [f"the trained tokenizer lacks the special tokens it was given: {', '.join(missing)}"]
    except Exception as exc:  # noqa: BLE001
        return [f"training failed: {type(exc).__name__}: {' '.join(str(exc).split())}"]
    return []


def check_data_reader(reader: Any) -> list[str]:
    problems = []
    bad = [e for e in reader.extensions if not e.startswith(".") or len(e) < 2]
    if bad:
        problems.append(f"extensions must look like '.txt', got {bad}")
    problem = _signature_problem(
        reader.read, ("data.txt",), {"text_column": "text", "encoding_errors": "strict", "document_split": "blank-lines"}
    )
    if problem:
        problems.append(f"its read function does not accept (path, *, text_column, encoding_errors, document_split): {problem}")
    return problems


def check_callback(callback: Any) -> list[str]:
    methods = [m for m in CALLBACK_METHODS if callable(getattr(callback, m, None))]
    if not methods:
        return [f"{type(callback).__name__} has none of the callback methods {', '.join(CALLBACK_METHODS)}"]
    problems = []
    for name in methods:
        problem = _signature_problem(getattr(callback, name), ({},), {})
        if problem:
            problems.append(f"{type(callback).__name__}.{name} does not take one dict argument: {problem}")
    return problems


def _selected(registry: Registry, names: Sequence[str], include_builtin: bool) -> tuple[list[PluginInfo], list[str]]:
    from lmctl.plugins.registry import _entry_points, entry_point_distribution

    wanted = {normalize_name(n) for n in names}
    infos, seen = [], set()
    for info in registry.plugins.values():
        keys = {normalize_name(info.name)} | ({normalize_name(info.distribution)} if info.distribution else set())
        if wanted:
            if keys & wanted:
                infos.append(info)
                seen |= keys & wanted
        elif include_builtin or not info.builtin:
            infos.append(info)
    # Plugins that did not load (import errors, bad signatures) are not in registry.plugins.
    failed = []
    for ep in _entry_points():
        dist, _ = entry_point_distribution(ep)
        keys = {normalize_name(ep.name)} | ({normalize_name(dist)} if dist else set())
        if ep.name in registry.plugins:
            continue
        if (not wanted or keys & wanted) and ep.name in registry.problems_by_plugin:
            failed.append(ep.name)
            seen |= keys & wanted
    unknown = [n for n in names if normalize_name(n) not in seen]
    if unknown:
        installed = ", ".join(sorted(i.name for i in registry.plugins.values())) or "none"
        raise UsageError(f"no plugin named {', '.join(unknown)} is loaded (loaded plugins: {installed})")
    return infos, failed


def check_plugins(
    names: Sequence[str] = (),
    *,
    include_builtin: bool = False,
    registry: Registry | None = None,
    progress: Callable[[str], None] | None = None,
) -> CheckResult:
    """Check the named plugins (all installed ones by default; ``include_builtin`` adds built-ins)."""
    registry = registry or get_registry()
    progress = progress or (lambda message: None)
    ensure_commands_attributed(registry)
    quiet_libraries()
    infos, failed = _selected(registry, names, include_builtin)
    result = CheckResult()
    for name in failed:
        result.checked.append(name)
        result.problems += registry.problems_by_plugin.get(name, [])
    for info in infos:
        result.checked.append(info.name)
        before = len(result.problems)

        def problem(message: str, info: PluginInfo = info) -> None:
            result.problems.append(f"plugin '{info.name}': {message}")

        result.problems += registry.problems_by_plugin.get(info.name, [])
        plugin = registry.manager.get_plugin(info.name)
        for hook in _unmarked_hooks(plugin):
            problem(f"{hook}() is not marked with @hookimpl, so lmctl never calls it")
        if not info.hooks:
            problem("implements no lmctl hook")
        if info.entry_point and not info.builtin:
            heavy = _heavy_imports(info.entry_point)
            if heavy:
                problem(
                    f"importing it imports {', '.join(heavy)}, which slows every lmctl command; "
                    "import them inside the functions that use them"
                )
        for family_name in info.families:
            progress(f"checking family '{family_name}' of plugin '{info.name}' (tiny model)")
            for message in check_family(registry.families[family_name], registry):
                problem(f"family '{family_name}' {message}")
        for trainer_name in info.tokenizer_trainers:
            progress(f"checking tokenizer trainer '{trainer_name}' of plugin '{info.name}'")
            for message in check_tokenizer_trainer(registry.tokenizer_trainers[trainer_name]):
                problem(f"tokenizer trainer '{trainer_name}': {message}")
        for reader_name in info.data_readers:
            for message in check_data_reader(registry.data_readers[reader_name]):
                problem(f"data reader '{reader_name}': {message}")
        for callback in _callbacks_of(registry, info):
            for message in check_callback(callback):
                problem(f"callback: {message}")
        if len(result.problems) == before:
            result.passed.append(f"plugin '{info.name}': {summary(info)}")
    return result


def ensure_commands_attributed(registry: Registry) -> None:
    """Learn which commands each plugin adds (and report replacement attempts) without touching
    the root app when ``lmctl.cli.app.main`` has not run (tests, library use): use a scratch app."""
    import typer

    from lmctl.plugins.commands import add_plugin_commands

    if not registry.commands_attributed:
        add_plugin_commands(typer.Typer())


def _callbacks_of(registry: Registry, info: PluginInfo) -> list[Any]:
    """The callbacks one plugin registers (called again on a list, so they are attributed)."""
    from lmctl.plugins.registry import hook_impls

    impl = hook_impls(registry, info.name).get("register_callbacks")
    if impl is None:
        return []
    collected: list[Any] = []

    def register(callback: Any, name: str | None = None) -> None:
        collected.append(callback)

    try:
        impl.function(**{name: register for name in impl.argnames})
    except Exception:  # noqa: BLE001 - already reported when the registry was built
        return []
    return collected


def summary(info: PluginInfo) -> str:
    parts = []
    if info.families:
        parts.append("families " + ", ".join(info.families))
    if info.tokenizer_trainers:
        parts.append("tokenizer trainers " + ", ".join(info.tokenizer_trainers))
    if info.data_readers:
        parts.append("data readers " + ", ".join(info.data_readers))
    if info.commands:
        parts.append("commands " + ", ".join(info.commands))
    if info.callbacks:
        parts.append("callbacks " + ", ".join(info.callbacks))
    return "ok (" + "; ".join(parts) + ")" if parts else "ok"
