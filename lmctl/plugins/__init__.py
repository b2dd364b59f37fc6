"""Plugins: the registry (built-in and installed plugins), install/uninstall, ``plugins check``,
the hook reference, and adding plugins' commands to the CLI.

``from lmctl.plugins import get_registry, register_plugin, reset_registry, get_family`` keeps
working (documented for plugin authors); the code lives in :mod:`lmctl.plugins.registry`.
"""

from lmctl.plugins.registry import (
    DEFAULT_PLUGINS,
    FAMILY_CONFIG_KEY,
    HOOK_NAMES,
    PluginInfo,
    Registry,
    family_for_config,
    get_family,
    get_registry,
    normalize_name,
    register_plugin,
    reset_registry,
    resolve_family,
)

__all__ = [
    "DEFAULT_PLUGINS",
    "FAMILY_CONFIG_KEY",
    "HOOK_NAMES",
    "PluginInfo",
    "Registry",
    "family_for_config",
    "get_family",
    "get_registry",
    "normalize_name",
    "register_plugin",
    "reset_registry",
    "resolve_family",
]
