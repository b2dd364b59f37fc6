"""The plugin manager: built-in plugins, installed entry points, allow/block lists, the registry.

Built-ins are listed in :data:`DEFAULT_PLUGINS` and registered with the same call as installed
plugins (found through the ``lmctl`` entry-point group).  Environment variables:

* ``LMCTL_LOAD_PLUGINS=a,b``: load only these installed plugins (entry-point or distribution
  names; ``-``, ``_`` and case do not matter); an empty value loads none.  Built-ins always load.
* ``LMCTL_DISABLE_PLUGINS=a,b``: never load these installed plugins.

A plugin that fails to import, implements a hook with a wrong signature, or registers a name that
is taken is skipped with a one-line warning naming it; everything else keeps working.

Hooks are called through pluggy's hook implementations (functions marked with
:data:`lmctl.hookspecs.hookimpl`), one plugin at a time in registration order (built-ins first),
so every registration is attributed to its plugin and a plugin that raises is isolated.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from lmctl import hookspecs
from lmctl.errors import UsageError

DEFAULT_PLUGINS: tuple[str, ...] = (
    "lmctl.families.causal",
    "lmctl.families.masked",
    "lmctl.families.permuted",
    "lmctl.families.electra",
    "lmctl.data.tokenizer_trainers",
    "lmctl.data.readers",
)
"""The built-in plugins, by module name (the name ``lmctl plugins list`` shows)."""


def builtin_plugin_modules() -> list[Any]:
    """The built-in plugin modules, imported here (light modules: no torch at import time)."""
    from lmctl.data import readers, tokenizer_trainers
    from lmctl.families import causal, electra, masked, permuted

    modules = [causal, masked, permuted, electra, tokenizer_trainers, readers]
    assert tuple(m.__name__ for m in modules) == DEFAULT_PLUGINS
    return modules

HOOK_NAMES: tuple[str, ...] = tuple(
    name for name, fn in vars(hookspecs).items() if callable(fn) and hasattr(fn, "lmctl_spec")
)


@dataclass
class PluginInfo:
    """What ``lmctl plugins list`` shows about one plugin."""

    name: str
    builtin: bool
    distribution: str | None = None
    version: str | None = None
    hooks: list[str] = field(default_factory=list)
    families: list[str] = field(default_factory=list)
    tokenizer_trainers: list[str] = field(default_factory=list)
    data_readers: list[str] = field(default_factory=list)
    reader_extensions: dict[str, list[str]] = field(default_factory=dict)  # reader -> extensions it claimed
    callbacks: list[str] = field(default_factory=list)  # callback names (``lmctl train --callback NAME``)
    commands: list[str] = field(default_factory=list)
    entry_point: str | None = None  # "package.module" or "package.module:object" for installed plugins

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "builtin": self.builtin,
            "distribution": self.distribution,
            "version": self.version,
            "hooks": self.hooks,
            "families": self.families,
            "tokenizer_trainers": self.tokenizer_trainers,
            "data_readers": self.data_readers,
            "reader_extensions": self.reader_extensions,
            "callbacks": self.callbacks,
            "commands": self.commands,
            "entry_point": self.entry_point,
        }


@dataclass
class DataReader:
    name: str
    extensions: tuple[str, ...]
    read: Callable[..., Any]
    plugin: str


@dataclass
class Registry:
    """Everything the plugins registered, plus what went wrong while loading them."""

    manager: pluggy.PluginManager
    plugins: dict[str, PluginInfo] = field(default_factory=dict)
    families: dict[str, Any] = field(default_factory=dict)  # name -> Family
    family_aliases: dict[str, str] = field(default_factory=dict)  # alias -> name
    family_plugin: dict[str, str] = field(default_factory=dict)  # family name -> plugin name
    tokenizer_trainers: dict[str, Callable[..., Any]] = field(default_factory=dict)
    data_readers: dict[str, DataReader] = field(default_factory=dict)
    callbacks: dict[str, Any] = field(default_factory=dict)  # name -> callback object
    callback_plugin: dict[str, str] = field(default_factory=dict)  # callback name -> plugin name
    problems: list[str] = field(default_factory=list)
    problems_by_plugin: dict[str, list[str]] = field(default_factory=dict)
    commands_attributed: bool = False  # set once register_commands ran (PluginInfo.commands filled)

    def warn(self, message: str, plugin: str | None = None) -> None:
        """Report a plugin problem in one line on stderr (and remember it for ``plugins check``)."""
        # One line per problem, whatever the exception text looked like.
        message = " ".join(str(message).split())
        self.problems.append(message)
        if plugin is not None:
            self.problems_by_plugin.setdefault(plugin, []).append(message)
        if not os.environ.get("LMCTL_QUIET_PLUGIN_WARNINGS"):
            sys.stderr.write(f"warning: {message}\n")


_REGISTRY: Registry | None = None


def normalize_name(name: str) -> str:
    """Compare plugin and distribution names the way pip does (PEP 503): ``LMCTL_Fim`` == ``lmctl-fim``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _env_list(name: str) -> list[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


def _entry_points() -> list[Any]:
    """Installed plugins: the entry points of the ``lmctl`` group (tests monkeypatch this)."""
    from importlib.metadata import entry_points

    return list(entry_points(group=hookspecs.PROJECT_NAME))


def entry_point_distribution(ep: Any) -> tuple[str | None, str | None]:
    """(distribution name, version) of an entry point, or (None, None) when unknown."""
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    try:
        return dist.metadata["Name"], dist.version
    except Exception:  # noqa: BLE001 - damaged METADATA must not break listing
        return None, None


def _check_signatures(plugin: Any, plugin_name: str) -> str | None:
    """Name the first hook implementation whose arguments do not match its spec, if any.

    pluggy would refuse it too; this gives the plugin author a clearer line.  Only functions
    marked with ``@hookimpl`` count: pluggy ignores the others.
    """
    for hook_name in HOOK_NAMES:
        impl = getattr(plugin, hook_name, None)
        if impl is None or not callable(impl) or not hasattr(impl, f"{hookspecs.PROJECT_NAME}_impl"):
            continue
        spec_args = list(inspect.signature(getattr(hookspecs, hook_name)).parameters)
        try:
            params = inspect.signature(impl).parameters.values()
        except (TypeError, ValueError):
            return f"hook {hook_name}() has no inspectable signature"
        impl_args = [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        extra = [a for a in impl_args if a not in spec_args]
        if extra:
            return (
                f"hook {hook_name}() takes unknown argument(s) {', '.join(extra)}; "
                f"the spec is {hook_name}({', '.join(spec_args)})"
            )
    return None


def hook_impls(registry: Registry, plugin_name: str) -> dict[str, Any]:
    """The pluggy hook implementations (``HookImpl``) of one plugin, by hook name."""
    pm = registry.manager
    plugin = pm.get_plugin(plugin_name)
    if plugin is None:
        return {}
    found: dict[str, Any] = {}
    for caller in pm.get_hookcallers(plugin) or []:
        for impl in caller.get_hookimpls():
            if impl.plugin is plugin:
                found[caller.name] = impl
    return {name: found[name] for name in HOOK_NAMES if name in found}


def build_registry() -> Registry:
    """Create the plugin manager, register built-in and installed plugins, and call their hooks."""
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    registry = Registry(manager=pm)

    for module in builtin_plugin_modules():
        module_name = module.__name__
        pm.register(module, name=module_name)
        registry.plugins[module_name] = PluginInfo(name=module_name, builtin=True, distribution="lmctl", version=_lmctl_version())

    allow = _env_list("LMCTL_LOAD_PLUGINS")
    allowed = None if allow is None else {normalize_name(n) for n in allow}
    blocked = {normalize_name(n) for n in _env_list("LMCTL_DISABLE_PLUGINS") or []}
    for ep in _entry_points():
        dist_name, dist_version = entry_point_distribution(ep)
        names = {normalize_name(n) for n in (ep.name, dist_name) if n}
        if names & blocked:
            continue
        if allowed is not None and not names & allowed:
            continue
        label = f"plugin '{ep.name}'" + (f" ({dist_name})" if dist_name else "")
        if ep.name in registry.plugins:
            registry.warn(f"{label} skipped: a plugin of that name is already loaded", ep.name)
            continue
        try:
            plugin = ep.load()
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a broken plugin must not break lmctl
            registry.warn(f"{label} failed to load and was skipped: {type(exc).__name__}: {exc}", ep.name)
            continue
        problem = _check_signatures(plugin, ep.name)
        if problem is None:
            try:
                pm.register(plugin, name=ep.name)
                pm.check_pending()
            except Exception as exc:  # noqa: BLE001 - pluggy validation errors
                if pm.is_registered(plugin):
                    pm.unregister(plugin)
                problem = str(exc).splitlines()[0]
        if problem is not None:
            registry.warn(f"{label} skipped: {problem}", ep.name)
            continue
        registry.plugins[ep.name] = PluginInfo(
            name=ep.name, builtin=False, distribution=dist_name, version=dist_version, entry_point=ep.value
        )

    for info in registry.plugins.values():
        info.hooks = list(hook_impls(registry, info.name))
    _collect(registry)
    return registry


def _lmctl_version() -> str:
    from lmctl import __version__

    return __version__


def call_hook_per_plugin(registry: Registry, hook_name: str, make_argument: Callable[[PluginInfo], Any]) -> list[PluginInfo]:
    """Call one hook plugin by plugin so each registration is attributed (and failures isolated).

    ``make_argument(info)`` builds the hook's single argument for that plugin.  Returns the
    plugins whose implementation raised (already reported with a one-line warning).
    """
    failed = []
    for info in list(registry.plugins.values()):
        impl = hook_impls(registry, info.name).get(hook_name)
        if impl is None:
            continue
        # An implementation may accept fewer arguments than the spec (pluggy's rule).
        kwargs = {name: make_argument(info) for name in impl.argnames}
        try:
            impl.function(**kwargs)
        except Exception as exc:  # noqa: BLE001 - isolate the broken plugin
            registry.warn(f"plugin '{info.name}' failed in {hook_name}(): {type(exc).__name__}: {exc}", info.name)
            failed.append(info)
    return failed


def _collect(registry: Registry) -> None:
    from lmctl.families.base import Family

    def family_register(info: PluginInfo) -> Callable[[Any], None]:
        def register(family: Any) -> None:
            if isinstance(family, type):
                family = family()
            if not isinstance(family, Family) or not family.name:
                registry.warn(
                    f"plugin '{info.name}' registered {family!r}, which is not a named lmctl Family; skipped", info.name
                )
                return
            taken = [n for n in (family.name, *family.aliases) if n in registry.families or n in registry.family_aliases]
            if taken:
                owner = registry.family_plugin.get(registry.family_aliases.get(taken[0], taken[0]), "?")
                registry.warn(
                    f"plugin '{info.name}' registers family '{taken[0]}', which plugin '{owner}' already provides; skipped",
                    info.name,
                )
                return
            registry.families[family.name] = family
            registry.family_plugin[family.name] = info.name
            for alias in family.aliases:
                registry.family_aliases[alias] = family.name
            info.families.append(family.name)

        return register

    def trainer_register(info: PluginInfo) -> Callable[[str, Callable[..., Any]], None]:
        def register(name: str, train_fn: Callable[..., Any]) -> None:
            if name in registry.tokenizer_trainers:
                registry.warn(f"plugin '{info.name}' registers tokenizer trainer '{name}', which exists; skipped", info.name)
                return
            registry.tokenizer_trainers[name] = train_fn
            info.tokenizer_trainers.append(name)

        return register

    def reader_register(info: PluginInfo) -> Callable[[str, tuple[str, ...], Callable[..., Any]], None]:
        def register(name: str, extensions: tuple[str, ...], read_fn: Callable[..., Any]) -> None:
            if name in registry.data_readers:
                registry.warn(f"plugin '{info.name}' registers data reader '{name}', which exists; skipped", info.name)
                return
            exts = tuple(e if e.startswith(".") else f".{e}" for e in extensions)
            # The first reader of an extension keeps it (built-ins first): say so, naming both, so a
            # plugin's reader never loses its files silently.  It still reads them through --format.
            for ext in exts:
                owner = next((r for r in registry.data_readers.values() if ext.lower() in (e.lower() for e in r.extensions)), None)
                if owner is not None:
                    registry.warn(
                        f"plugin '{info.name}' registers data reader '{name}' for {ext} files, which data reader "
                        f"'{owner.name}' of plugin '{owner.plugin}' already reads; {ext} files stay with '{owner.name}' "
                        f"(use `--format {ext}={name}` to read them with '{name}')",
                        info.name,
                    )
            registry.data_readers[name] = DataReader(name, exts, read_fn, info.name)
            info.data_readers.append(name)
            info.reader_extensions[name] = list(exts)

        return register

    def callback_register(info: PluginInfo) -> Callable[..., None]:
        def register(callback: Any, name: str | None = None) -> None:
            if name is None:
                attribute = getattr(callback, "name", None)
                name = attribute if isinstance(attribute, str) and attribute else info.name
                if name in registry.callbacks and name == info.name:  # a plugin's second unnamed callback
                    name = f"{info.name}-{type(callback).__name__.lower()}"
            if not CALLBACK_NAME.fullmatch(name):
                registry.warn(
                    f"plugin '{info.name}' registers a callback named {name!r}; names are letters, digits, '-', '_' "
                    "and '.'; skipped",
                    info.name,
                )
                return
            if name in registry.callbacks:
                owner = registry.callback_plugin.get(name, "?")
                registry.warn(
                    f"plugin '{info.name}' registers callback '{name}', which plugin '{owner}' already provides; "
                    "skipped (pass name=... to register())",
                    info.name,
                )
                return
            registry.callbacks[name] = callback
            registry.callback_plugin[name] = info.name
            info.callbacks.append(name)

        return register

    call_hook_per_plugin(registry, "register_families", family_register)
    call_hook_per_plugin(registry, "register_tokenizer_trainers", trainer_register)
    call_hook_per_plugin(registry, "register_data_readers", reader_register)
    call_hook_per_plugin(registry, "register_callbacks", callback_register)


CALLBACK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def select_callbacks(names: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """The callbacks a run asked for by name (``--callback NAME``), in that order; an unknown
    name is refused with one line listing the installed ones."""
    registry = get_registry()
    chosen: dict[str, Any] = {}
    for name in names:
        if name not in registry.callbacks:
            known = ", ".join(sorted(registry.callbacks)) or "none are installed"
            raise UsageError(f"unknown --callback '{name}'; installed callbacks: {known}")
        chosen[name] = registry.callbacks[name]
    return chosen


def get_registry() -> Registry:
    """The process-wide registry (built on first use)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = build_registry()
    return _REGISTRY


def reset_registry() -> None:
    """Forget the registry (tests use this after changing environment variables or plugins)."""
    global _REGISTRY
    _REGISTRY = None


def register_plugin(plugin: Any, name: str | None = None) -> None:
    """Register a plugin object at run time (tests, notebooks); rebuilds the registry views."""
    registry = get_registry()
    name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
    problem = _check_signatures(plugin, name)
    if problem:
        raise UsageError(f"plugin '{name}': {problem}")
    if name in registry.plugins or registry.manager.get_plugin(name) is not None:
        raise UsageError(f"plugin '{name}' is already registered")
    try:
        registry.manager.register(plugin, name=name)
        registry.manager.check_pending()
    except Exception as exc:  # noqa: BLE001 - pluggy validation errors, as one line
        if registry.manager.is_registered(plugin):
            registry.manager.unregister(plugin)
        raise UsageError(f"plugin '{name}': {str(exc).splitlines()[0]}") from None
    registry.plugins[name] = PluginInfo(name=name, builtin=False)
    registry.plugins[name].hooks = list(hook_impls(registry, name))
    # Re-collect from scratch so the new plugin's registrations are attributed to it.
    for info in registry.plugins.values():
        info.families, info.tokenizer_trainers, info.data_readers, info.callbacks = [], [], [], []
        info.reader_extensions = {}
    registry.families.clear()
    registry.family_aliases.clear()
    registry.family_plugin.clear()
    registry.tokenizer_trainers.clear()
    registry.data_readers.clear()
    registry.callbacks.clear()
    registry.callback_plugin.clear()
    _collect(registry)


# --- family lookup --------------------------------------------------------------------------------


DEFAULT_FAMILY = "causal"
"""The family used when neither ``--family`` nor a model says which (prepare with a tokenizer trainer)."""


def default_family() -> Any:
    return get_family(DEFAULT_FAMILY)


def get_family(name: str) -> Any:
    """A family by name or alias; a clear usage error listing the choices otherwise."""
    registry = get_registry()
    key = registry.family_aliases.get(name, name)
    if key not in registry.families:
        choices = ", ".join(sorted(registry.families))
        raise UsageError(f"unknown family '{name}'; installed families: {choices}")
    return registry.families[key]


FAMILY_CONFIG_KEY = "lmctl_family"
"""A family may record its name under this key in ``config.json`` (transformers keeps unknown
config keys), so ``--model DIR`` finds it even when another family claims the same model_type,
e.g. a plugin family that trains standard GPT-2 models with its own objective."""


def family_for_config(config: dict[str, Any]) -> Any:
    """Pick the family of a saved model from its config.json.

    Order: the family recorded under ``lmctl_family`` (when installed), then ``architectures``,
    then ``model_type``, then architecture-name suffixes.
    """
    registry = get_registry()
    families = list(registry.families.values())
    recorded = config.get(FAMILY_CONFIG_KEY)
    if isinstance(recorded, str) and recorded:
        key = registry.family_aliases.get(recorded, recorded)
        if key in registry.families:
            return registry.families[key]
        sys.stderr.write(
            f"warning: the model was trained with the family '{recorded}', which is not installed "
            "(install the plugin that provides it); guessing the family from its model type\n"
        )
    archs = config.get("architectures") or []
    for arch in archs:
        for family in families:
            if arch in family.architectures:
                return family
    model_type = config.get("model_type")
    for family in families:
        if model_type in family.model_types:
            return family
    for arch in archs:
        for family in families:
            if any(arch.endswith(suffix) for suffix in family.architecture_suffixes):
                return family
    raise UsageError(
        f"no installed family handles model_type '{model_type}' (architectures {archs}); "
        "pass --family, or install a plugin that provides one"
    )


def family_for_architecture(architecture: str) -> Any:
    """The family that builds ``architecture`` (a model_type such as gpt2) from scratch."""
    registry = get_registry()
    families = list(registry.families.values())
    # A family whose default architecture this is wins (electra -> the ELECTRA family, not masked).
    for family in families:
        if family.scratch_architectures[:1] == (architecture,):
            return family
    for family in families:
        if architecture in family.scratch_architectures:
            return family
    known = sorted({a for f in registry.families.values() for a in f.scratch_architectures})
    raise UsageError(f"unknown architecture '{architecture}' for --from-scratch; known: {', '.join(known)}")


def resolve_family(model: str, *, family: str | None = None, from_scratch: bool = False, trust_remote_code: bool = False) -> Any:
    """The family for ``--model`` (and optional ``--family``): explicit, from scratch, or from config.json."""
    if family:
        return get_family(family)
    if from_scratch:
        return family_for_architecture(model)
    from lmctl.core.hub import load_config_dict
    from lmctl.kit.adapters import model_source

    # A LoRA adapter directory has no config.json: its base model's says what it is.
    return family_for_config(load_config_dict(model_source(model), trust_remote_code=trust_remote_code))
